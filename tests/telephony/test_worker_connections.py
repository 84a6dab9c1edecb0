"""A worker keeps its PostgreSQL connection from task to task (issue: performance)."""

import pytest
from django.db import connection

from telephony.models import PbxEvent
from tests.conftest import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def worker_backends() -> set[tuple[int, str]]:
    """(pid, backend_start) of every other client session on the test database."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, backend_start::text FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        )
        return set(cursor.fetchall())


def test_a_worker_reuses_its_database_connection_across_tasks(pbx, start_worker):
    start_worker("reuse")
    pbx.deliver("call__appeared_inbound", entry="R0")
    wait_until(lambda: not PbxEvent.objects.filter(state="received").exists(), what="first event")
    first = worker_backends()
    assert first, "the worker closed its connection after the task"
    for n in range(1, 21):
        assert pbx.deliver("call__appeared_inbound", entry=f"R{n}").status_code == 200
    wait_until(lambda: not PbxEvent.objects.filter(state="received").exists(), what="20 events")
    assert PbxEvent.objects.filter(state="processed").count() == 21
    # The same sessions, none opened meanwhile: 0 connections opened per task.
    assert worker_backends() == first
