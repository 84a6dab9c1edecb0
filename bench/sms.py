"""SMS benchmarks: the send rate against MTS's limit, delivery-report ingestion under
gunicorn, and worker memory while a 10,000-message campaign drains.

sms_send_rate: 2,000 queued messages of one account configured at 20/s, one worker process
(`-Q sms`, concurrency 2) sending to the live MTS fake (tests/fakes/mts.py) whose own limit
is 20/s and which answers 429 above it. Measured: the fake's accepted sends per second from
the first to the last one, and the 429s it answered. Target (issue): 95-100 % of the limit,
zero 429.

sms_dlr: gunicorn (as shipped, DEBUG=0) receiving MTS delivery reports (form fields, each
a distinct report) at a fixed 300 req/s for 20 s from the open-loop generator
(bench/openloop.py). Each report is: the account lookup by its URL, parsing, one INSERT and
a kick of its lane in Redis. No worker runs. Target (issue): >= 300 req/s with p99 <= 50 ms.

sms_memory: 10,000 messages of one account at 200/s (fake limit 200/s), one worker process
(concurrency 2); the resident memory of the worker's processes is sampled every second.
Target: flat — the last sample within 20 MB of the sample after the first 1,000 sends.
"""

import subprocess
import time
from urllib.parse import urlencode

from django.utils import timezone

from bench.env import flush_redis, reset_state, subprocess_env
from bench.openloop import Request, run_open_loop
from bench.portals import installed_portal
from bench.procs import SHIPPED_GUNICORN, SHIPPED_GUNICORN_TEXT, CeleryWorker, Gunicorn, wait_until
from bench.report import BenchResult
from bitrixapp import jobs
from sms.models import SmsAccount, SmsMessage, SmsSender
from tests.fakes.mts import FakeMts

CREDENTIALS = {"client_id": "4242", "login": "bench", "password": "bench-pw"}


def _account(member_id: str, fake: FakeMts | None, rate: int) -> SmsAccount:
    portal = installed_portal(member_id, "bench-application-token")
    account = SmsAccount.objects.create(
        portal=portal,
        name="MTS",
        api_url=fake.api_url if fake else "http://127.0.0.1:9/",
        credentials=CREDENTIALS,
        rate_per_second=rate,
    )
    SmsSender.objects.create(
        portal=portal, account=account, code="mts", name="MTS", alpha_name="ACME"
    )
    return account


def _queue(account: SmsAccount, count: int, text: str = "Ваш заказ готов к выдаче") -> None:
    """`count` messages ready to send, and their send tasks (as the handler would queue)."""
    sender = account.senders.get()
    now = timezone.now()
    SmsMessage.objects.bulk_create(
        SmsMessage(
            portal_id=account.portal_id,
            account=account,
            sender=sender,
            b24_message_id=f"bench-{i}",
            recipient="+375291234567",
            recipient_e164="+375291234567",
            text=text,
            encoding="ucs2",
            next_attempt_at=now,
        )
        for i in range(count)
    )
    for pk in SmsMessage.objects.filter(account=account).values_list("pk", flat=True):
        jobs.now("sms.tasks.send_message", pk, queue="sms")


def _sent(account: SmsAccount) -> int:
    return SmsMessage.objects.filter(account=account, status="sent").count()


def _worker(name: str) -> CeleryWorker:
    worker = CeleryWorker(name, "http://127.0.0.1:9/oauth/", concurrency=2, queues="sms")
    wait_until(worker.answers_ping, timeout=60, what="sms worker ready")
    return worker


# ---------------------------------------------------------------- send rate

RATE, MESSAGES = 20, 2000


def run_send_rate() -> BenchResult:
    reset_state()
    with FakeMts(**CREDENTIALS) as fake:
        fake.per_second = RATE
        account = _account("bench-sms-rate", fake, RATE)
        _queue(account, MESSAGES)
        with _worker("sms-rate"):
            wait_until(
                lambda: _sent(account) >= MESSAGES, timeout=MESSAGES / RATE * 2 + 60, what="sent"
            )
        rate, throttled, sent = fake.sends_per_second(), fake.throttled, len(fake.sent)
    flush_redis()
    print(f"  {sent} sent at {rate:.2f}/s, {throttled} answered 429", flush=True)
    result = BenchResult("sms_send_rate", f"SMS send rate: {MESSAGES} messages at {RATE}/s")
    share = rate / RATE
    result.add(
        "measured send rate (fake's clock)",
        f"{rate:.2f}/s ({share:.1%} of the limit)",
        "95-100 % of 20/s",
        0.95 <= share <= 1.0,
    )
    result.add("429 answers from the fake", str(throttled), "0", throttled == 0)
    result.add("messages accepted by the fake", str(sent), str(MESSAGES), sent == MESSAGES)
    result.notes += [
        "One worker process (`-Q sms`, prefork concurrency 2); the account's pacer "
        "(bitrixapp.ratelimit.reserve in Redis) runs at 97 % of the configured rate; the fake "
        "counts a sliding one-second window."
    ]
    return result


