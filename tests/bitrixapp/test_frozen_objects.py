"""Every long-lived process freezes what it loaded (gc.freeze), so that a full garbage
collection does not walk it: bitrixapp/gunicorn_conf.py and bitrixapp/celery.py."""

import gc
from collections.abc import Callable

import pytest
from celery import signals

import bitrixapp.celery  # noqa: F401 - connects the worker hooks
from bitrixapp import gunicorn_conf

STARTS: dict[str, Callable[[], object]] = {
    "web worker": lambda: gunicorn_conf.post_worker_init(worker=None),
    "Celery worker, main process": lambda: signals.worker_ready.send(sender=None),
    "Celery worker, pool process": lambda: signals.worker_process_init.send(sender=None),
}


@pytest.mark.parametrize("process", STARTS)
def test_a_started_process_freezes_what_it_loaded(process):
    before = gc.get_freeze_count()
    try:
        STARTS[process]()
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()  # the test process goes on collecting as before
