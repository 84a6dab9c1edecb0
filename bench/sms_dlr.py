"""sms_dlr: see bench/sms.py."""

from bench.sms import run_dlr as run

__all__ = ["run"]
