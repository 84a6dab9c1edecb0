"""call_cost: what a call event costs the app, in statements (exact) and CPU, in-process.

Setup: a standard-plan portal on the live fake (rate limit off), a Mango connection with
extension 101 -> user 11, Django in this process on the bench database with DEBUG off.
No gunicorn or Celery: the functions measured are the ones those processes run: the
webhook view (through Django's test client: middleware, the connection (looked up by the
first, then remembered: bitrixapp.webhooks), signature check, insert),
`bitrixapp.inbox.drain` (what the `calls` worker runs for a connection's stored events) and
`bitrixapp.outbox.dispatch` (the dispatcher). So the figures leave out the broker hops and
the HTTP server, and they are not disturbed by them.

- Statements: every SQL statement Django sends, counted with CaptureQueriesContext. Exact
  and machine-independent. Celery's publish after commit is not SQL and not counted.
- CPU: this process's `time.process_time()` per event (PostgreSQL's own CPU is not in it);
  wall: `time.perf_counter()` (PostgreSQL round trips included). Medians of several rounds.
- ack: ACKS ringing webhooks, one at a time. Lone event: LONE events, each stored and then
  processed with nothing else waiting. Burst: BURSTS rounds of BURST ringing events stored,
  then processed by one drain of the connection's lane (one step takes all 50).
- Bulk settle: the dispatcher sends the 50 registers of a burst in one `batch`; the figure
  is the statements from locking the answered rows to the end of their settling transaction.
- Memory: MEMORY_EVENTS ringing events in bursts of 50 (rows inserted directly, as the ack
  would store them); the RSS growth of this process from the first 1,000 to the last.

Targets (issue): SQL per ringing event under burst <= 4; worker CPU per event under burst
<= 5 ms; ack CPU <= 4 ms; SQL per command when a batch of 50 settles <= 0.2; memory over
10,000 calls flat (<= +20 MB RSS).
"""

import statistics
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, reset_queries
from django.test import Client
from django.test.utils import CaptureQueriesContext

from bench.mango import API_KEY, RINGING, hook_path, mango_connection, new_entry_id, ringing_now
from bench.portals import connected_portal, fake_bitrix24
from bench.report import BenchResult
from bitrixapp import inbox, outbox
from telephony import providers
from telephony.models import PbxEvent
from telephony.providers.base import FORM, Webhook

NAME = "call_cost"
TITLE = "what a call event costs: statements, CPU, memory (in-process)"
MEMBER_ID = "bench-call-cost"
ACKS, LONE, BURST, BURSTS = 200, 20, 50, 5
MEMORY_EVENTS, MEMORY_WARMUP = 10_000, 1_000
LANE_LABEL = PbxEvent._meta.label_lower  # the drain task's arguments: inbox and lane


def captured_queries() -> CaptureQueriesContext:
    """CaptureQueriesContext indexes Django's query log, a deque of at most 9,000 entries:
    once earlier benchmarks of the same `make bench` process have filled it, the slice it
    returns is empty. So the log is emptied first."""
    reset_queries()
    return CaptureQueriesContext(connection)


def measured(fn: Callable[[], Any]) -> tuple[int, float, float]:
    """(statements, CPU ms, wall ms) of one call of `fn`."""
    cpu, wall = time.process_time(), time.perf_counter()
    with captured_queries() as captured:
        fn()
    return len(captured), (time.process_time() - cpu) * 1000, (time.perf_counter() - wall) * 1000


