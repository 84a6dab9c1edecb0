"""events: POST /bitrix/events/ throughput and latency under gunicorn on this machine.

Setup: an installed portal row with a known application_token; gunicorn serving
`bitrixapp.wsgi` with the bench settings plus production switches (DEBUG=0, a SECRET_KEY,
ALLOWED_HOSTS; requests carry `X-Forwarded-Proto: https` as behind the TLS proxy, so the SSL
redirect is satisfied). No Celery worker runs: what is queued stays in Redis db 14 and is
flushed afterwards. Every accepted event is a BitrixEvent INSERT + COMMIT in PostgreSQL and
a kick of its portal's lane (a cache add in Redis; a Celery publish only when no drain task
is on its way: one per run here, since nothing consumes it), on the same 2 cores as the
load generator.

Method: a form-encoded ONEXTERNALCALLBACKSTART event (event, event_handler_id, ts,
data[PHONE_NUMBER], data[LINE_NUMBER], auth[domain], auth[client_endpoint], auth[member_id],
auth[application_token]) sent closed-loop by `wrk` (installed with apt-get if missing; a
Python thread generator otherwise) over 8 connections: enough to saturate (more only
lengthens the queue). The reported figures are gunicorn as shipped (bitrixapp/gunicorn_conf.py),
measured for 20 s after a 2 s warm-up. For comparison the sync worker configurations in
PROBES get a 2 s warm-up and a 5 s probe each (notes only). All answers must be 200: wrk's
non-2xx count must be 0 and exactly one BitrixEvent row must exist per completed request
(up to the requests still in flight when wrk stops).

Target (issue 11, raised): >= 800 req/s with p99 <= 30 ms. No fixed-rate run: wrk2 is not available.
"""

import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlencode

import redis
from django.conf import settings

from bench.env import REDIS_URL, reset_state, subprocess_env
from bench.loadgen import LoadResult, find_wrk, run_python, run_wrk, save_raw
from bench.portals import installed_portal
from bench.procs import SHIPPED_GUNICORN, SHIPPED_GUNICORN_TEXT, Gunicorn
from bench.report import BenchResult
from bitrixapp.models import BitrixEvent

NAME = "events"
TITLE = "POST /bitrix/events/ under gunicorn"
MEMBER_ID, APP_TOKEN = "bench-events", "bench-application-token"
CONNECTIONS = 8
WARMUP_S, PROBE_S, MEASURE_S = 2, 5, 20
TARGET_RPS, TARGET_P99_MS = 800.0, 30.0

# Not shipped: sync workers (one request at a time per process, no keep-alive), for comparison.
PROBES: dict[str, list[str]] = {
    "sync, 2 workers": ["--workers", "2"],
    "sync, 3 workers": ["--workers", "3"],
}
SHIPPED = "as shipped"


@dataclass
class Measured:
    config: str
    load: LoadResult
    rows: int  # BitrixEvent rows the run created
    tasks: int  # Celery messages the run queued

    @property
    def all_200(self) -> bool:
        load = self.load
        in_flight = CONNECTIONS
        return (
            load.non_2xx == 0
            and load.errors == 0
            and load.requests <= self.rows <= load.requests + in_flight
        )


def event_body() -> str:
    return urlencode(
        {
            "event": "ONEXTERNALCALLBACKSTART",
            "event_handler_id": "17",
            "ts": str(int(time.time())),
            "data[PHONE_NUMBER]": "+79991234567",
            "data[LINE_NUMBER]": "1",
            "auth[domain]": f"{MEMBER_ID}.bitrix24.ru",
            "auth[client_endpoint]": f"https://{MEMBER_ID}.bitrix24.ru/rest/",
            "auth[member_id]": MEMBER_ID,
            "auth[application_token]": APP_TOKEN,
        }
    )


def run() -> BenchResult:
    reset_state()
    installed_portal(MEMBER_ID, APP_TOKEN)
    wrk = find_wrk()
    env = subprocess_env(
        DEBUG="0", SECRET_KEY=secrets.token_urlsafe(50), ALLOWED_HOSTS="127.0.0.1,localhost"
    )
    probes = [_measure(wrk, name, options, env, PROBE_S) for name, options in PROBES.items()]
    final = _measure(wrk, SHIPPED, SHIPPED_GUNICORN, env, MEASURE_S)
    if final.load.raw:
        save_raw("events-final", final.load.raw)
    return _result(final, probes, wrk)


