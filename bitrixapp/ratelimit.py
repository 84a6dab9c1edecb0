"""A client-side copy of Bitrix24's per-portal leaky bucket, shared by every worker process.

Bitrix24 adds 1 per request and drains Y/s; over X the request is refused with 503
QUERY_LIMIT_EXCEEDED (Bitrix24 REST docs: limits.md). We keep our own counter a little stricter than
theirs so that we wait before sending instead of being refused. With REDIS_URL the counter
lives in Redis (one Lua script: atomic across processes and hosts, Redis' clock); in the
embedded mode it lives in the process, which is right because that mode runs one worker.

The same two homes serve `reserve()`: steady pacing at N requests per second for a key shared
by all workers (an SMS gateway account's contracted rate). It hands out evenly spaced send
times (a bucket of size 1), so a burst of workers never goes over the rate in any second.
"""

import threading
import time
from dataclasses import dataclass
from functools import cache

from django.conf import settings


@dataclass(frozen=True)
class Bucket:
    drain_per_s: float
    size: int

    def safe(self) -> "Bucket":
        # Our clock and Bitrix24's differ by network latency; keep a margin on both numbers.
        return Bucket(self.drain_per_s * 0.95, max(1, self.size - 2))


PLAN_BUCKETS = {"standard": Bucket(2.0, 50), "enterprise": Bucket(5.0, 250)}

# KEYS[1] bucket, KEYS[2] hold (until when no request may go, Redis time); ARGV: drain/s,
# size, cost, fill ("1" = we were refused: treat as full). Returns seconds to wait before
# the request may go (0 = taken now); a hold in force takes nothing and says how long it lasts.
_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local drain, size, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local hold = tonumber(redis.call('GET', KEYS[2]) or '0')
if cost > 0 and hold > now then return tostring(hold - now) end
local level = tonumber(redis.call('HGET', KEYS[1], 'level') or '0')
local ts = tonumber(redis.call('HGET', KEYS[1], 'ts') or tostring(now))
level = math.max(0, level - (now - ts) * drain)
if ARGV[4] == '1' then level = size end
local wait = 0
if level + cost <= size then level = level + cost else wait = (level + cost - size) / drain end
redis.call('HSET', KEYS[1], 'level', tostring(level), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(size / drain) + 60)
return tostring(wait)
"""


# KEYS[1] the key's next free send time; ARGV: seconds between sends, longest wait to book.
# Returns {1, wait} with the slot booked, or {0, wait} (nothing booked: it is too far off).
_PACE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local interval, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2])
local at = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'))
local wait = at - now
if wait > max_wait then return {0, tostring(wait)} end
local keep_ms = math.ceil((wait + interval) * 1000) + 60000
redis.call('SET', KEYS[1], tostring(at + interval), 'PX', keep_ms)
return {1, tostring(wait)}
"""


# KEYS[1] hold; ARGV: seconds. No request of the key goes for that long (Redis time).
_HOLD_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('SET', KEYS[1], tostring(now + tonumber(ARGV[1])), 'PX', math.ceil(ARGV[1] * 1000))
"""


@dataclass(frozen=True)
class Reservation:
    booked: bool  # True: a send slot is ours, `wait` seconds from now
    wait: float  # seconds until the slot (or, not booked, until the next free one)


class RedisLimiter:
    def __init__(self, url: str):
        import redis

        self._client = redis.Redis.from_url(url)
        self._script = self._client.register_script(_LUA)
        self._pace = self._client.register_script(_PACE_LUA)
        self._hold = self._client.register_script(_HOLD_LUA)

    def reserve(self, key: str, interval_s: float, max_wait_s: float) -> Reservation:
        booked, wait = self._pace(keys=[f"b24:pace:{key}"], args=[interval_s, max_wait_s])
        return Reservation(bool(int(booked)), float(wait))

    def _run(self, key: str, bucket: Bucket, cost: int, fill: bool) -> float:
        args = [bucket.drain_per_s, bucket.size, cost, "1" if fill else "0"]
        return float(self._script(keys=[f"b24:bucket:{key}", f"b24:hold:{key}"], args=args))

    def hold(self, key: str, seconds: float) -> None:
        self._hold(keys=[f"b24:hold:{key}"], args=[seconds])

    def try_take(self, key: str, bucket: Bucket) -> float:
        return self._run(key, bucket, 1, False)

    def mark_full(self, key: str, bucket: Bucket) -> None:
        self._run(key, bucket, 0, True)


class LocalLimiter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, float]] = {}
        self._next_free: dict[str, float] = {}
        self._holds: dict[str, float] = {}

    def reserve(self, key: str, interval_s: float, max_wait_s: float) -> Reservation:
        with self._lock:
            now = time.monotonic()
            at = max(now, self._next_free.get(key, 0.0))
            if at - now > max_wait_s:
                return Reservation(False, at - now)
            self._next_free[key] = at + interval_s
            return Reservation(True, at - now)

    def _run(self, key: str, bucket: Bucket, cost: int, fill: bool) -> float:
        with self._lock:
            now = time.monotonic()
            hold = self._holds.get(key, 0.0)
            if cost > 0 and hold > now:
                return hold - now
            level, ts = self._state.get(key, (0.0, now))
            level = max(0.0, level - (now - ts) * bucket.drain_per_s)
            if fill:
                level = float(bucket.size)
            wait = 0.0
            if level + cost <= bucket.size:
                level += cost
            else:
                wait = (level + cost - bucket.size) / bucket.drain_per_s
            self._state[key] = (level, now)
            return wait

    def try_take(self, key: str, bucket: Bucket) -> float:
        return self._run(key, bucket, 1, False)

    def mark_full(self, key: str, bucket: Bucket) -> None:
        self._run(key, bucket, 0, True)

    def hold(self, key: str, seconds: float) -> None:
        with self._lock:
            self._holds[key] = time.monotonic() + seconds


@cache
def limiter() -> RedisLimiter | LocalLimiter:
    return RedisLimiter(settings.REDIS_URL) if settings.REDIS_URL else LocalLimiter()


def bucket_for(plan: str) -> Bucket:
    return PLAN_BUCKETS.get(plan, PLAN_BUCKETS["standard"]).safe()


def take(key: str, plan: str) -> float:
    """Take one request slot now; 0 = go, else the seconds until one is free (nothing taken).
    Callers never sleep on it in a worker: they schedule a run for later instead."""
    return limiter().try_take(key, bucket_for(plan))


def hold(key: str, seconds: float) -> None:
    """Let no request of `key` go for `seconds` (Bitrix24 seems down): take() answers with
    the time left, in the same round trip as the bucket."""
    if seconds > 0:
        limiter().hold(key, seconds)


def refused(key: str, plan: str) -> None:
    """Bitrix24 said QUERY_LIMIT_EXCEEDED: something else shares the bucket; assume it full."""
    limiter().mark_full(key, bucket_for(plan))


def reserve(key: str, per_second: float, max_wait_s: float) -> Reservation:
    """Book the next send slot of `key` at `per_second`, unless it is more than `max_wait_s`
    away. The caller sleeps `wait` and sends (booked), or tries again later (not booked)."""
    return limiter().reserve(key, 1.0 / per_second, max_wait_s)
