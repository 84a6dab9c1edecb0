"""`python -m bench [name ...]`: run all benchmarks or the named ones, then update BENCHMARKS.md.

Exit code: 0 when every selected benchmark ran (PASS or MISS alike), 1 when one crashed
(the others still run, and the results of those that finished are still written).
"""

import argparse
import importlib
import os
import sys
import time
import traceback

from bench import env

# Name -> module (imported only after Django is set up); this order is the report's order.
BENCHMARKS = {
    "drain": "bench.drain",
    "latency": "bench.latency",
    "events": "bench.events",
    "webhook_ack": "bench.webhook_ack",
    "webhook_ack_mtt": "bench.webhook_ack_mtt",
    "webhook_ack_generic": "bench.webhook_ack_generic",
    "hook_to_register": "bench.hook_to_register",
    "backfill": "bench.backfill",
    "sms_send_rate": "bench.sms_send_rate",
    "sms_dlr": "bench.sms_dlr",
    "sms_memory": "bench.sms_memory",
    "call_cost": "bench.call_cost",
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Run the bridge's benchmarks (see BENCHMARKS.md)."
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="name",
        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print the figures only, leave BENCHMARKS.md"
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    names = list(dict.fromkeys(args.names)) or list(BENCHMARKS)
    env.configure()
    from bench import calibration
    from bench.report import BenchResult, print_result, update_markdown

    results: list[BenchResult] = []
    crashed: list[str] = []
    for name in names:
        started, load = time.monotonic(), os.getloadavg()[0]
        print(f"\n-- running {name} (1-min load average {load:.2f}) ...", flush=True)
        try:
            calibrated = calibration.figure()
            result = importlib.import_module(BENCHMARKS[name]).run()
        except Exception:
            traceback.print_exc()
            crashed.append(name)
            continue
        finally:
            env.reset_state()
        result.notes.append(f"1-minute load average when it started: {load:.2f}.")
        result.add("calibration, just before (bench/calibration.py)", calibrated)
        print_result(result)
        print(f"  ({time.monotonic() - started:.0f} s)", flush=True)
        results.append(result)
    if results and not args.no_write:
        print(f"\nresults written to {update_markdown(results, list(BENCHMARKS))}")
    if crashed:
        print(f"crashed: {', '.join(crashed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
