"""webhook_ack for the JSON providers (MTT, generic): the same measurement as
bench/webhook_ack.py (gunicorn, 200 distinct webhooks/s for 60 s, open loop, p99 <= 20 ms),
with each provider's own signed JSON bodies. These stay at 200/s (the raised 500/s target
of issue 11 is for Mango, the provider in production).

MTT: a connection with a shared secret, so each request's raw body is checked against its
HMAC-SHA256 in `X-Signature`. Generic: `X-Timestamp` + `X-Signature` over `timestamp.body`
(timestamps taken when the bodies are generated, well inside the 5-minute window) and the
serializer validation of every field. Each accepted webhook is: the connection lookup, the
signature check, parsing, one PbxEvent INSERT + COMMIT and a kick of its lane in Redis (no
worker runs; the queued drain task is flushed afterwards).
"""

from __future__ import annotations

import copy
import json
import secrets
import time
from collections.abc import Callable

from bench import netstat
from bench.env import flush_redis, reset_state, subprocess_env
from bench.mango import server_env_extra
from bench.openloop import OpenLoopResult, Request, run_open_loop
from bench.portals import installed_portal
from bench.procs import SHIPPED_GUNICORN, SHIPPED_GUNICORN_TEXT, Gunicorn
from bench.report import BenchResult
from bench.webhook_ack import add_late_rows
from telephony.models import PbxConnection, PbxEvent, PbxExtension
from tests.fakes import generic as generic_fake
from tests.fakes import mtt as mtt_fake

RATE = 200.0
WARMUP_S, MEASURE_S = 2, 60
CONNECTIONS = 16
GUNICORN_OPTIONS = SHIPPED_GUNICORN
TARGET_P99_MS = 20.0
SECRET = "bench-json-secret"
JSON_TYPE = (("Content-Type", "application/json"),)

Builder = Callable[[str], tuple[bytes, dict[str, str]]]


def _mtt_ringing(call_id: str) -> tuple[bytes, dict[str, str]]:
    payload = copy.deepcopy(mtt_fake.fixture("incoming_call")["json"])
    payload.update(call_id=call_id, timestamp=int(time.time()))
    return mtt_fake.signed(SECRET, payload)


def _generic_ringing(call_id: str) -> tuple[bytes, dict[str, str]]:
    payload = copy.deepcopy(generic_fake.fixture("ringing")["json"])
    payload.update(call_id=call_id, timestamp=int(time.time()))
    body = json.dumps(payload).encode()
    return body, generic_fake.sign(SECRET, body)


PROVIDERS: dict[str, tuple[dict[str, str], Builder, str]] = {
    "mtt": ({"api_key": "bench-key", "secret": SECRET}, _mtt_ringing, "incoming_call"),
    "generic": ({"secret": SECRET}, _generic_ringing, "ringing"),
}


def run_for(provider: str) -> BenchResult:
    name, title = (
        f"webhook_ack_{provider}",
        f"{provider} webhook acknowledgement at 200 events/s, 60 s",
    )
    credentials, build, event = PROVIDERS[provider]
    reset_state()
    portal = installed_portal(f"bench-ack-{provider}", "bench-application-token")
    connection = PbxConnection.objects.create(
        portal=portal, name="Bench", provider=provider, credentials=credentials, default_user_id=1
    )
    PbxExtension.objects.create(connection=connection, extension="101", user_id=11)
    base = f"/telephony/hooks/{connection.webhook_uuid}/"
    tag = secrets.token_hex(4)
    with Gunicorn(name, GUNICORN_OPTIONS, subprocess_env(**server_env_extra())) as server:
        _check_accepted(server.url, base, build(f"{tag}-check"))
        # Bodies built right before each phase: the generic signature's window is 5 minutes.
        run_open_loop(server.url, _requests(base, build, tag, "warm", WARMUP_S), RATE, CONNECTIONS)
        measured = _requests(base, build, tag, "ack", MEASURE_S)
        rows_before, tcp_before = PbxEvent.objects.count(), netstat.snapshot()
        load = run_open_loop(server.url, measured, RATE, CONNECTIONS)
        stored, tcp = (
            PbxEvent.objects.count() - rows_before,
            netstat.delta(tcp_before, netstat.snapshot()),
        )
    flush_redis()
    return _result(name, title, event, load, stored, tcp)


def _requests(base: str, build: Builder, tag: str, phase: str, seconds: int) -> list[Request]:
    out = []
    for i in range(int(RATE * seconds)):
        body, headers = build(f"bench-{tag}-{phase}-{i}")
        out.append(Request(base, body, JSON_TYPE + tuple(headers.items())))
    return out


def _check_accepted(server_url: str, base: str, signed: tuple[bytes, dict[str, str]]) -> None:
    import http.client

    body, headers = signed
    conn = http.client.HTTPConnection(server_url.removeprefix("http://"), timeout=10)
    try:
        conn.request(
            "POST",
            base,
            body,
            {"Content-Type": "application/json", "X-Forwarded-Proto": "https", **headers},
        )
        reply = conn.getresponse()
        answer = reply.read()
    finally:
        conn.close()
    if reply.status != 200 or b"accepted" not in answer:
        raise RuntimeError(f"POST {base} answered {reply.status}: {answer[:500]!r}")


def _result(
    name: str, title: str, event: str, load: OpenLoopResult, stored: int, tcp: str
) -> BenchResult:
    result = BenchResult(name, title)
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
    add_late_rows(result, load, tcp)
    result.notes += [
        f"As webhook_ack (open loop, up to {CONNECTIONS} connections, {MEASURE_S} s after a "
        f"{WARMUP_S} s warm-up, gunicorn {SHIPPED_GUNICORN_TEXT}, DEBUG=0, no "
        f"worker), every request a distinct signed `{event}` JSON body; answers: "
        f"{load.statuses}; latest send after schedule: {load.max_send_lag_ms:.1f} ms.",
    ]
    return result
