"""sms_send_rate: see bench/sms.py."""

from bench.sms import run_send_rate as run

__all__ = ["run"]
