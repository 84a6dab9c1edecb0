"""From a stored PBX event to Bitrix24 commands: lock the call, run the engine, emit intents.

Events of one call are applied one at a time under the Call row lock; different calls run
in parallel. The engine's intents become outbox commands in the call's own ordered lane
(`call:<pk>`), so register always goes before show/hide/finish, and finish before
attachRecord.
"""

import base64
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from django.utils import timezone

from bitrixapp import bulk, inbox, jobs, outbox, prepared
from bitrixapp.models import B24Command, Portal
from bitrixapp.phones import digits, to_e164
from telephony import alerts, engine, providers
from telephony.engine import CallState, Policy
from telephony.models import Call, CallRecording, PbxConnection, PbxEvent
from telephony.providers.base import CallEvent, Kind, Provider, Webhook, WebhookRejected

log = logging.getLogger(__name__)

# Recordings up to this size go inline (FILE_CONTENT, base64); larger ones use the upload
# URL mode so that no request body gets near Bitrix24's 60 s limit.
INLINE_RECORDING_BYTES = 512 * 1024


# ---------------------------------------------------------------- policy

# connection pk -> (version, policy). The version is the connection's updated_at, which every
# save of the connection and of its lines and extensions moves (telephony.models signals),
# so an admin or config change takes effect with the next event; per event it costs nothing.
_POLICIES: dict[int, tuple[tuple[Any, ...], Policy]] = {}


def policy_of(connection: PbxConnection) -> Policy:
    """The engine's view of the connection's settings, read from the database only when they
    changed since it was last read."""
    version = (connection.updated_at, connection.provider)
    cached = _POLICIES.get(connection.pk)
    if cached is not None and cached[0] == version:
        return cached[1]
    policy = _load_policy(connection)
    _POLICIES[connection.pk] = (version, policy)
    return policy


def _load_policy(connection: PbxConnection) -> Policy:
    return Policy(
        external_id_prefix=connection.webhook_uuid.hex[:12],
        default_user=connection.default_user_id,
        show_card=connection.show_card,
        crm_create=connection.crm_create,
        min_talk_s=connection.missed_call_min_duration_s,
        users={e.extension: e.user_id for e in connection.extensions.all()},
        lines={digits(line.number): line.line_number for line in connection.lines.all()},
        default_line=connection.default_line_number,
        log_internal=connection.log_internal_calls,
        only_mapped_lines=connection.only_mapped_lines,
        sends_summary=providers.get(connection.provider).sends_summary,
        route_to_responsible=connection.route_to_responsible,
    )


# ---------------------------------------------------------------- processing stored events

# How the inbox loads stored events: with their connection and portal, in one query; of
# the portal not its tokens: the worker never needs them to turn events into commands (the
# dispatcher loads the portal itself), and each one loaded is a Fernet decrypt.
EVENT_RELATED = ("connection", "connection__portal")
PORTAL_SECRETS = tuple(f"connection__portal__{name}" for name in Portal.SECRETS)


def handle(row: PbxEvent) -> str:
    """The inbox handler of PBX webhooks: parse the stored request and apply its events.

    Runs under the row's lock; applying an event the engine has seen already changes nothing,
    so "process again" is safe."""
    connection = _live_connection(row)
    events = parse_stored(row, providers.get(connection.provider))
    row.events = [e.to_json() for e in events]
    relevant = [e for e in events if e.kind is not Kind.UNKNOWN and e.call_key]
    for event in relevant:
        row.call = apply_event(connection, event)
    return PbxEvent.State.PROCESSED if relevant else PbxEvent.State.IGNORED


def _live_connection(row: PbxEvent) -> PbxConnection:
    connection = row.connection
    if connection.portal.status == Portal.Status.UNINSTALLED:
        # A portal that needs re-auth still gets its calls: the outbox holds the commands
        # until access comes back. An uninstalled one gets nothing.
        raise inbox.Ignored("portal uninstalled the app")
    return connection


def handle_batch(rows: list[PbxEvent]) -> dict[int, str | Exception]:
    """The inbox's batch handler: the waiting events of one connection (a burst), in id order,
    in one transaction. The same outcome per row as `handle`, with the calls of the batch
    created and locked in two statements and saved in one."""
    try:
        connection = _live_connection(rows[0])
    except inbox.Ignored as exc:
        return {row.pk: exc for row in rows}
    provider = providers.get(connection.provider)
    outcomes: dict[int, str | Exception] = {}
    parsed: list[tuple[PbxEvent, list[CallEvent]]] = []
    for row in rows:
        try:
            events = parse_stored(row, provider)
        except inbox.Rejected as exc:
            outcomes[row.pk] = exc
            continue
        row.events = [e.to_json() for e in events]
        parsed.append((row, [e for e in events if e.kind is not Kind.UNKNOWN and e.call_key]))
    applied = [e for _, events in parsed for e in events]
    calls = _lock_calls(connection, applied)
    policy = policy_of(connection)
    with _commands_together(applied):
        for row, events in parsed:
            for event in events:
                row.call = _apply(connection, _call_of(calls, connection, event), event, policy)
            outcomes[row.pk] = PbxEvent.State.PROCESSED if events else PbxEvent.State.IGNORED
    _save_calls(calls.values())
    return outcomes


