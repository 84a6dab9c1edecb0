"""backfill: 5,000 complete calls received while Bitrix24 was down, logged after it recovers.

Setup: one standard-plan portal on the live fake, user 11 with UF_PHONE_INNER 101, a Mango
connection mapping extension 101 to user 11; gunicorn as shipped (DEBUG=0) and two
real `celery worker` processes (a worker on calls,recordings,default and a dispatcher
on bitrix, concurrency 1 each, as in docker/compose.yaml) started with
BITRIX24_RETRY_MAX_DELAY_S = RETRY_CAP_S (the default cap of 300 s between retries would
dominate any figure; the cap used is reported).

Method: the fake is put in outage (`fake.outage("500")`: every request answers 500
INTERNAL_SERVER_ERROR and executes nothing). CALLS complete answered inbound calls, 4
webhooks each (`events/call` Appeared, Connected, Disconnected, then `events/summary`), an
hour in the past (so late: registered with SHOW=0, no cards), are POSTed to gunicorn by
POSTERS threads, each call's events in order. The workers process them and the outbox tries
to send the register and finish commands, getting 500s and backing off. The outage lasts
until every webhook is processed and every register and finish has failed at least
MIN_FAILED_TRIES times (so the backoff has grown, as in a real outage), or OUTAGE_MAX_S
after the last POST (posting 20,000 webhooks takes minutes), whichever comes first (what was
still unprocessed then is reported, and processed after recovery, inside the measured time).
Then, with the fake enforcing the standard bucket (2 req/s drain, burst 50,
QUERY_LIMIT_EXCEEDED over it), `fake.restore()` and the clock starts. The fake's call log is
polled every 50 ms until it holds a successful `telephony.externalCall.register` for each of
the CALLS EXTERNAL_CALL_IDs and a successful `telephony.externalCall.finish` for each
registered CALL_ID. After a short quiet period the log is checked for duplicates: each
EXTERNAL_CALL_ID registered exactly once, each call finished exactly once, no failed
register or finish after recovery. The benchmark gives up GIVE_UP_S after recovery (twice
the target) and then reports the pace so far (calls finished per second) and the time all
calls would take at that pace.

Target (issue 11, raised): all 5,000 calls registered and finished <= 90 s after recovery,
nothing duplicated. 10,000 commands in batches of 50 are 200 requests: the standard bucket
(50 at once, then 2 a second) alone takes about 75 s.
"""

import contextlib
import http.client
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.db.models import Count, Max, Min

from bench.env import reset_state, subprocess_env
from bench.mango import (
    ANSWERED_CALL,
    Webhook,
    call_event,
    external_call_id,
    hook_path,
    mango_connection,
    new_entry_id,
    post,
    server_env_extra,
)
from bench.portals import connected_portal, fake_bitrix24
from bench.procs import LAYOUT, SHIPPED_GUNICORN, SHIPPED_GUNICORN_TEXT, Gunicorn, celery_workers
from bench.report import BenchResult
from bitrixapp.models import B24Command, Portal
from telephony.models import Call, PbxConnection, PbxEvent
from tests.fakes.bitrix24 import FakeBitrix24

NAME = "backfill"
TITLE = "5,000 calls received during a Bitrix24 outage, logged after recovery"
MEMBER_ID = "bench-backfill"
CALLS = 5000
POSTERS = 8
WORKERS = 2
GUNICORN_OPTIONS = SHIPPED_GUNICORN
RETRY_CAP_S = 5
MIN_FAILED_TRIES = 2
CALLS_AGO_S = 3600.0  # the calls happened an hour ago (late anyway)
REGISTER, FINISH = "telephony.externalcall.register", "telephony.externalcall.finish"
POLL_S = 0.05
PROGRESS_S = 15.0
QUIET_S = 3.0  # after the last finish: a duplicate or straggler would show in this time
OUTAGE_MAX_S = 30.0
GIVE_UP_S = 180.0  # twice the target: a MISS either way, and the run stays short
TARGET_S = 90.0


