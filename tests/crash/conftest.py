"""A deployment of the app in real processes (gunicorn, worker, dispatcher, beat) on the test
database, wired to the live Bitrix24 fake, optionally behind a PostgreSQL proxy that can play
an outage and on a private Redis that can be killed and restarted empty."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bitrixapp.models import Portal
from telephony.models import PbxConnection, PbxExtension, PbxLine
from tests.crash.ledger import InFlight
from tests.crash.pbx import MangoPbx
from tests.crash.pgproxy import PgProxy
from tests.crash.procs import (
    DISPATCH_QUEUES,
    WORK_QUEUES,
    CeleryBeat,
    CeleryWorker,
    Gunicorn,
    Proc,
    RedisServer,
)
from tests.fakes.bitrix24 import FakeBitrix24, FakePortal

API_KEY, API_SALT = "crash-mango-key", "crash-mango-salt"
LINE = "74951234567"
SWEEP_INTERVAL_S = 5  # beat's sweeps (30 s in production), so recoveries take less waiting
STUCK_AFTER_S = 15  # a stored request left `received` is re-queued after this (60 s in production)
DISPATCHER_CONCURRENCY = 1


@dataclass
class Deployment:
    fake: FakeBitrix24
    remote: FakePortal
    portal: Portal
    connection: PbxConnection
    web: Gunicorn
    worker: CeleryWorker | None = None
    dispatcher: CeleryWorker | None = None
    beat: CeleryBeat | None = None
    redis: RedisServer | None = None
    pg: PgProxy | None = None
    window: InFlight = field(default_factory=InFlight)

    @property
    def hook_path(self) -> str:
        return f"/telephony/hooks/{self.connection.webhook_uuid}/"

    def pbx(self, tag: str) -> MangoPbx:
        return MangoPbx(self.web.url, self.hook_path, API_KEY, API_SALT, tag)

    def logs(self) -> str:
        procs = [self.web, self.worker, self.dispatcher, self.beat]
        return "\n".join(f"--- {p.name}\n{p.log_tail(2500)}" for p in procs if p is not None)


def _mango_connection(portal: Portal, remote: FakePortal) -> PbxConnection:
    remote.add_user(11, NAME="Operator", UF_PHONE_INNER="101")
    connection = PbxConnection.objects.create(
        portal=portal,
        name="Crash office",
        provider="mango",
        credentials={"api_key": API_KEY, "api_salt": API_SALT},
        default_user_id=1,
    )
    PbxExtension.objects.create(connection=connection, extension="101", user_id=11)
    PbxLine.objects.create(connection=connection, number=LINE, line_number=LINE, name="Sales")
    return connection


@pytest.fixture
def deploy(
    transactional_db: None,
    fake: FakeBitrix24,
    make_portal: Callable,
    worker_env: dict[str, str],
    tmp_path: Path,
) -> Iterator[Callable[..., Deployment]]:
    """Start the app's processes; all of them (and the proxy, the private Redis) are stopped
    before the test database is emptied."""
    started: list[Proc] = []
    proxies: list[PgProxy] = []

    def start(
        *, private_redis: bool = False, pg_proxy: bool = False, workers: bool = True
    ) -> Deployment:
        portal, remote = make_portal()
        connection = _mango_connection(portal, remote)
        env = {
            **worker_env,
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "TEST_SWEEP_INTERVAL_S": str(SWEEP_INTERVAL_S),
            "INBOX_STUCK_AFTER_S": str(STUCK_AFTER_S),
        }
        redis_server = pg = None
        if private_redis:
            redis_server = RedisServer(tmp_path)
            started.append(redis_server)
            env["TEST_REDIS_URL"] = redis_server.url()
        if pg_proxy:
            pg = PgProxy()
            proxies.append(pg)
            db = transactional_db_settings()
            env["TEST_DATABASE_URL"] = pg.url(db["USER"], db["NAME"])
        web = Gunicorn(env, tmp_path)
        started.append(web)
        deployment = Deployment(fake, remote, portal, connection, web, redis=redis_server, pg=pg)
        if workers:
            deployment.worker = CeleryWorker("worker", WORK_QUEUES, env, tmp_path, concurrency=2)
            started.append(deployment.worker)
            deployment.dispatcher = CeleryWorker(
                "dispatcher", DISPATCH_QUEUES, env, tmp_path, DISPATCHER_CONCURRENCY
            )
            started.append(deployment.dispatcher)
            deployment.beat = CeleryBeat(env, tmp_path)
            started.append(deployment.beat)
        return deployment

    yield start
    for proc in reversed(started):
        proc.stop()
    for proxy in proxies:
        proxy.close()


def transactional_db_settings() -> dict:
    from django.db import connection

    return connection.settings_dict