def _commands_together(events: list[CallEvent]) -> contextlib.AbstractContextManager:
    """One INSERT for the commands of a batch's events (outbox.inserted_together), which needs
    every call locked before the first command: a call found by its command id (click-to-call)
    is locked on the way, so such a batch inserts as it goes. So does a lone event, for which
    drawing ids ahead would be one more statement, not one less."""
    if len(events) < 2 or any(e.command_id for e in events):
        return contextlib.nullcontext()
    return outbox.inserted_together(len(events))


def _lock_calls(connection: PbxConnection, events: list[CallEvent]) -> dict[str, Call]:
    """The calls of these events, created where new and locked, by call key. Events of a
    call we started (with a command id) are left to `_locked_call`: their call may not have
    its key yet."""
    started = {e.call_key for e in events if e.command_id}
    keys = sorted({e.call_key for e in events} - started)
    if not keys:
        return {}
    # New calls (a burst's ringing events) are inserted, and so held, in one statement; only
    # the calls that existed already are then locked.
    new = prepared.insert_new(
        [Call(connection=connection, portal_id=connection.portal_id, call_key=k) for k in keys],
        key="call_key",
    )
    found = {call.call_key: call for call in new}
    older = [k for k in keys if k not in found]
    if older:
        calls = Call.objects.select_for_update().filter(connection=connection, call_key__in=older)
        found.update((call.call_key, call) for call in calls.order_by("pk"))
    return {key: _with(call, connection) for key, call in found.items()}


def _call_of(calls: dict[str, Call], connection: PbxConnection, event: CallEvent) -> Call:
    """The batch's one object for the event's call (a click-to-call's first event finds its
    call by command id); later events of the call see the state the earlier ones left."""
    call = calls.get(event.call_key)
    if call is None:
        call = _locked_call(connection, event)
        call = next((c for c in calls.values() if c.pk == call.pk), call)
        calls[event.call_key] = call
    return call


def _save_calls(calls: Iterable[Call]) -> None:
    calls = list({call.pk: call for call in calls}.values())
    now = timezone.now()
    for call in calls:
        call.updated_at = now
    fields = [f.name for f in Call._meta.concrete_fields if not f.primary_key]
    bulk.bulk_update(calls, fields)


def parse_stored(row: PbxEvent, provider: Provider) -> list[CallEvent]:
    """The stored request (secrets masked, verified when it came in) parsed anew."""
    webhook = Webhook(
        row.source, row.body.encode(), row.content_type, query=row.query, headers=row.headers
    )
    try:
        return provider.parse(webhook)
    except WebhookRejected as exc:
        raise inbox.Rejected(f"{exc.field}: {exc.detail}" if exc.field else exc.detail) from exc


def apply_event(connection: PbxConnection, event: CallEvent) -> Call:
    call = _locked_call(connection, event)
    _apply(connection, call, event, policy_of(connection))
    call.save()
    return call


def _apply(connection: PbxConnection, call: Call, event: CallEvent, policy: Policy) -> Call:
    """Run the engine on the call (in memory) and queue its commands; the caller saves."""
    previous = CallState.from_json(call.state)
    # An unmapped extension counts once per call, not once per event of the call.
    seen_before = {leg.extension for leg in previous.legs.values()}
    state, intents = engine.apply(previous, event, policy, time.time(), call.call_key)
    emit(call, intents)
    set_state(call, state)
    if event.extension not in seen_before:
        alerts.extension_seen(connection, event, policy.users)
    return call


def _locked_call(connection: PbxConnection, event: CallEvent) -> Call:
    """The call this event belongs to, locked: a click-to-call we started (by command_id),
    or the call of this provider key (created on its first event). The lock comes first: a
    call's later events cost one statement here."""
    if event.command_id:
        started = (
            Call.objects.select_for_update()
            .filter(connection=connection, command_id=event.command_id)
            .first()
        )
        if started is not None:
            if not started.call_key:
                started.call_key = event.call_key
                started.save(update_fields=["call_key", "updated_at"])
            return _with(started, connection)
    mine = Call.objects.select_for_update().filter(connection=connection, call_key=event.call_key)
    call = mine.first()
    if call is None:
        # Created here, or a moment ago by a parallel event of the same call (then this
        # insert does nothing, and the lock below waits for that event's transaction).
        Call.objects.bulk_create(
            [Call(connection=connection, portal_id=connection.portal_id, call_key=event.call_key)],
            ignore_conflicts=True,
        )
        call = mine.get()
    return _with(call, connection)


def _with(call: Call, connection: PbxConnection) -> Call:
    """The call with the connection and portal already loaded (no lazy query per event)."""
    call.connection = connection
    call.portal = connection.portal
    return call


def save_state(call: Call, state: CallState) -> None:
    set_state(call, state)
    call.save()


