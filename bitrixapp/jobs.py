"""The one way to queue background work: a Celery task by name, once the transaction commits.

By name, so that no module has to import a tasks module to queue its work (no import cycles
between views, pipelines and tasks). After commit, so that a worker never looks for a row that
is not visible yet. Robust, so that a broker outage never turns committed rows into a 500: the
sweepers find the rows and queue them again.
"""

import logging
from typing import Any

from celery import current_app
from django.db import transaction

log = logging.getLogger(__name__)


def after_commit(
    task: str, *args: Any, queue: str | None = None, countdown: float | None = None
) -> None:
    """Send `task` (a registered Celery task name) with `args` when the transaction commits;
    at once when there is no transaction."""

    def send() -> None:
        options: dict[str, Any] = {}
        if queue:
            options["queue"] = queue
        if countdown:
            options["countdown"] = countdown
        current_app.send_task(task, args=list(args), **options)

    transaction.on_commit(send, robust=True)


def now(task: str, *args: Any, queue: str | None = None) -> bool:
    """Send `task` right away, outside any transaction's fate; False if the broker refused
    (the caller's rows are the record, a sweeper sends it later)."""
    try:
        current_app.send_task(task, args=list(args), **({"queue": queue} if queue else {}))
    except Exception:
        log.exception("could not queue %s%r; a sweeper will", task, args)
        return False
    return True
