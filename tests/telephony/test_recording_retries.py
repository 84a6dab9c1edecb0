"""Recording downloads under failure: a permanent Mango refusal stops at once, temporary ones
are retried on a schedule kept in the database, and downloads whose Celery messages were lost
are resumed by the sweeper (real worker process, live Mango and Bitrix24 fakes)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from telephony import tasks
from telephony.models import Call, CallRecording
from telephony.providers.base import ProviderError
from telephony.providers.mango import Mango
from tests.conftest import wait_until
from tests.telephony.conftest import API_KEY

APPEARED, CONNECTED = "call__appeared_inbound", "call__connected"
ANSWERED = "summary__inbound_answered"
RECORDING_POST = "/vpbx/queries/recording/post"


def recording_posts(mango) -> int:
    return len([r for r in mango.requests if r.path == RECORDING_POST])


def pending_recording(call: Call, recording_id: str, **fields) -> CallRecording:
    """A recording record/added created, as if its Celery message had been lost."""
    return CallRecording.objects.create(call=call, recording_id=recording_id, **fields)


@pytest.mark.parametrize(
    ("result", "permanent"),
    [
        ("3320", False),  # recording not found: record/added may precede the file
        ("3102", True),  # wrong sign: retrying would get the product's API blocked
        ("3105", True),  # wrong api key
        ("3100", True),  # invalid parameters
        ("3300", True),  # object not found (not a recording)
        ("2240", False),  # insufficient funds: the customer can pay
        ("4001", True),  # command not supported
        ("4002", False),  # cannot be performed right now
        ("5001", False),  # Mango overloaded
        ("", False),  # no code at all (a proxy's error page)
    ],
)
def test_mango_result_codes_that_retrying_cannot_help(result, permanent):
    assert Mango.result_is_permanent(result) is permanent


def test_provider_error_is_temporary_unless_said_otherwise():
    assert ProviderError("Mango is overloaded").permanent is False
    assert ProviderError("wrong key", permanent=True).permanent is True


@pytest.mark.django_db
def test_a_permanent_mango_refusal_fails_the_recording_after_one_try(pbx):
    pbx.play(APPEARED, CONNECTED, ANSWERED)
    pbx.mango.recordings["rec-1"] = b"ID3data"
    pbx.connection.credentials = {"api_key": API_KEY, "api_salt": "not-the-salt"}
    pbx.connection.save()
    recording = pending_recording(Call.objects.get(), "rec-1")
    tasks.download_recording.apply(args=[recording.pk])  # eager: retries would run inline
    recording.refresh_from_db()
    assert (recording.state, recording.attempts) == ("failed", 1)
    assert "refused by Mango" in recording.error and "result 3102" in recording.error
    assert recording.next_attempt_at is None
    assert recording_posts(pbx.mango) == 1


@pytest.mark.django_db
def test_a_temporary_failure_books_the_next_try_in_the_database(pbx):
    pbx.play(APPEARED, CONNECTED, ANSWERED)
    recording = pending_recording(Call.objects.get(), "rec-late")
    before = timezone.now()
    delay = tasks._download_failed(recording.pk, 0, ProviderError("not available yet"))
    recording.refresh_from_db()
    assert (recording.state, recording.attempts) == ("pending", 1)
    assert 0 <= delay <= 30  # backoff from 30 s (full jitter), capped at an hour later on
    assert before <= recording.next_attempt_at <= timezone.now() + timedelta(seconds=30)
    # A duplicate of the same try (re-queued by the sweeper) does not start a second chain.
    assert tasks._download_failed(recording.pk, 0, ProviderError("not available yet")) is None
    assert CallRecording.objects.get(pk=recording.pk).attempts == 1


@pytest.mark.django_db
def test_the_last_try_fails_the_recording(pbx):
    pbx.play(APPEARED, CONNECTED, ANSWERED)
    last = tasks.DOWNLOAD_RETRIES
    recording = pending_recording(Call.objects.get(), "rec-late", attempts=last)
    assert tasks._download_failed(recording.pk, last, ProviderError("still 3320")) is None
    recording.refresh_from_db()
    assert (recording.state, recording.attempts, recording.error) == (
        "failed",
        last + 1,
        "still 3320",
    )


@pytest.mark.django_db
def test_the_sweeper_skips_downloads_that_are_not_overdue(pbx):
    pbx.play(APPEARED, CONNECTED, ANSWERED)
    call = Call.objects.get()
    pending_recording(call, "fresh")  # its first message is on its way
    pending_recording(call, "waiting", next_attempt_at=timezone.now() + timedelta(minutes=10))
    pending_recording(call, "done", state="attached")
    assert tasks.resume_recordings() == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_recordings_whose_messages_were_lost_are_downloaded_and_attached(pbx, start_worker):
    pbx.play(APPEARED, CONNECTED, ANSWERED)
    call = Call.objects.get()
    pbx.mango.recordings.update({"rec-1": b"ID3one", "rec-2": b"ID3two"})
    long_ago = timezone.now() - timedelta(minutes=10)
    # Never enqueued (the broker lost them): one due for its first try, one for a retry.
    first = pending_recording(call, "rec-1")
    CallRecording.objects.filter(pk=first.pk).update(updated_at=long_ago)
    retry = pending_recording(call, "rec-2", attempts=3, next_attempt_at=long_ago)
    start_worker()
    assert tasks.resume_recordings() == 2
    assert tasks.resume_recordings() == 0  # booked: not queued twice
    wait_until(
        lambda: set(CallRecording.objects.values_list("state", flat=True)) == {"attached"},
        timeout=30,
        what="recordings attached",
    )
    contents = sorted(r["content"] for r in pbx.remote.records[call.b24_call_id])
    assert contents == [b"ID3one", b"ID3two"]
    assert CallRecording.objects.get(pk=retry.pk).next_attempt_at is None
