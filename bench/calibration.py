"""A calibration figure recorded with every benchmark: how fast this machine is right now.

Times in BENCHMARKS.md depend on the machine and on whatever else shares its cores; these
two fixed workloads, measured just before each benchmark, let a reader compare runs:
a pure-Python CPU loop (the GIL-bound kind of work the app does) and `SELECT 1` round trips
to PostgreSQL (the cost of one statement, network and server included).
"""

import time

LOOP = 1_000_000
ROUND_TRIPS = 200


def cpu_loop_ms() -> float:
    started = time.perf_counter()
    total = 0
    for i in range(LOOP):
        total += i * i % 7
    return (time.perf_counter() - started) * 1000


def select_1_us() -> float:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")  # connected before the clock starts
        started = time.perf_counter()
        for _ in range(ROUND_TRIPS):
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return (time.perf_counter() - started) / ROUND_TRIPS * 1e6


def figure() -> str:
    """Best of three of each, as one table cell."""
    loop = min(cpu_loop_ms() for _ in range(3))
    select = min(select_1_us() for _ in range(3))
    return f"{LOOP:,}-step loop {loop:.0f} ms; SELECT 1 {select:.0f} µs"
