"""The benchmark environment: a dedicated database and Redis db, Django set up on them.

`configure()` must run before anything imports Django settings: it sets the TEST_* variables
that tests/settings.py reads, creates the `bench` database if needed, runs `django.setup()`
and the migrations, and flushes the bench Redis db. `reset_state()` empties the app's tables
and Redis between benchmarks so that each one starts from the same clean slate.
"""

import fcntl
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"  # logs go here as *.tmp (git-ignored)

# BENCH_DB_NAME / BENCH_REDIS_URL: another database and Redis db, so that two people can
# run benchmarks on one machine without emptying each other's tables.
DB_NAME = os.environ.get("BENCH_DB_NAME", "bench")
PG_SERVER = "postgres://postgres@127.0.0.1:5432"
DATABASE_URL = f"{PG_SERVER}/{DB_NAME}"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")

BENCH_ENV = {
    "DJANGO_SETTINGS_MODULE": "tests.settings",
    "TEST_DATABASE_URL": DATABASE_URL,
    "TEST_REDIS_URL": REDIS_URL,
    "LOG_LEVEL": "WARNING",
}

# The app's tables a benchmark fills; emptied between benchmarks (the bench db is ours alone).
APP_TABLES = ("bitrixapp_b24command", "bitrixapp_bitrixevent", "bitrixapp_portal")


def configure() -> None:
    """Point Django at the bench database and Redis, set it up and migrate."""
    _hold_the_bench_database()
    os.environ.update(BENCH_ENV)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    RESULTS_DIR.mkdir(exist_ok=True)
    ensure_database()

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)
    flush_redis()


_lock_file: Any = None  # open (and locked) for as long as this process lives


def _hold_the_bench_database() -> None:
    """One process at a time on a bench database: every benchmark empties the tables and
    Redis db of its run, so a second one beside it would wipe the first one's state mid-way
    (and both figures would be wrong)."""
    global _lock_file
    if _lock_file is not None:
        return
    path = Path(tempfile.gettempdir()) / f"b24-bench-{DB_NAME}.lock"
    lock_file = path.open("w")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.close()
        raise SystemExit(
            f"another benchmark process is using the database {DB_NAME!r}; wait for it, "
            "or give this one its own with BENCH_DB_NAME and BENCH_REDIS_URL"
        ) from None
    _lock_file = lock_file


def ensure_database() -> None:
    """CREATE DATABASE bench unless it exists (through the `test` maintenance connection)."""
    conn = _maintenance_connection()
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME])
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{DB_NAME}"')
    finally:
        conn.close()


def _maintenance_connection() -> Any:
    import psycopg2

    last_error: Exception | None = None
    for dbname in ("test", "postgres"):
        try:
            return psycopg2.connect(f"{PG_SERVER}/{dbname}")
        except psycopg2.OperationalError as exc:
            last_error = exc
    raise RuntimeError(f"cannot reach PostgreSQL at {PG_SERVER}: {last_error}")


def flush_redis() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


def reset_state() -> None:
    """Empty the app's tables and the bench Redis db (cache keys, limiter buckets, queues)."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(f"TRUNCATE {', '.join(APP_TABLES)} RESTART IDENTITY CASCADE")
    flush_redis()


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for worker / gunicorn processes: ours plus the bench settings."""
    return {**os.environ, **BENCH_ENV, "PYTHONPATH": str(ROOT), **extra}
