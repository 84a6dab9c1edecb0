"""bitrixapp.bulk.bulk_update: one UPDATE ... FROM (VALUES ...) writes every field type the
app saves in bulk (JSON, text with quotes, NULLs, times, numbers) exactly as `save()` would."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from bitrixapp import bulk, outbox
from bitrixapp.models import B24Command

pytestmark = pytest.mark.django_db

FIELDS = ["state", "result", "error_description", "finished_at", "http_status", "context"]


def test_every_field_is_written_in_one_statement(make_portal):
    portal, _ = make_portal()
    commands = [outbox.enqueue(portal, "profile", {"n": i}) for i in range(3)]
    later = timezone.now() + timedelta(minutes=1)
    values = [
        ("done", {"ID": 1, "nested": ["a", {"b": None}]}, 'it\'s "quoted"; -- not SQL', later, 200),
        ("failed", None, "", None, None),
        ("done", [1, 2, 3], "юникод", later, 0),
    ]
    for command, (state, result, error, finished, status) in zip(commands, values, strict=True):
        command.state, command.result, command.error_description = state, result, error
        command.finished_at, command.http_status = finished, status
        command.context = {"call": command.pk}

    with CaptureQueriesContext(connection) as queries:
        bulk.bulk_update(commands, FIELDS)
    assert len(queries) == 1

    for command, (state, result, error, finished, status) in zip(commands, values, strict=True):
        stored = B24Command.objects.get(pk=command.pk)
        assert (stored.state, stored.result, stored.error_description) == (state, result, error)
        assert (stored.finished_at, stored.http_status) == (finished, status)
        assert stored.context == {"call": command.pk}
    bulk.bulk_update([], FIELDS)  # nothing to do is no statement and no error
