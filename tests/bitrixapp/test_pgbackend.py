"""The kept-connection health check (bitrixapp.pgbackend): no round trip while the server is
there, the full check once the socket says something happened."""

import time

import pytest
from django.db import connection, connections

from bitrixapp.pgbackend.base import DatabaseWrapper

MARKER = "SELECT 42 AS the_last_statement_sent"


@pytest.fixture
def kept():
    """A second connection to the test database, as a web or worker process keeps one."""
    wrapper = DatabaseWrapper(dict(connection.settings_dict), alias="kept")
    with wrapper.cursor() as cursor:
        cursor.execute(MARKER)
    yield wrapper
    wrapper.close()


def _last_statement(pid: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # statistics are cached per transaction
        cursor.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone()[0]


def test_the_app_talks_to_postgresql_through_this_backend():
    assert isinstance(connections["default"], DatabaseWrapper)
    assert connection.settings_dict["CONN_HEALTH_CHECKS"]


@pytest.mark.django_db
def test_an_idle_connection_is_found_usable_without_a_statement(kept):
    pid = kept.connection.get_backend_pid()
    assert kept.is_usable()
    assert _last_statement(pid) == MARKER


@pytest.mark.django_db
def test_after_an_error_the_full_check_runs(kept):
    pid = kept.connection.get_backend_pid()
    kept.errors_occurred = True
    assert kept.is_usable()
    assert _last_statement(pid) == "SELECT 1"


@pytest.mark.django_db
def test_a_server_that_went_away_is_noticed_and_the_next_statement_reconnects(kept):
    pid = kept.connection.get_backend_pid()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    deadline = time.monotonic() + 5
    while kept.is_usable() and time.monotonic() < deadline:
        time.sleep(0.01)  # the backend exits a moment after the signal
    assert not kept.is_usable()

    kept.health_check_done = False
    kept.close_if_health_check_failed()  # what Django does before a request's first statement
    with kept.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    assert kept.connection.get_backend_pid() != pid
