"""Crash tests: 100 Mango calls through real processes while parts of the system die.

Each test plays a burst of 100 answered calls (ringing, answer, summary) from a PBX that
retries what was not acknowledged, through gunicorn, a Celery worker, a dispatcher and beat,
to the live Bitrix24 fake; something is killed in the middle; the test then waits until
everything has settled and checks that every call was registered and finished exactly once
in Bitrix24, apart from the commands that were in flight at a crash (the documented
at-least-once window), which it measures and prints.

What recovery waits for today (docs/operations.md, "Crash behaviour"): a webhook whose queue
message died with a worker or with Redis is re-queued by the sweeper once it is
INBOX_STUCK_AFTER_S overdue (60 s in production, 15 s here); a command a dead dispatcher had
claimed goes back to the queue when its 15 s lease expires.
"""

import http.client
import json
import time

import pytest

from bitrixapp import outbox
from bitrixapp.models import B24Command
from telephony.models import PbxEvent
from tests.crash.conftest import DISPATCHER_CONCURRENCY, Deployment
from tests.crash.ledger import all_done, progress, verify
from tests.crash.pbx import HEADERS, Tally
from tests.crash.procs import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.crash]

CALLS = 100
BURST_S = 90  # the PBX gives up on a notification after this long
# After the burst: the sweeper's threshold for events left `received`, a few sweeps
# (every 5 s here), the dispatcher's recovery of a dead run's commands and the sending.
SETTLE_S = 110
# The at-least-once window is one request per dispatcher process: a batch of at most this.
WINDOW_BOUND = outbox.BATCH_LIMIT * DISPATCHER_CONCURRENCY
BITRIX24_LATENCY_S = 0.2  # the fake answers after this: requests are in flight a while


def _settle_and_verify(
    d: Deployment, entries: list[str], tally: Tally, label: str
) -> dict[tuple[str, str], int]:
    assert not tally.undelivered, f"the PBX gave up on {len(tally.undelivered)} notification(s)"
    try:
        wait_for(lambda: all_done(d.connection, entries), SETTLE_S, "every call to settle")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {progress(d.connection)}\n{d.logs()}") from exc
    resent = verify(d.fake, d.remote, d.connection, entries, d.window, WINDOW_BOUND)
    print(
        f"\n[{label}] {len(entries)} calls, {tally.attempts} POSTs for {3 * len(entries)} "
        f"notifications ({dict(tally.answers)}); in flight at {d.window.crashes} crash(es): "
        f"{len(d.window.keys)} command(s); executed twice in Bitrix24 (at-least-once window): "
        f"{sum(resent.values())} {sorted(resent)} (bound {WINDOW_BOUND} per crash)"
    )
    return resent


def _processed() -> int:
    return PbxEvent.objects.filter(state=PbxEvent.State.PROCESSED).count()


def _sending() -> bool:
    return B24Command.objects.filter(state=B24Command.State.SENDING).exists()


def test_kill_9_of_the_worker_and_the_dispatcher_during_a_burst(deploy):
    d = deploy()
    d.fake.delay = BITRIX24_LATENCY_S
    pbx = d.pbx("kill")
    entries = pbx.start_burst(CALLS, deadline_s=BURST_S)

    wait_for(lambda: _processed() >= 30, 60, "the worker to be busy with the burst")
    d.worker.kill9()  # call events half-processed: their transactions die with it
    d.worker.restart()
    wait_for(_sending, 60, "the dispatcher to have a request in flight")
    d.dispatcher.kill9()  # between sending a request and recording its answer
    d.window.snapshot()
    d.dispatcher.restart()

    tally = pbx.wait(BURST_S + 15)
    _settle_and_verify(d, entries, tally, "kill -9 worker + dispatcher")


def test_redis_restart_with_data_lost_during_a_burst(deploy):
    d = deploy(private_redis=True)
    d.fake.delay = BITRIX24_LATENCY_S
    pbx = d.pbx("redis")
    entries = pbx.start_burst(CALLS, deadline_s=BURST_S)

    wait_for(lambda: _processed() >= 30, 60, "the burst to be under way")
    d.redis.client().set("crash:marker", 1)
    d.redis.kill9()  # queued tasks, kick flags, the rate limiter's bucket: all gone
    time.sleep(2)  # webhooks keep arriving meanwhile: stored, their enqueue fails
    d.redis.restart()
    assert d.redis.client().get("crash:marker") is None  # it came back empty

    tally = pbx.wait(BURST_S + 15)
    resent = _settle_and_verify(d, entries, tally, "Redis lost")
    # No process died: every answer of Bitrix24 was recorded, nothing went twice.
    assert resent == {}


def test_postgres_refusing_connections_for_10_s_during_a_burst(deploy):
    d = deploy(pg_proxy=True)
    d.fake.delay = BITRIX24_LATENCY_S
    pbx = d.pbx("pg")
    entries = pbx.start_burst(CALLS, deadline_s=BURST_S)

    wait_for(lambda: pbx.tally.acknowledged >= 90, 60, "the burst to be under way")
    d.pg.outage(10)  # open connections cut, new ones refused for 10 s
    d.window.snapshot()
    wait_for(lambda: not d.pg.refusing, 15, "the outage to end")

    tally = pbx.wait(BURST_S + 15)
    refused = {answer: n for answer, n in tally.answers.items() if not answer.startswith("2")}
    # The PBX was told to come back (503 + Retry-After), never answered 500.
    assert refused and set(refused) == {"503 unavailable"}, tally.answers
    assert set(tally.retry_after) == {"5"}
    _settle_and_verify(d, entries, tally, "PostgreSQL refused 10 s")


def test_webhook_gets_503_with_retry_after_while_the_database_is_down(deploy):
    d = deploy(pg_proxy=True, workers=False)
    notification = d.pbx("one").call("crash-one")[0]
    d.pg.outage(30)
    status, body, headers = _post(d, notification.path, notification.body)
    assert status == 503
    assert body == {
        "error": "unavailable",
        "detail": "the database is unreachable; nothing was stored, send it again later",
    }
    assert headers["Retry-After"] == "5"
    assert not PbxEvent.objects.exists()

    d.pg.outage(0)  # back: the PBX's retry is stored
    status, body, _ = _post(d, notification.path, notification.body)
    assert (status, body["status"]) == (200, "accepted")
    assert PbxEvent.objects.count() == 1


def _post(d: Deployment, path: str, body: bytes) -> tuple[int, dict, dict]:
    conn = http.client.HTTPConnection(d.web.url.removeprefix("http://"), timeout=10)
    try:
        conn.request("POST", d.hook_path + path, body, HEADERS)
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read()), dict(reply.getheaders())
    finally:
        conn.close()
