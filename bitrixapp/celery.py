"""The Celery app. Queues keep latencies apart:
`bitrix` (outbox dispatch), `calls`, `sms`, `recordings`, `default`."""

import gc
import os
from typing import Any

from celery import Celery, signals
from django.db import close_old_connections

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bitrixapp.settings")

app = Celery("bitrixapp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.task_prerun.connect
@signals.task_postrun.connect
def _recycle_database_connections(task: Any = None, **_: Any) -> None:
    """A worker keeps its database connection from task to task, as Django keeps it from
    request to request: closed only when older than CONN_MAX_AGE or broken (after an error).

    Celery's own Django fix-up would close it around every task (a new PostgreSQL backend,
    ~14 ms of server CPU, per task); CELERY_DB_REUSE_MAX in settings turns that off and this
    hook takes its place. A task run eagerly (`apply()`) is part of its caller's work and
    leaves the caller's connection alone, as the fix-up does."""
    if task is not None and getattr(task.request, "is_eager", False):
        return
    close_old_connections()


@signals.worker_ready.connect
@signals.worker_process_init.connect
def _freeze_loaded_objects(**_: Any) -> None:
    """Once a worker has loaded the app (the main process when it is ready, each pool process
    when it starts): move every object loaded so far out of the garbage collector's sight, as
    the web workers do (bitrixapp/gunicorn_conf.py). A full collection in the main process
    walked them all, 36-58 ms during which no task message was passed on to the pool."""
    gc.freeze()