@dataclass
class Outage:
    post_s: float  # posting all webhooks
    length_s: float  # outage start -> recovery
    non_200: int
    rejected: int  # requests the fake refused during the outage
    unprocessed: int  # webhooks not yet processed at recovery
    attempts: dict[str, int]  # min / max failed tries of the commands at recovery
    commands: dict[str, int]  # method -> commands queued
    wanted: set[str]  # the calls' EXTERNAL_CALL_IDs


@dataclass
class Recovery:
    elapsed_s: float  # restore -> last register/finish needed (or giving up)
    registered: Counter[str] = field(default_factory=Counter)  # EXTERNAL_CALL_ID -> ok registers
    finished: Counter[str] = field(default_factory=Counter)  # CALL_ID -> ok finishes
    failed: Counter[str] = field(default_factory=Counter)  # method -> failed calls after restore
    requests: Counter[str] = field(default_factory=Counter)  # HTTP method -> requests after restore
    throttled: int = 0
    first_request_s: float | None = None
    call_phases: dict[str, int] = field(default_factory=dict)
    command_states: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return len(self.registered) >= CALLS and len(self.finished) >= CALLS

    @property
    def duplicates(self) -> int:
        extra = sum(n - 1 for n in self.registered.values() if n > 1)
        return extra + sum(n - 1 for n in self.finished.values() if n > 1)


def run() -> BenchResult:
    reset_state()
    with fake_bitrix24() as fake:
        portal, remote = connected_portal(fake, MEMBER_ID)
        remote.add_user(11, NAME="Operator", UF_PHONE_INNER="101")
        connection = mango_connection(portal, {"101": 11})
        fake.reset()  # standard bucket enforced (2 req/s, burst 50), empty logs
        with _retry_cap(), celery_workers(fake.oauth_url, WORKERS):
            env = subprocess_env(**server_env_extra())
            with Gunicorn(NAME, GUNICORN_OPTIONS, env) as web:
                outage = _calls_during_outage(fake, web.url, connection, portal)
            recovery = _recover(fake, outage.wanted, portal)
    return _result(outage, recovery)


@contextlib.contextmanager
def _retry_cap() -> Iterator[None]:
    """BITRIX24_RETRY_MAX_DELAY_S for the workers started inside (they copy os.environ)."""
    old = os.environ.get("BITRIX24_RETRY_MAX_DELAY_S")
    os.environ["BITRIX24_RETRY_MAX_DELAY_S"] = str(RETRY_CAP_S)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("BITRIX24_RETRY_MAX_DELAY_S", None)
        else:
            os.environ["BITRIX24_RETRY_MAX_DELAY_S"] = old


# ---------------------------------------------------------------- the outage


def _calls_during_outage(
    fake: FakeBitrix24, server_url: str, connection: PbxConnection, portal: Portal
) -> Outage:
    fake.outage("500")
    started = time.monotonic()
    calls = _complete_calls()
    statuses = _post_all(server_url, hook_path(connection), calls)
    post_s = time.monotonic() - started
    print(f"  {len(calls) * len(ANSWERED_CALL)} webhooks posted in {post_s:.1f} s", flush=True)
    posted = time.monotonic()
    while time.monotonic() - posted < OUTAGE_MAX_S and not _all_failed_enough(portal):
        time.sleep(0.2)
    attempts = B24Command.objects.filter(portal=portal).aggregate(
        min=Min("attempts"), max=Max("attempts")
    )
    methods = B24Command.objects.filter(portal=portal).values_list("method").annotate(n=Count("id"))
    return Outage(
        post_s=post_s,
        length_s=time.monotonic() - started,
        non_200=sum(n for status, n in statuses.items() if status != 200),
        rejected=len(fake.rejected),
        unprocessed=PbxEvent.objects.filter(state=PbxEvent.State.RECEIVED).count(),
        attempts={k: int(v or 0) for k, v in attempts.items()},
        commands=dict(methods),
        wanted={external_call_id(connection, hooks[0].entry_id) for hooks in calls},
    )


