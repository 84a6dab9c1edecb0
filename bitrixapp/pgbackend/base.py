"""Django's PostgreSQL backend, with a health check that costs no round trip.

With CONN_HEALTH_CHECKS Django checks a kept connection before the first statement of every
request (and of every Celery task: bitrixapp.celery recycles connections the same way) by
running `SELECT 1`: one more round trip on every webhook acknowledgement and every task, on
paths whose whole work is two or three statements.

An idle connection has nothing to read. A server that went away (restarted, crashed,
`pg_terminate_backend`, a proxy resetting the connection) closes the socket or sends its
error, and either makes the socket readable at once: only then is the `SELECT 1` run. A
connection cut without a word (a partition) passes the look, as it would often pass a
`SELECT 1` sent into the void only after a long timeout; its first real statement fails
(a 503 that the sender retries, a task that is retried) and Django closes it afterwards.
After an error in the request or task, the full check runs as before.
"""

import select

from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        if self.connection is None or self.connection.closed:
            return False
        if self.errors_occurred or _has_something_to_read(self.connection.fileno()):
            return super().is_usable()
        return True


def _has_something_to_read(fd: int) -> bool:
    # poll, not select: select() cannot watch descriptors above 1023.
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))
