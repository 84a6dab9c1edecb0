"""sms_memory: see bench/sms.py."""

from bench.sms import run_memory as run

__all__ = ["run"]