# ---------------------------------------------------------------- DLR ingestion

DLR_RATE, WARMUP_S, MEASURE_S, CONNECTIONS = 300.0, 2, 20, 16
DLR_P99_MS = 50.0


def _reports(hook: str, count: int, tag: str) -> list[Request]:
    path = f"/sms/dlr/{hook}/"
    return [
        Request(
            path,
            urlencode(
                {
                    "message_id": f"{tag}-{i}",
                    "extra_id": f"b24sms-{i}",
                    "status": 2,
                    "substatus": 23,
                    "time": int(time.time() * 1000),
                }
            ).encode(),
        )
        for i in range(count)
    ]


def run_dlr() -> BenchResult:
    reset_state()
    account = _account("bench-sms-dlr", None, 20)
    hook = str(account.webhook_uuid)
    env = subprocess_env(DEBUG="0", SECRET_KEY="bench-" + "x" * 50, ALLOWED_HOSTS="127.0.0.1")
    with Gunicorn("sms_dlr", SHIPPED_GUNICORN, env) as server:
        run_open_loop(server.url, _reports(hook, int(DLR_RATE * WARMUP_S), "warm"), DLR_RATE, 16)
        load = run_open_loop(
            server.url, _reports(hook, int(DLR_RATE * MEASURE_S), "m"), DLR_RATE, CONNECTIONS
        )
    stored = account.reports.count()
    flush_redis()
    p99 = load.latency(0.99)
    print(f"  {load.achieved_rps:.1f} req/s, p99 {p99:.1f} ms, non-200 {load.non_200}", flush=True)
    result = BenchResult("sms_dlr", f"MTS delivery reports at {DLR_RATE:.0f}/s under gunicorn")
    result.add(
        "throughput, all answers 200",
        f"{load.achieved_rps:.1f} req/s, {load.non_200} non-200, {stored} stored",
        ">= 300 req/s, 0 non-200",
        load.achieved_rps >= DLR_RATE * 0.98 and load.non_200 == 0,
    )
    result.add("p99 latency (from scheduled send)", f"{p99:.1f} ms", "<= 50 ms", p99 <= DLR_P99_MS)
    result.add("p50 / max", f"{load.latency(0.5):.1f} ms / {load.latency(1.0):.1f} ms")
    result.notes += [
        f"Open-loop at a fixed {DLR_RATE:.0f} req/s for {MEASURE_S} s after a {WARMUP_S} s "
        f"warm-up; gunicorn {SHIPPED_GUNICORN_TEXT}, DEBUG=0; no worker (tasks flushed after)."
    ]
    return result


# ---------------------------------------------------------------- worker memory

CAMPAIGN, CAMPAIGN_RATE, FLAT_MB = 10_000, 200, 20.0


def _rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the prefork pool), in MB."""
    children = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    pids = [str(pid), *children]
    out = subprocess.run(
        ["ps", "-o", "rss=", "-p", ",".join(pids)], capture_output=True, text=True, check=False
    ).stdout
    return sum(int(x) for x in out.split()) / 1024


def run_memory() -> BenchResult:
    reset_state()
    samples: list[tuple[int, float]] = []
    with FakeMts(**CREDENTIALS) as fake:
        fake.per_second = CAMPAIGN_RATE
        account = _account("bench-sms-memory", fake, CAMPAIGN_RATE)
        _queue(account, CAMPAIGN)
        with _worker("sms-memory") as worker:
            deadline = time.monotonic() + CAMPAIGN / CAMPAIGN_RATE * 3 + 120
            while time.monotonic() < deadline:
                sent = _sent(account)
                samples.append((sent, _rss_mb(worker.proc.pid)))
                if sent >= CAMPAIGN:
                    break
                time.sleep(1.0)
        throttled = fake.throttled
    flush_redis()
    after_warmup = next((mb for sent, mb in samples if sent >= 1000), samples[0][1])
    last, peak = samples[-1][1], max(mb for _, mb in samples)
    print(f"  RSS after 1,000: {after_warmup:.1f} MB, peak {peak:.1f}, end {last:.1f}", flush=True)
    result = BenchResult("sms_memory", f"Worker memory while {CAMPAIGN:,} messages drain")
    result.add(
        "worker RSS (process + pool): after 1,000 sends -> end",
        f"{after_warmup:.1f} MB -> {last:.1f} MB (peak {peak:.1f} MB)",
        f"growth <= {FLAT_MB:.0f} MB",
        last - after_warmup <= FLAT_MB,
    )
    result.add(
        "messages sent / 429s",
        f"{samples[-1][0]} / {throttled}",
        f"{CAMPAIGN} / 0",
        samples[-1][0] >= CAMPAIGN and throttled == 0,
    )
    result.notes += [
        f"One worker (`-Q sms`, concurrency 2) at {CAMPAIGN_RATE}/s; RSS sampled every second "
        "with ps over the worker and its pool children."
    ]
    return result
