"""A calibration figure recorded with every benchmark: how fast this machine is right now.

Times in BENCHMARKS.md depend on the machine and on whatever else shares its cores; these
fixed workloads, measured just before each benchmark, let a reader compare runs:
a pure-Python CPU loop (the GIL-bound kind of work the app does), `SELECT 1` round trips
to PostgreSQL back to back (the cost of one statement, network and server included), and
the same round trip after the machine has been idle for IDLE_S.

The last one is what the idle benchmarks (`latency`, the lone call of `hook_to_register`)
pay on every hop between processes: a process that has slept (and on a virtual machine the
virtual CPU it ran on) takes time to wake. On the 2-core VM of BENCHMARKS.md a round trip
took ~0.1 ms back to back and ~0.4 ms after 0.3 s of idle, for PostgreSQL and Redis alike;
an idle command crosses about fourteen such hops on its way to Bitrix24.
"""

import statistics
import time

LOOP = 1_000_000
ROUND_TRIPS = 200
IDLE_S, IDLE_ROUND_TRIPS = 0.25, 8


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


def select_1_after_idle_us() -> float:
    """The median of IDLE_ROUND_TRIPS `SELECT 1`s, each after IDLE_S of sleep."""
    from django.db import connection

    times = []
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        for _ in range(IDLE_ROUND_TRIPS):
            time.sleep(IDLE_S)
            started = time.perf_counter()
            cursor.execute("SELECT 1")
            cursor.fetchone()
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def figure() -> str:
    """Best of three of each steady figure, the median of the idle one, as one table cell."""
    loop = min(cpu_loop_ms() for _ in range(3))
    select = min(select_1_us() for _ in range(3))
    idle = select_1_after_idle_us()
    return (
        f"{LOOP:,}-step loop {loop:.0f} ms; SELECT 1 {select:.0f} µs "
        f"({idle:.0f} µs after {IDLE_S} s idle)"
    )
