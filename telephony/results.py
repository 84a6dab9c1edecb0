"""What telephony does with Bitrix24's answers (outbox result handlers)."""

from django.db.models import Case, Value, When
from django.utils import timezone

from bitrixapp import jobs
from bitrixapp.models import B24Command
from bitrixapp.outbox import result_handler
from telephony import bitrix_events, engine, pipeline
from telephony.engine import CallState
from telephony.models import Call, CallRecording

DONE = B24Command.State.DONE


@result_handler("telephony.registered", many=True)
def _registered(commands: list[B24Command]) -> None:
    """Register commands answered: each call keeps its Bitrix24 CALL_ID (one UPDATE for a
    whole batch), or the reason it could not be registered."""
    call_ids = {
        c.pk: str(c.result.get("CALL_ID") or "")
        for c in commands
        if c.state == DONE and isinstance(c.result, dict)
    }
    if call_ids:
        # Lock the calls in id order first, the order a burst of call events locks them in:
        # one UPDATE locking 50 rows in whatever order it meets them can deadlock with it.
        calls = Call.objects.filter(register_command_id__in=call_ids)
        locked = list(calls.select_for_update().order_by("pk").values_list("pk", flat=True))
        Call.objects.filter(pk__in=locked).update(
            b24_call_id=Case(
                *[When(register_command_id=pk, then=Value(v)) for pk, v in call_ids.items()]
            )
        )
    for command in commands:
        if command.pk not in call_ids:
            _register_failed(command)


def _register_failed(command: B24Command) -> None:
    call = Call.objects.select_related("connection").filter(register_command=command).first()
    if call is None:
        return
    reason = f"register failed: {command.error_code} {command.error_description}"
    Call.objects.filter(pk=call.pk).update(last_error=reason[:2000])
    call.connection.record_error(reason)


@result_handler("telephony.responsible")
def _responsible(command: B24Command) -> None:
    """searchCrmEntities answered (or failed): register the call for the owner, or without;
    for a CRM callback request, ring the owner's extension (or the next in line)."""
    owner = None
    if command.state == DONE and isinstance(command.result, list) and command.result:
        owner = command.result[0].get("ASSIGNED_BY_ID")
    call = (
        Call.objects.select_for_update()
        .select_related("connection")
        .get(pk=command.context["call"])
    )
    if call.origin == Call.Origin.CALLBACK:
        bitrix_events.ring_callback(call, int(owner) if owner else None)
        return
    state, intents = engine.responsible_found(
        CallState.from_json(call.state),
        int(owner) if owner else None,
        pipeline.policy_of(call.connection),
        call.call_key,
    )
    pipeline.emit(call, intents)
    pipeline.save_state(call, state)


@result_handler("telephony.recording_attached")
def _attached(command: B24Command) -> None:
    recording = CallRecording.objects.filter(attach_command=command).first()
    if recording is None:
        return
    if command.state == DONE:
        recording.state, recording.attached_at, recording.content = (
            CallRecording.State.ATTACHED,
            timezone.now(),
            None,
        )
    else:
        recording.state = CallRecording.State.FAILED
        recording.error = f"{command.error_code} {command.error_description}"[:2000]
    recording.save()


@result_handler("telephony.recording_upload")
def _upload(command: B24Command) -> None:
    """Upload mode: Bitrix24 gave an upload URL; a worker sends the file there."""
    recording = CallRecording.objects.filter(attach_command=command).first()
    if recording is None:
        return
    result = command.result if isinstance(command.result, dict) else {}
    if command.state != DONE or not result.get("uploadUrl"):
        recording.state = CallRecording.State.FAILED
        recording.error = f"{command.error_code} {command.error_description}"[:2000]
        recording.save()
        return
    url, field = str(result["uploadUrl"]), str(result.get("fieldName") or "file")
    jobs.after_commit("telephony.tasks.upload_recording", recording.pk, url, field)
