"""webhook_ack for MTT notifications (bench/webhook_ack_json.py)."""

from bench.report import BenchResult
from bench.webhook_ack_json import run_for


def run() -> BenchResult:
    return run_for("mtt")