def set_state(call: Call, state: CallState) -> None:
    call.state = state.to_json()
    call.direction = state.direction
    call.client_number = state.client_number
    call.client_number_e164 = to_e164(state.client_number)
    call.line_number = state.line_number
    call.answered_user_id = state.answered_user
    call.status_code = state.status_code
    call.duration = state.duration
    call.phase = _phase(state)
    call.last_error = state.problem or call.last_error
    if state.started_at and not call.started_at:
        call.started_at = _aware(state.started_at)
    if state.finished and not call.ended_at:
        call.ended_at = timezone.now()


def _phase(state: CallState) -> str:
    if state.ignored:
        return "ignored"
    if state.finished:
        return "finished"
    return "answered" if state.answered_user else "ringing"


def _aware(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


# ---------------------------------------------------------------- intents -> commands


def emit(call: Call, intents: list[engine.Intent]) -> None:
    for intent in intents:
        EMITTERS[type(intent)](call, intent)


def _call_id_params(call: Call) -> tuple[dict[str, Any], B24Command | None]:
    """CALL_ID as a value once Bitrix24 gave it, else a reference to the register command."""
    if call.b24_call_id:
        return {"CALL_ID": call.b24_call_id}, None
    return {"CALL_ID": outbox.ref(call.register_command, "CALL_ID")}, call.register_command


def _enqueue(call: Call, method: str, params: dict, handler: str = "") -> B24Command:
    base, depends_on = _call_id_params(call)
    return outbox.enqueue(
        call.portal,
        method,
        {**base, **params},
        owner_key=call.owner_key,
        depends_on=depends_on,
        handler=handler,
        context=call.command_context,
    )


def _register(call: Call, intent: engine.Register) -> None:
    params = {
        "USER_ID": intent.user_id,
        "PHONE_NUMBER": to_e164(intent.phone) or intent.phone,
        "TYPE": intent.call_type,
        "SHOW": int(intent.show),
        "CRM_CREATE": int(intent.crm_create),
        "EXTERNAL_CALL_ID": intent.external_call_id,
    }
    if intent.start:
        params["CALL_START_DATE"] = intent.start
    if intent.line_number:
        params["LINE_NUMBER"] = intent.line_number
    call.register_command = outbox.enqueue(
        call.portal,
        "telephony.externalCall.register",
        params,
        owner_key=call.owner_key,
        handler="telephony.registered",
        context=call.command_context,
    )


def _show(call: Call, intent: engine.Show) -> None:
    _enqueue(call, "telephony.externalCall.show", {"USER_ID": list(intent.users)})


def _hide(call: Call, intent: engine.Hide) -> None:
    _enqueue(call, "telephony.externalCall.hide", {"USER_ID": list(intent.users)})


def _finish(call: Call, intent: engine.Finish) -> None:
    params: dict[str, Any] = {
        "USER_ID": intent.user_id,
        "DURATION": intent.duration,
        "STATUS_CODE": intent.status_code,
    }
    if intent.reason:
        params["FAILED_REASON"] = intent.reason
    call.finish_command = _enqueue(call, "telephony.externalCall.finish", params)
    for recording in call.recordings.filter(state=CallRecording.State.DOWNLOADED):
        attach(call, recording)  # downloaded before the call ended: attach after finish


def _fetch_recording(call: Call, intent: engine.FetchRecording) -> None:
    recording, created = CallRecording.objects.get_or_create(
        call=call, recording_id=intent.recording_id
    )
    if created:
        jobs.after_commit("telephony.tasks.download_recording", recording.pk)


def _find_responsible(call: Call, intent: engine.FindResponsible) -> None:
    outbox.enqueue(
        call.portal,
        "telephony.externalCall.searchCrmEntities",
        {"PHONE_NUMBER": to_e164(intent.phone) or intent.phone},
        owner_key=f"{call.owner_key}:crm",
        handler="telephony.responsible",
        context=call.command_context,
    )


EMITTERS: dict[type, Callable[[Call, Any], None]] = {
    engine.Register: _register,
    engine.Show: _show,
    engine.Hide: _hide,
    engine.Finish: _finish,
    engine.FetchRecording: _fetch_recording,
    engine.FindResponsible: _find_responsible,
}


# ---------------------------------------------------------------- recordings


def attach(call: Call, recording: CallRecording) -> None:
    """attachRecord after finish: inline for small files, upload URL mode for large ones."""
    if call.finish_command is None:
        return  # the finish emitter attaches it
    params: dict[str, Any] = {"FILENAME": recording.filename}
    inline = (recording.size or 0) <= INLINE_RECORDING_BYTES
    if inline:
        params["FILE_CONTENT"] = base64.b64encode(bytes(recording.content)).decode()
    base, _ = _call_id_params(call)
    recording.attach_command = outbox.enqueue(
        call.portal,
        "telephony.externalCall.attachRecord",
        {**base, **params},
        owner_key=call.owner_key,
        depends_on=call.finish_command,
        handler="telephony.recording_attached" if inline else "telephony.recording_upload",
        context=call.command_context,
    )
    recording.save(update_fields=["attach_command"])
