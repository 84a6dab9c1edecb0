"""Celery tasks of telephony. Queues: `calls` for call events and originates (latency),
`recordings` for downloads and uploads (bulk), so a slow recording never delays a card."""

import logging

from celery import shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from bitrixapp import rest
from bitrixapp.phones import digits
from telephony import engine, pipeline, providers
from telephony.engine import CallState
from telephony.models import Call, CallRecording
from telephony.providers.base import ProviderError

log = logging.getLogger(__name__)

# Mango's record/added may come before the file can be downloaded: retry with backoff from
# 30 s up to an hour between tries, for about 24 hours in all.
DOWNLOAD_RETRIES = 30


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
        connection.record_error(f"originate failed: {exc}")
        with transaction.atomic():
            locked = Call.objects.select_for_update().get(pk=call_id)
            policy = pipeline.policy_of(connection)
            # A refused callback has no call in Bitrix24 yet: it is logged for the user whose
            # extension was to ring, so the client's request is not lost.
            state, intents = engine.originate_failed(
                CallState.from_json(locked.state),
                str(exc),
                policy,
                locked.call_key or locked.command_id,
                user=policy.user_of(extension),
            )
            locked.last_error = f"originate failed: {exc}"[:2000]
            pipeline.emit(locked, intents)
            pipeline.save_state(locked, state)


@shared_task(bind=True, ignore_result=True, max_retries=DOWNLOAD_RETRIES)
def download_recording(self, recording_id: int) -> None:
    recording = CallRecording.objects.select_related("call__connection").get(pk=recording_id)
    if recording.state != CallRecording.State.PENDING:
        return
    connection = recording.call.connection
    try:
        file = providers.get(connection.provider).fetch_recording(
            connection, recording.recording_id
        )
    except ProviderError as exc:
        CallRecording.objects.filter(pk=recording_id).update(
            attempts=F("attempts") + 1, error=str(exc)[:2000]
        )
        if self.request.retries >= DOWNLOAD_RETRIES:
            CallRecording.objects.filter(pk=recording_id).update(state=CallRecording.State.FAILED)
            return
        delay = get_exponential_backoff_interval(30, self.request.retries, 3600, full_jitter=True)
        raise self.retry(exc=exc, countdown=delay) from exc
    _store_download(recording_id, file.filename, file.content)


def _store_download(recording_id: int, filename: str, content: bytes) -> None:
    with transaction.atomic():
        recording = CallRecording.objects.select_for_update().get(pk=recording_id)
        call = Call.objects.select_for_update().get(pk=recording.call_id)
        if recording.state != CallRecording.State.PENDING:
            return
        recording.content, recording.size, recording.filename = content, len(content), filename
        recording.state = CallRecording.State.DOWNLOADED
        recording.error = ""
        recording.save()
        pipeline.attach(call, recording)


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
