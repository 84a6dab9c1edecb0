"""Celery tasks of telephony. Queues: `calls` for call events and originates (latency),
`recordings` for downloads and uploads (bulk), so a slow recording never delays a card."""

import logging
from datetime import timedelta

from celery import shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from bitrixapp import rest
from bitrixapp.phones import digits
from telephony import alerts, engine, pipeline, providers
from telephony.engine import CallState
from telephony.models import Call, CallRecording
from telephony.providers.base import ProviderError

log = logging.getLogger(__name__)

# Mango's record/added may come before the file can be downloaded: retry with backoff from
# 30 s up to an hour between tries, for about 24 hours in all.
DOWNLOAD_RETRIES = 30
# The database, not the broker, knows when the next try is due (next_attempt_at): a try whose
# Celery message was lost (Redis data loss) or whose worker died is queued again by
# resume_recordings once it is RESUME_GRACE overdue. A running try books DOWNLOAD_LEASE.
DOWNLOAD_LEASE = timedelta(minutes=5)
RESUME_GRACE = timedelta(minutes=2)


@shared_task(ignore_result=True)
def originate(call_id: int, extension: str) -> None:
    """Ask the PBX to start a click-to-call or callback; a refusal finishes the CRM's call."""
    call = Call.objects.select_related("connection").get(pk=call_id)
    connection = call.connection
    number = digits(call.client_number_e164 or call.client_number)
    line = connection.lines.filter(line_number=call.line_number).values_list("number", flat=True)
    try:
        providers.get(connection.provider).originate(
            connection, extension, number, call.command_id, line_number=line.first() or ""
        )
    except ProviderError as exc:
        _originate_refused(call, extension, exc)
        return
    alerts.originate_worked(call)


def _originate_refused(call: Call, extension: str, exc: ProviderError) -> None:
    connection = call.connection
    connection.record_error(f"originate failed: {exc}")
    kind = alerts.REFUSED[call.origin]
    with transaction.atomic():
        locked = Call.objects.select_for_update().get(pk=call.pk)
        policy = pipeline.policy_of(connection)
        # A refused callback has no call in Bitrix24 yet: it is logged for the user whose
        # extension was to ring, so the client's request is not lost.
        state, intents = engine.originate_failed(
            CallState.from_json(locked.state),
            alerts.reason(call, kind, exc),
            policy,
            locked.call_key or locked.command_id,
            user=policy.user_of(extension),
        )
        locked.last_error = f"originate failed: {exc}"[:2000]
        pipeline.emit(locked, intents)
        pipeline.save_state(locked, state)
        alerts.originate_refused(locked, kind, exc, state.register_user)


@shared_task(bind=True, ignore_result=True, max_retries=None)  # the limit is attempts, below
def download_recording(self, recording_id: int) -> None:
    recording = (
        CallRecording.objects.select_related("call__connection")
        .filter(pk=recording_id, state=CallRecording.State.PENDING)
        .first()
    )
    if recording is None:
        return
    tried = recording.attempts
    CallRecording.objects.filter(pk=recording_id).update(
        next_attempt_at=timezone.now() + DOWNLOAD_LEASE
    )
    connection = recording.call.connection
    try:
        file = providers.get(connection.provider).fetch_recording(
            connection, recording.recording_id
        )
    except ProviderError as exc:
        delay = _download_failed(recording_id, tried, exc)
        if delay is None:
            return
        raise self.retry(exc=exc, countdown=delay) from exc
    _store_download(recording_id, file.filename, file.content)


def _download_failed(recording_id: int, tried: int, exc: ProviderError) -> float | None:
    """Record a failed try. Returns the delay before the next one, or None: a permanent
    refusal or the last try fails the recording, and a try that lost the race to a
    duplicate of itself (a re-queue by resume_recordings) leaves the retry to the winner."""
    attempts = tried + 1
    fields: dict = {"attempts": attempts, "error": str(exc)[:2000]}
    delay = get_exponential_backoff_interval(30, tried, 3600, full_jitter=True)
    give_up = exc.permanent or attempts > DOWNLOAD_RETRIES
    if give_up:
        fields.update(state=CallRecording.State.FAILED, next_attempt_at=None)
    else:
        fields["next_attempt_at"] = timezone.now() + timedelta(seconds=delay)
    won = CallRecording.objects.filter(
        pk=recording_id, state=CallRecording.State.PENDING, attempts=tried
    ).update(**fields)
    if give_up and won:
        log.warning("recording %s failed: %s", recording_id, exc)
        connection = CallRecording.objects.get(pk=recording_id).call.connection
        alerts.recording_failed(connection, str(exc))
    return delay if won and not give_up else None


@shared_task(ignore_result=True)
def resume_recordings() -> int:
    """Queue downloads whose next try is overdue: their Celery message was lost or their
    worker died. Each one queued is booked for DOWNLOAD_LEASE so it is not queued twice."""
    cutoff = timezone.now() - RESUME_GRACE
    overdue = Q(next_attempt_at__lt=cutoff) | Q(next_attempt_at=None, updated_at__lt=cutoff)
    due = list(
        CallRecording.objects.filter(overdue, state=CallRecording.State.PENDING).values_list(
            "id", flat=True
        )[:1000]
    )
    CallRecording.objects.filter(pk__in=due).update(next_attempt_at=timezone.now() + DOWNLOAD_LEASE)
    for recording_id in due:
        download_recording.delay(recording_id)
    if due:
        log.info("resume_recordings: %d download(s) queued again", len(due))
    return len(due)


def _store_download(recording_id: int, filename: str, content: bytes) -> None:
    with transaction.atomic():
        recording = CallRecording.objects.select_for_update().get(pk=recording_id)
        call = Call.objects.select_for_update().get(pk=recording.call_id)
        if recording.state != CallRecording.State.PENDING:
            return
        recording.content, recording.size, recording.filename = content, len(content), filename
        recording.state = CallRecording.State.DOWNLOADED
        recording.error = ""
        recording.next_attempt_at = None
        recording.save()
        pipeline.attach(call, recording)
        alerts.recording_downloaded(call.connection)


@shared_task(bind=True, ignore_result=True, max_retries=20)
def upload_recording(self, recording_id: int, url: str, field: str) -> None:
    recording = CallRecording.objects.get(pk=recording_id)
    if recording.state != CallRecording.State.DOWNLOADED:
        return
    try:
        rest.upload(url, field, recording.filename, bytes(recording.content))
    except rest.UploadFailed as exc:
        delay = get_exponential_backoff_interval(10, self.request.retries, 600, full_jitter=True)
        raise self.retry(exc=exc, countdown=delay) from exc
    CallRecording.objects.filter(pk=recording_id).update(
        state=CallRecording.State.ATTACHED, attached_at=timezone.now(), content=None
    )
