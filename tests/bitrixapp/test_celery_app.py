"""The Celery app's process hooks (bitrixapp/celery.py)."""

import gc

import pytest
from celery import signals

import bitrixapp.celery  # noqa: F401 - connects the hooks


@pytest.mark.parametrize("signal", [signals.worker_ready, signals.worker_process_init])
def test_a_ready_worker_process_freezes_what_it_loaded(signal):
    before = gc.get_freeze_count()
    try:
        signal.send(sender=None)
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()  # the test process goes on collecting as before