def _complete_calls() -> list[list[Webhook]]:
    """CALLS answered inbound calls of 4 webhooks each, one every second an hour ago."""
    first = time.time() - CALLS_AGO_S
    calls = []
    for i in range(CALLS):
        entry_id = new_entry_id("backfill", i)
        calls.append([call_event(name, entry_id, first + i) for name in ANSWERED_CALL])
    return calls


def _post_all(server_url: str, base: str, calls: list[list[Webhook]]) -> Counter[int]:
    """POSTERS threads; thread k posts calls k, k + POSTERS, ..., each call's events in order."""
    netloc = server_url.removeprefix("http://")
    per_thread: list[Counter[int]] = [Counter() for _ in range(POSTERS)]

    def poster(k: int) -> None:
        conn = http.client.HTTPConnection(netloc, timeout=30)
        for hooks in calls[k::POSTERS]:
            for hook in hooks:
                try:
                    status, _ = post(conn, base, hook)
                except (OSError, http.client.HTTPException):
                    conn.close()
                    status = 0
                per_thread[k][status] += 1
        conn.close()

    threads = [threading.Thread(target=poster, args=(k,), daemon=True) for k in range(POSTERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(per_thread, Counter())


def _all_failed_enough(portal: Portal) -> bool:
    """Every webhook processed, every call's register and finish queued and each of them
    failed MIN_FAILED_TRIES times."""
    if PbxEvent.objects.filter(state=PbxEvent.State.RECEIVED).exists():
        return False
    commands = B24Command.objects.filter(portal=portal)
    counts = Counter(commands.values_list("method", flat=True))
    if counts["telephony.externalCall.register"] < CALLS:
        return False
    if counts["telephony.externalCall.finish"] < CALLS:
        return False
    return not commands.filter(attempts__lt=MIN_FAILED_TRIES).exists()


# ---------------------------------------------------------------- the recovery


def _recover(fake: FakeBitrix24, wanted: set[str], portal: Portal) -> Recovery:
    first_call = len(fake.calls)
    restored = time.monotonic()
    fake.restore()
    out = Recovery(elapsed_s=0.0)
    deadline = restored + GIVE_UP_S
    seen, report_at = first_call, restored + PROGRESS_S
    while not out.complete and time.monotonic() < deadline:
        seen = _tally(fake, seen, wanted, out)
        out.elapsed_s = time.monotonic() - restored
        if time.monotonic() >= report_at:
            report_at += PROGRESS_S
            print(f"  +{out.elapsed_s:.0f} s: {_progress(out)}", flush=True)
        time.sleep(POLL_S)
    time.sleep(QUIET_S)
    _tally(fake, seen, wanted, out)
    requests = [(m, at) for member, m, at in fake.http_requests if member == MEMBER_ID]
    after = [(m, at) for m, at in requests if at >= restored]
    out.requests = Counter(m for m, _ in after)
    out.first_request_s = (after[0][1] - restored) if after else None
    out.throttled = sum(1 for member, _, at in fake.throttled if member == MEMBER_ID)
    out.call_phases = dict(Call.objects.values_list("phase").annotate(n=Count("id")))
    out.command_states = dict(
        B24Command.objects.filter(portal=portal).values_list("state").annotate(n=Count("id"))
    )
    return out


def _progress(out: Recovery) -> str:
    unprocessed = PbxEvent.objects.filter(state=PbxEvent.State.RECEIVED).count()
    return (
        f"{len(out.registered)} registered, {len(out.finished)} finished, "
        f"{unprocessed} webhooks unprocessed"
    )


def _tally(fake: FakeBitrix24, seen: int, wanted: set[str], out: Recovery) -> int:
    """Count the fake's calls from index `seen` on; returns the new index."""
    calls = fake.calls[seen:]
    for call in calls:
        method = call.method.lower()
        if method not in (REGISTER, FINISH):
            continue
        if not call.ok:
            out.failed[method] += 1
        elif method == REGISTER and str(call.params.get("EXTERNAL_CALL_ID")) in wanted:
            out.registered[str(call.params["EXTERNAL_CALL_ID"])] += 1
        elif method == FINISH:
            out.finished[str(call.params.get("CALL_ID"))] += 1
    return seen + len(calls)


# ---------------------------------------------------------------- report


def _result(outage: Outage, rec: Recovery) -> BenchResult:
    result = BenchResult(NAME, TITLE)
    ok = rec.complete and rec.elapsed_s <= TARGET_S
    measured = (
        f"{rec.elapsed_s:.1f} s"
        if rec.complete
        else f"incomplete after {rec.elapsed_s:.0f} s: {len(rec.registered)} registered, "
        f"{len(rec.finished)} finished"
    )
    result.add(
        f"recovery -> {CALLS:,} calls registered and finished", measured, f"<= {TARGET_S:.0f} s", ok
    )
    clean = rec.duplicates == 0 and not rec.failed
    result.add(
        "duplicated registers / finishes; failed after recovery",
        f"{rec.duplicates}; {dict(rec.failed) or 0}",
        "0; 0",
        clean,
    )
    result.add(
        "registers / finishes succeeded",
        f"{sum(rec.registered.values())} / {sum(rec.finished.values())} "
        f"({len(rec.registered)} / {len(rec.finished)} distinct)",
        f"{CALLS} / {CALLS}",
        sum(rec.registered.values()) == CALLS and sum(rec.finished.values()) == CALLS,
    )
    if not rec.complete and rec.finished:
        rate = len(rec.finished) / rec.elapsed_s
        result.add(
            "pace after recovery (extrapolated for all calls)",
            f"{rate:.2f} calls/s finished (~{CALLS / rate / 60:.1f} min for {CALLS})",
        )
    result.add("HTTP requests after recovery", _describe(rec.requests))
    result.add("QUERY_LIMIT_EXCEEDED after recovery", str(rec.throttled))
    result.add("retry delay cap (BITRIX24_RETRY_MAX_DELAY_S)", f"{RETRY_CAP_S} s (default 300 s)")
    first = f"{rec.first_request_s * 1000:.0f} ms" if rec.first_request_s is not None else "none"
    result.notes += [
        f"{CALLS} answered inbound calls x {len(ANSWERED_CALL)} webhooks "
        f"({', '.join(ANSWERED_CALL)}), an hour old, POSTed by {POSTERS} threads to gunicorn "
        f"{SHIPPED_GUNICORN_TEXT} in {outage.post_s:.1f} s ({outage.non_200} non-200) "
        f"while the fake answered every request 500; {WORKERS} `celery worker` processes "
        f"({LAYOUT}) with BITRIX24_RETRY_MAX_DELAY_S={RETRY_CAP_S}.",
        f"Outage lasted {outage.length_s:.1f} s (until every webhook was processed and every "
        f"command had failed >= {MIN_FAILED_TRIES} times, at most {OUTAGE_MAX_S:.0f} s after "
        f"the last POST); "
        f"at recovery {outage.unprocessed} of {CALLS * len(ANSWERED_CALL)} webhooks were still "
        f"unprocessed; commands queued: {outage.commands}; "
        f"failed tries per command at recovery: {outage.attempts['min']}.."
        f"{outage.attempts['max']}; requests refused during the outage: {outage.rejected}.",
        f"After `fake.restore()` (standard bucket enforced: 2 req/s, burst 50) the first request "
        f"came after {first}. Finish = first 50 ms poll of the fake's log holding a successful "
        f"register for each EXTERNAL_CALL_ID and a successful finish for each CALL_ID; "
        f"duplicates checked {QUIET_S:.0f} s later.",
        f"Final call phases: {rec.call_phases}; command states: {rec.command_states}.",
    ]
    return result


def _describe(methods: Counter[str]) -> str:
    total = sum(methods.values())
    parts = ", ".join(f"{n} {m}" for m, n in methods.most_common())
    return f"{total} ({parts})" if total else "0"
