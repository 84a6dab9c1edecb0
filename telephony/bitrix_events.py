"""Bitrix24 events telephony acts on: click-to-call and the CRM callback form."""

import uuid
from typing import Any

from bitrixapp import inbox, jobs, outbox, problems
from bitrixapp.events import event_handler
from bitrixapp.models import BitrixEvent, Portal
from bitrixapp.phones import digits, to_e164
from telephony import engine, pipeline
from telephony.engine import CallState
from telephony.models import Call, PbxConnection, PbxExtension

ORIGINATE = "telephony.tasks.originate"


class NoRoute(inbox.Permanent):
    """Nothing to place the call with; the message says what to configure."""


def connection_for_line(portal: Portal, line_number: str) -> PbxConnection | None:
    """The connection owning the line Bitrix24 chose, else the portal's first active one."""
    active = PbxConnection.objects.filter(portal=portal, is_active=True).order_by("id")
    wanted = digits(line_number)
    for connection in active:
        for line in connection.lines.all():
            if line_number in (line.line_number, line.number) or (
                wanted and wanted == digits(line.number)
            ):
                return connection
    return active.first()


def extension_of(connection: PbxConnection, user_id: int | None) -> str:
    found = PbxExtension.objects.filter(connection=connection, user_id=user_id).order_by(
        "-source",
        "extension",  # "manual" sorts after "bitrix": admin rows first
    )
    return found.values_list("extension", flat=True).first() or ""


def _data(event: BitrixEvent) -> dict[str, Any]:
    data = event.payload.get("data")
    return data if isinstance(data, dict) else {}


@event_handler("ONEXTERNALCALLSTART")
def click_to_call(event: BitrixEvent) -> None:
    """A click on a number in the CRM: Bitrix24 registered the call already (CALL_ID)."""
    data = _data(event)
    call_id, phone = str(data.get("CALL_ID") or ""), str(data.get("PHONE_NUMBER") or "")
    user_id = int(data.get("USER_ID") or 0)
    if not call_id or not user_id:
        raise NoRoute("ONEXTERNALCALLSTART without CALL_ID or USER_ID")
    if Call.objects.filter(portal=event.portal, b24_call_id=call_id).exists():
        return  # the same click delivered twice
    line = str(data.get("LINE_NUMBER") or "")
    connection = connection_for_line(event.portal, line)
    if connection is None:
        _finish_unplaceable(event.portal, call_id, user_id, phone)
        return
    state = engine.click_to_call(call_id, user_id, phone, line)
    call = _new_call(connection, Call.Origin.CLICK_TO_CALL, state, b24_call_id=call_id)
    extension = str(data.get("EXTENSION") or "") or extension_of(connection, user_id)
    if not extension:
        params = {"line": connection.line_name(line), "connection": connection.name}
        reason = problems.user_message(event.portal, "click_no_extension", **params)
        state, intents = engine.originate_failed(state, reason)
        pipeline.emit(call, intents)
        pipeline.save_state(call, state)
        problems.report(
            event.portal,
            "click_no_extension",
            f"connection:{connection.pk}:user:{user_id}",
            notify_user=user_id,
            fix_url=connection.admin_path,
            user_id=user_id,
            **params,
        )
        return
    jobs.after_commit(ORIGINATE, call.pk, extension)


def _finish_unplaceable(portal: Portal, call_id: str, user_id: int, phone: str) -> None:
    """No PBX connection at all: no Call row can exist, so the CRM's call is finished here
    (as failed, with the reason in the portal's language) and the user and admins told."""
    reason = problems.user_message(portal, "click_no_connection", phone=phone)
    outbox.enqueue(
        portal,
        "telephony.externalCall.finish",
        {
            "CALL_ID": call_id,
            "USER_ID": user_id,
            "DURATION": 0,
            "STATUS_CODE": engine.FAILED,
            "FAILED_REASON": reason[:250],
        },
        owner_key=f"click:{call_id}"[:100],
    )
    problems.report(portal, "click_no_connection", "portal", notify_user=user_id, phone=phone)


@event_handler("ONEXTERNALCALLBACKSTART")
def callback_form(event: BitrixEvent) -> None:
    """A CRM callback form: ask Bitrix24 who owns the client; `ring_callback` goes on."""
    data = _data(event)
    phone, line = str(data.get("PHONE_NUMBER") or ""), str(data.get("LINE_NUMBER") or "")
    if not phone:
        raise NoRoute("ONEXTERNALCALLBACKSTART without PHONE_NUMBER")
    connection = connection_for_line(event.portal, line)
    if connection is None:
        # Nothing to ring with and no Bitrix24 user to tell: the admins hear of the request.
        problems.report(event.portal, "callback_no_connection", "portal", phone=phone)
        return
    state, intents = engine.callback_requested(phone, line)
    call = _new_call(connection, Call.Origin.CALLBACK, state)
    pipeline.emit(call, intents)


def ring_callback(call: Call, owner: int | None) -> None:
    """The client's CRM owner is known (or not): ring the first extension that can take the
    callback. When none can, the request is still logged in Bitrix24 as a failed call with
    the reason, and the connection shows the error, so the client's request is not lost."""
    state = CallState.from_json(call.state)
    if not state.awaiting_responsible:
        return  # routed already: the lookup's answer came twice (a resend after a lost reply)
    state.awaiting_responsible = False
    connection = call.connection
    extension = callback_extension(connection, owner)
    if extension:
        pipeline.save_state(call, state)
        jobs.after_commit(ORIGINATE, call.pk, extension)
        return
    reason = (
        f"nobody can take the callback: neither the client's CRM owner nor the default user "
        f"has an extension on PBX connection {connection.name!r}, and no callback extension "
        "is set"
    )
    connection.record_error(reason)
    call.last_error = reason
    told = problems.user_message(call.portal, "callback_impossible", phone=call.client_number)
    state, intents = engine.originate_failed(
        state,
        told,
        pipeline.policy_of(connection),
        call.command_id,
        user=owner,
    )
    pipeline.emit(call, intents)
    pipeline.save_state(call, state)
    problems.report(
        call.portal,
        "callback_impossible",
        f"connection:{connection.pk}",
        notify_user=state.register_user,
        fix_url=connection.admin_path,
        connection=connection.name,
        phone=call.client_number,
    )


def callback_extension(connection: PbxConnection, owner: int | None) -> str:
    """Who rings for a callback: the CRM owner, else the default user, else the connection's
    callback extension or group; "" when none of them can."""
    for user in (owner, connection.default_user_id):
        extension = extension_of(connection, user) if user else ""
        if extension:
            return extension
    return connection.callback_extension


def _new_call(connection: PbxConnection, origin: str, state: CallState, **fields: Any) -> Call:
    return Call.objects.create(
        portal=connection.portal,
        connection=connection,
        origin=origin,
        command_id=uuid.uuid4().hex,
        direction=state.direction,
        client_number=state.client_number,
        client_number_e164=to_e164(state.client_number),
        line_number=state.line_number,
        state=state.to_json(),
        **fields,
    )