def stored_rows(conn: Any, n: int, tag: str) -> list[int]:
    """n ringing events stored as the ack stores them (redacted), state `received`."""
    mango = providers.get("mango")
    rows = []
    for i in range(n):
        hook = ringing_now(new_entry_id(tag, i))
        webhook = Webhook(hook.path, hook.body, FORM)
        rows.append(
            PbxEvent(
                portal_id=conn.portal_id,
                connection=conn,
                source=hook.path,
                dedupe_key=mango.dedupe_key(webhook),
                body=inbox.redact(hook.body, FORM, mango.secret_fields),
                content_type=FORM,
            )
        )
    return [row.pk for row in PbxEvent.objects.bulk_create(rows)]


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(x for x in status if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def run() -> BenchResult:
    debug, hosts = settings.DEBUG, settings.ALLOWED_HOSTS
    settings.DEBUG, settings.ALLOWED_HOSTS = False, [*hosts, "testserver"]
    try:
        with fake_bitrix24() as fake:
            fake.enforce_rate_limit = False
            portal, remote = connected_portal(fake, MEMBER_ID)
            remote.add_user(11, NAME="Bench User", UF_PHONE_INNER="101")
            conn = mango_connection(portal, {"101": 11})
            return _measure(conn, portal, fake)
    finally:
        settings.DEBUG, settings.ALLOWED_HOSTS = debug, hosts


def _measure(conn: Any, portal: Any, fake: Any) -> BenchResult:
    result = BenchResult(NAME, TITLE)
    client, base = Client(), hook_path(conn)

    def ack(hook: Any) -> None:
        response = client.post(base + hook.path, hook.body, content_type=FORM)
        assert response.status_code == 200, response.content

    hooks = [ringing_now(new_entry_id("ack", i)) for i in range(ACKS)]  # signed beforehand
    acks = [measured(lambda hook=hook: ack(hook)) for hook in hooks]
    PbxEvent.objects.all().delete()
    lone = []
    for i in range(LONE):
        stored_rows(conn, 1, f"lone{i}")
        lone.append(measured(lambda: inbox.drain(LANE_LABEL, conn.pk)))
    bursts, settles = [], []
    # The flag a queued dispatcher holds: no dispatch task is queued for the bursts' commands,
    # so no worker (one an earlier benchmark left behind is the likely culprit) can send them
    # before the measured in-process dispatch does; inside a full `make bench` this benchmark
    # once found its batch already sent.
    cache.set(outbox._kick_key(portal.pk), 1, timeout=3600)
    for i in range(BURSTS):
        stored_rows(conn, BURST, f"burst{i}")
        bursts.append(measured(lambda: inbox.drain(LANE_LABEL, conn.pk)))
        settles.append(_settle_statements(portal))
    memory = _memory(conn)
    med = statistics.median

    result.add(
        "SQL per ringing event under burst (50)",
        f"{med(b[0] for b in bursts) / BURST:.2f}",
        "<= 4",
        med(b[0] for b in bursts) / BURST <= 4,
    )
    cpu = med(b[1] for b in bursts) / BURST
    result.add(
        "worker CPU per event under burst (50)",
        f"{cpu:.2f} ms (wall {med(b[2] for b in bursts) / BURST:.2f} ms)",
        "<= 5 ms",
        cpu <= 5,
    )
    ack_cpu = med(a[1] for a in acks)
    result.add(
        "webhook ack CPU (view, in-process)",
        f"{ack_cpu:.2f} ms; {med(a[0] for a in acks):.0f} statement(s), the first "
        f"{acks[0][0]} (the connection looked up, then remembered)",
        "<= 4 ms",
        ack_cpu <= 4,
    )
    per_command = med(settles) / BURST
    result.add(
        "SQL per command when a batch of 50 settles",
        f"{per_command:.2f} ({med(settles):.0f} for 50)",
        "<= 0.2",
        per_command <= 0.2,
    )
    result.add(
        "worker RSS growth over 10,000 calls",
        f"{memory[1] - memory[0]:+.1f} MB ({memory[0]:.0f} -> {memory[1]:.0f} MB)",
        "<= +20 MB",
        memory[1] - memory[0] <= 20,
    )
    result.add(
        "lone ringing event: SQL / CPU / wall",
        " / ".join(
            (
                f"{med(x[0] for x in lone):.0f}",
                *(f"{med(x[i] for x in lone):.2f} ms" for i in (1, 2)),
            )
        ),
    )
    result.notes += [
        f"{ACKS} acks, {LONE} lone events, {BURSTS} bursts of {BURST}; medians. Mango "
        f"`{RINGING}` events of distinct calls (bench connection, api_key {API_KEY!r}).",
        "In-process: Django's test client for the ack, `inbox.drain` and `outbox.dispatch` "
        "for the worker and the dispatcher, DEBUG off; no broker hop, no HTTP server. CPU is "
        "this process's alone (not PostgreSQL's); wall includes the PostgreSQL round trips.",
        "Bulk settle: statements from locking the answered rows to the end of their "
        f"transaction, for the {BURST} registers each burst queued "
        f"({len(fake.calls_of('batch'))} batch requests in all).",
        f"Memory: {MEMORY_EVENTS:,} ringing events in bursts of {BURST}; RSS after the first "
        f"{MEMORY_WARMUP:,} and after the last.",
    ]
    return result


def _settle_statements(portal: Any) -> int:
    with captured_queries() as captured:
        outbox.dispatch(portal.pk)
    sql = [q["sql"] for q in captured]
    ours = 'SELECT "bitrixapp_b24command"."id" AS "id" FROM'
    start = next(i for i, s in enumerate(sql) if s.startswith(ours) and "NO KEY UPDATE" in s)
    end = next(
        (i for i, s in enumerate(sql) if i > start and 'FROM "bitrixapp_portal"' in s), len(sql)
    )
    return end - start


def _memory(conn: Any) -> tuple[float, float]:
    before = 0.0
    for n in range(0, MEMORY_EVENTS, BURST):
        if n == MEMORY_WARMUP:
            before = rss_mb()
        stored_rows(conn, BURST, f"mem{n}")
        inbox.drain(LANE_LABEL, conn.pk)
    return before, rss_mb()
