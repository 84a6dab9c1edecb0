"""webhook_ack: how fast gunicorn acknowledges Mango webhooks at 500 events/s for 60 s.

Setup: an installed portal row with one Mango connection (api_key / api_salt); gunicorn
serving `bitrixapp.wsgi` with production switches (DEBUG=0, a SECRET_KEY, ALLOWED_HOSTS;
requests carry `X-Forwarded-Proto: https` as behind the TLS proxy), configured as shipped
(bench.procs.SHIPPED_GUNICORN: threaded, keep-alive, an access log line per request). No
Celery worker runs: the one queued drain task stays in Redis db 14 and is flushed
afterwards. Each accepted webhook is: the connection lookup, the sha256 signature check,
parsing, one PbxEvent INSERT + COMMIT in PostgreSQL and a kick of its lane in Redis (a
cache add; a Celery publish only when no drain task is on its way).

Method: RATE * (WARMUP_S + MEASURE_S) distinct `events/call` Appeared notifications (each its
own entry_id and call_id, current timestamps, signed like Mango: sha256(key + json + salt))
are generated up front, so no request is a duplicate. `bench.openloop` sends them at a fixed
500 requests/s (request i due at start + i/500) over up to CONNECTIONS connections and
measures each latency from the request's *scheduled* time to its answer, so a stall is not
hidden by the generator slowing down (no coordinated omission; wrk is closed-loop and wrk2 is
not available). The first WARMUP_S seconds are not counted. Every answer must be 200 and the
number of stored PbxEvent rows must equal the requests sent.

Target (issue 11, raised): 500 events/s sustained for 60 s with p99 <= 20 ms.
"""

from bench import netstat
from bench.env import flush_redis, reset_state, subprocess_env
from bench.mango import (
    check_accepted,
    hook_path,
    mango_connection,
    new_entry_id,
    ringing_now,
    server_env_extra,
)
from bench.openloop import OpenLoopResult, Request, run_open_loop
from bench.portals import installed_portal
from bench.procs import SHIPPED_GUNICORN, SHIPPED_GUNICORN_TEXT, Gunicorn
from bench.report import BenchResult
from telephony.models import PbxEvent

NAME = "webhook_ack"
TITLE = "Mango webhook acknowledgement at 500 events/s, 60 s"
MEMBER_ID, APP_TOKEN = "bench-webhook-ack", "bench-application-token"
RATE = 500.0
WARMUP_S, MEASURE_S = 2, 60
CONNECTIONS = 16  # the most requests in flight at once; more only if the server stalls
GUNICORN_OPTIONS = SHIPPED_GUNICORN
TARGET_P99_MS = 20.0


def run() -> BenchResult:
    reset_state()
    portal = installed_portal(MEMBER_ID, APP_TOKEN)
    connection = mango_connection(portal, {"101": 11})
    base = hook_path(connection)
    warmup = _requests(base, int(RATE * WARMUP_S), "warm")
    measured = _requests(base, int(RATE * MEASURE_S), "ack")
    with Gunicorn(NAME, GUNICORN_OPTIONS, subprocess_env(**server_env_extra())) as server:
        check_accepted(server.url, base, ringing_now(new_entry_id("check", 0)))
        run_open_loop(server.url, warmup, RATE, CONNECTIONS)
        rows_before, tcp_before = PbxEvent.objects.count(), netstat.snapshot()
        load = run_open_loop(server.url, measured, RATE, CONNECTIONS)
        stored, tcp = (
            PbxEvent.objects.count() - rows_before,
            netstat.delta(tcp_before, netstat.snapshot()),
        )
    flush_redis()  # the processing tasks nobody consumed
    print(f"  {_summary(load)}; late: {load.describe_late()}; TCP: {tcp}", flush=True)
    return _result(load, stored, tcp)


def add_late_rows(result: BenchResult, load: OpenLoopResult, tcp: str) -> None:
    """Where the tail comes from: when the late requests were due, and what TCP saw."""
    result.add("late requests, by when they were due", load.describe_late())
    result.add("TCP counters that moved while measuring (bench/netstat.py)", tcp)


def _requests(base: str, count: int, tag: str) -> list[Request]:
    """`count` distinct signed Appeared webhooks (the clock at generation time: they are not
    processed here, so their age does not matter)."""
    hooks = [ringing_now(new_entry_id(tag, i)) for i in range(count)]
    return [Request(base + hook.path, hook.body) for hook in hooks]


def _summary(load: OpenLoopResult) -> str:
    return (
        f"{len(load.samples)} requests at {load.achieved_rps:.1f} req/s: "
        f"p50 {load.latency(0.5):.1f} ms, p99 {load.latency(0.99):.1f} ms, "
        f"max {load.latency(1.0):.1f} ms, non-200 {load.non_200}"
    )


def _result(load: OpenLoopResult, stored: int, tcp: str) -> BenchResult:
    result = BenchResult(NAME, TITLE)
    p99 = load.latency(0.99)
    sustained = load.non_200 == 0 and load.achieved_rps >= RATE * 0.98
    result.add(
        "p99 latency (from scheduled send)",
        f"{p99:.1f} ms",
        f"<= {TARGET_P99_MS:.0f} ms",
        p99 <= TARGET_P99_MS,
    )
    result.add(
        "rate sustained, all answers 200",
        f"{load.achieved_rps:.1f} req/s over {load.duration_s:.1f} s; "
        f"{len(load.samples)} requests, {load.non_200} non-200, {stored} events stored",
        f"{RATE:.0f}/s for {MEASURE_S} s, 0 non-200",
        sustained and stored == len(load.samples),
    )
    result.add("p50 / max latency", f"{load.latency(0.5):.1f} ms / {load.latency(1.0):.1f} ms")
    result.add(
        "service time p50 / p99 (actual send -> answer)",
        f"{load.service(0.5):.1f} ms / {load.service(0.99):.1f} ms",
    )
    add_late_rows(result, load, tcp)
    result.notes += [
        f"Open-loop generator (`bench/openloop.py`, Python threads, up to {CONNECTIONS} "
        f"connections) at a fixed {RATE:.0f} req/s; {MEASURE_S} s measured after a "
        f"{WARMUP_S} s warm-up. Latency runs from each request's scheduled send time; the "
        f"latest any request went out after its scheduled time: {load.max_send_lag_ms:.1f} ms.",
        f"Every request a distinct signed `events/call` Appeared (own entry_id/call_id); "
        f"answers: {load.statuses}. gunicorn {SHIPPED_GUNICORN_TEXT}, DEBUG=0; no Celery "
        "worker (queued tasks flushed afterwards).",
        "The generator, gunicorn, PostgreSQL and Redis share the machine's cores. The "
        "generator's connections stay open between requests, as Caddy's to gunicorn do in "
        "production (Mango's own connections end at Caddy).",
    ]
    return result
