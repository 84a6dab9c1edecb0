"""The client-side leaky bucket, in Redis (shared) and in process (embedded mode)."""

import multiprocessing
import time

import pytest
from django.conf import settings

from bitrixapp import ratelimit
from bitrixapp.ratelimit import Bucket, LocalLimiter, RedisLimiter


@pytest.mark.parametrize("make", [lambda: RedisLimiter(settings.REDIS_URL), LocalLimiter])
def test_burst_then_drain(make):
    limiter = make()
    bucket = Bucket(drain_per_s=10.0, size=5)
    assert [limiter.try_take("b24:t1", bucket) for _ in range(5)] == [0.0] * 5
    wait = limiter.try_take("b24:t1", bucket)
    assert 0.05 < wait <= 0.11  # one slot drains in 0.1 s
    time.sleep(wait + 0.01)
    assert limiter.try_take("b24:t1", bucket) == 0.0


@pytest.mark.parametrize("make", [lambda: RedisLimiter(settings.REDIS_URL), LocalLimiter])
def test_refused_request_marks_the_bucket_full(make):
    limiter = make()
    bucket = Bucket(drain_per_s=2.0, size=50)
    limiter.mark_full("b24:t2", bucket)
    assert limiter.try_take("b24:t2", bucket) > 0.4


@pytest.mark.parametrize("make", [lambda: RedisLimiter(settings.REDIS_URL), LocalLimiter])
def test_a_hold_stops_every_take_for_its_while_and_takes_nothing(make):
    """An outage's pause: the take answers with the time left (in the same round trip as the
    bucket) and spends none of the bucket; afterwards the bucket is whole."""
    limiter, key = make(), f"b24:hold-{time.monotonic()}"
    bucket = Bucket(drain_per_s=0.001, size=2)
    limiter.hold(key, 0.3)
    assert 0.2 < limiter.try_take(key, bucket) <= 0.3
    assert 0.1 < limiter.try_take(key, bucket) <= 0.3
    time.sleep(0.32)
    assert [limiter.try_take(key, bucket) for _ in range(2)] == [0.0, 0.0]


def test_plans_map_to_bitrix24_buckets_with_a_margin():
    assert ratelimit.bucket_for("standard").size < 50
    assert ratelimit.bucket_for("enterprise").size < 250
    assert 1.8 < ratelimit.bucket_for("standard").drain_per_s < 2.0
    assert ratelimit.bucket_for("unknown") == ratelimit.bucket_for("standard")


def _take_many(url: str, n: int, out: "multiprocessing.Queue") -> None:
    limiter = RedisLimiter(url)
    bucket = Bucket(drain_per_s=0.001, size=30)
    out.put(sum(1 for _ in range(n) if limiter.try_take("b24:shared", bucket) == 0.0))


def test_two_processes_share_one_redis_bucket():
    out: multiprocessing.Queue = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=_take_many, args=(settings.REDIS_URL, 25, out))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(20)
    granted = out.get(timeout=5) + out.get(timeout=5)
    assert granted == 30  # 50 tries, one bucket of 30 between them
