"""Shared fixtures: the live Bitrix24 fake, portals wired to it, real Celery worker processes."""

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.utils import translation

from bitrixapp import outbox
from bitrixapp.models import B24Command, Portal
from tests.fakes.bitrix24 import FakeBitrix24, FakePortal
from tests.portals import connected_portal

ROOT = Path(__file__).resolve().parent.parent
QUEUES = "bitrix,calls,sms,recordings,default"


@pytest.fixture(scope="session")
def django_db_modify_db_settings() -> None:
    """A test database of this run's own: a concurrent run or a leftover session on a shared
    name would make creating or dropping it fail."""
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = f"test_bridge_{os.getpid()}"


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeBitrix24]:
    with FakeBitrix24(
        client_id=settings.BITRIX24_CLIENT_ID, client_secret=settings.BITRIX24_CLIENT_SECRET
    ) as server:
        yield server


@pytest.fixture
def fake(fake_server: FakeBitrix24, settings) -> FakeBitrix24:
    """The fake, reset for this test, with the app's OAuth URL pointing at it."""
    fake_server.reset()
    fake_server.enforce_rate_limit = True
    settings.BITRIX24_OAUTH_URL = fake_server.oauth_url
    return fake_server


@pytest.fixture(autouse=True)
def _clean_redis() -> None:
    """Drop limiter buckets and cache keys between tests (kombu's own keys stay)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = list(client.scan_iter("b24:*")) + list(client.scan_iter(":1:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture(autouse=True)
def _default_language() -> Iterator[None]:
    """Each test starts in the default language: a page request leaves the language its
    middleware chose active on the thread (Russian for a Russian admin), and a later test
    reading messages outside a request would see that one."""
    translation.activate(settings.LANGUAGE_CODE)
    yield
    translation.activate(settings.LANGUAGE_CODE)


_portal_seq = iter(range(1, 10**6))


@pytest.fixture
def make_portal(fake: FakeBitrix24) -> Callable[..., tuple[Portal, FakePortal]]:
    """A portal installed in our database and known to the fake, with matching tokens."""

    def make(plan: str = "standard", **fields: object) -> tuple[Portal, FakePortal]:
        return connected_portal(fake, f"member{next(_portal_seq)}", plan, **fields)

    return make


def drain(portal: Portal, timeout: float = 30.0) -> None:
    """Run the dispatcher in this process until the portal has nothing ready to send.

    The dispatcher does not wait for bucket slots itself (a worker gets a timed run for
    that); here the pause between runs stands in for those timed runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outbox.dispatch(portal.pk)
        ready = B24Command.objects.filter(
            portal_id=portal.pk,
            state=B24Command.State.PENDING,
        ).exclude(next_attempt_at__gt=_now())
        if not ready.exists():
            return
        time.sleep(0.05)
    raise AssertionError("dispatcher did not drain the outbox")


def _now():
    from django.utils import timezone

    return timezone.now()


class Worker:
    """A real `celery worker` process on the test database and Redis."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        log_dir: Path,
        concurrency: int = 1,
        beat: bool = False,
    ):
        self.log_path = log_dir / f"worker-{name}.log"
        # -B: this worker also runs beat (the periodic sweepers), with a schedule file of its own.
        beat_args = ["-B", "-s", str(log_dir / f"beat-{name}")] if beat else []
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bitrixapp",
                "worker",
                "-Q",
                QUEUES,
                "-n",
                f"{name}@%h",
                "--concurrency",
                str(concurrency),
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                "INFO",
                *beat_args,
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ready." in self.log_path.read_text():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"worker did not start:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the worker and its pool children: a crash, nothing cleaned up."""
        subprocess.run(["pkill", "-KILL", "-P", str(self.proc.pid)], check=False)
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


@pytest.fixture(scope="session")
def worker_env(django_db_setup, django_db_blocker, fake_server: FakeBitrix24) -> dict[str, str]:
    from django.db import connection

    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "TEST_DATABASE_URL": url,
        "TEST_REDIS_URL": settings.REDIS_URL,
        "BITRIX24_OAUTH_URL": fake_server.oauth_url,
        "PYTHONPATH": str(ROOT),
    }


@pytest.fixture
def start_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start real worker processes for this test; all are stopped afterwards."""
    started: list[Worker] = []

    def start(name: str = "w1", concurrency: int = 1, beat: bool = False, **env: str) -> Worker:
        worker = Worker(
            f"{name}-{len(started)}", {**worker_env, **env}, tmp_path, concurrency, beat
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or predicate}")
