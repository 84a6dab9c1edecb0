"""Benchmarks of the bridge against real PostgreSQL, Redis, Celery workers and gunicorn.

Run them with `make bench` (all) or `make bench BENCH_ARGS="drain latency"` (a subset);
`python -m bench --help` lists them. Each benchmark prints its figures beside the target
from the issue and PASS/MISS; the results table in BENCHMARKS.md is rewritten for the
benchmarks that ran. A MISS is a finding, not a failure: the exit code is non-zero only when
a benchmark crashes.

Everything runs on this machine against a dedicated `bench` database and Redis db 14:

* `drain`   - 1,000 queued commands for one portal, 2 worker processes, rate limit enforced.
* `latency` - an idle single command: enqueue -> the request arriving at Bitrix24 (the fake).
* `events`  - POST /bitrix/events/ throughput and latency under gunicorn.

The Bitrix24 side is the live fake from tests/fakes/bitrix24.py, run inside this process so
its request timestamps share our monotonic clock.
"""