def _measure(
    wrk: str | None, config: str, options: list[str], env: dict[str, str], seconds: int
) -> Measured:
    tag = config.split(",")[0].replace(" ", "-") + "".join(c for c in config if c.isdigit())
    with Gunicorn(f"events-{tag}", options, env) as server:
        url = f"{server.url}/bitrix/events/"
        _check_accepted(url)
        _load(wrk, url, WARMUP_S)
        time.sleep(0.2)  # the warm-up's last requests land before counting
        rows_before, tasks_before = BitrixEvent.objects.count(), _queued_tasks()
        load = _load(wrk, url, seconds)
        time.sleep(0.2)  # requests in flight when the generator stopped finish
        measured = Measured(
            config,
            load,
            rows=BitrixEvent.objects.count() - rows_before,
            tasks=_queued_tasks() - tasks_before,
        )
    print(f"  {_summary(measured)} ({seconds} s, {load.tool})", flush=True)
    return measured


def _check_accepted(url: str) -> None:
    """One event by hand first: a misconfigured server must not be benchmarked."""
    request = urllib.request.Request(
        url,
        data=event_body().encode(),
        headers={"X-Forwarded-Proto": "https"},  # urllib sets the form Content-Type
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            status, body = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    if status != 200 or b"accepted" not in body:
        raise RuntimeError(f"POST /bitrix/events/ answered {status}: {body[:500]!r}")


def _load(wrk: str | None, url: str, seconds: int) -> LoadResult:
    if wrk:
        return run_wrk(wrk, url, event_body(), CONNECTIONS, seconds)
    return run_python(url, event_body(), CONNECTIONS, seconds)


def _queued_tasks() -> int:
    """Messages waiting in the Celery queue the event tasks go to (nobody consumes them)."""
    client = redis.Redis.from_url(REDIS_URL)
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    return sum(
        int(client.llen(key))
        for key in client.scan_iter(f"{queue}*")
        if client.type(key) == b"list"
    )


def _summary(m: Measured) -> str:
    load = m.load
    return f"{m.config}: {load.rps:.0f} req/s, p50 {load.p50_ms:.1f} ms, p99 {load.p99_ms:.1f} ms"


def _result(final: Measured, probes: list[Measured], wrk: str | None) -> BenchResult:
    load = final.load
    result = BenchResult(NAME, TITLE)
    result.add(
        "throughput", f"{load.rps:.0f} req/s", f">= {TARGET_RPS:.0f} req/s", load.rps >= TARGET_RPS
    )
    result.add(
        "p99 latency",
        f"{load.p99_ms:.1f} ms",
        f"<= {TARGET_P99_MS:.0f} ms",
        load.p99_ms <= TARGET_P99_MS,
    )
    result.add("p50 latency", f"{load.p50_ms:.1f} ms")
    answers = (
        f"{load.requests} requests, {load.non_2xx} non-2xx, {load.errors} socket errors, "
        f"{final.rows} events stored"
    )
    result.add("all answers 200", answers, "all 200", final.all_200)
    result.add("gunicorn", SHIPPED_GUNICORN_TEXT)
    tool = "wrk -t1 (closed loop)" if wrk else "Python threads with keep-alive (wrk unavailable)"
    result.notes += [
        f"Load: {tool}, {CONNECTIONS} connections, {MEASURE_S} s after a {WARMUP_S} s warm-up; "
        f"{final.tasks} Celery tasks were queued for {final.rows} stored events.",
        f"Not shipped, for comparison ({PROBE_S} s probes): "
        + "; ".join(_summary(m) for m in probes)
        + ".",
        "gunicorn runs with DEBUG=0 (production settings) and `X-Forwarded-Proto: https`; the "
        "load generator, gunicorn, PostgreSQL and Redis share the machine's cores.",
    ]
    return result
