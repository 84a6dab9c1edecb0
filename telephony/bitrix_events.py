"""Bitrix24 events telephony acts on: click-to-call and the CRM callback form."""

import uuid
from typing import Any

from django.db import transaction

from bitrixapp import inbox
from bitrixapp.events import event_handler
from bitrixapp.models import BitrixEvent, Portal
from bitrixapp.phones import digits, to_e164
from telephony import engine, pipeline
from telephony.engine import CallState
from telephony.models import Call, PbxConnection, PbxExtension


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
    from telephony import tasks

    data = _data(event)
    call_id, phone = str(data.get("CALL_ID") or ""), str(data.get("PHONE_NUMBER") or "")
    user_id = int(data.get("USER_ID") or 0)
    if not call_id or not user_id:
        raise NoRoute("ONEXTERNALCALLSTART without CALL_ID or USER_ID")
    if Call.objects.filter(portal=event.portal, b24_call_id=call_id).exists():
        return  # the same click delivered twice
    connection = connection_for_line(event.portal, str(data.get("LINE_NUMBER") or ""))
    if connection is None:
        raise NoRoute("the portal has no active PBX connection")
    state = engine.click_to_call(call_id, user_id, phone, str(data.get("LINE_NUMBER") or ""))
    call = _new_call(connection, Call.Origin.CLICK_TO_CALL, state, b24_call_id=call_id)
    extension = str(data.get("EXTENSION") or "") or extension_of(connection, user_id)
    if not extension:
        state, intents = engine.originate_failed(
            state, f"user {user_id} has no extension on PBX connection {connection.name!r}"
        )
        pipeline.emit(call, intents)
        pipeline.save_state(call, state)
        return
    transaction.on_commit(lambda: tasks.originate.delay(call.pk, extension), robust=True)


@event_handler("ONEXTERNALCALLBACKSTART")
def callback_form(event: BitrixEvent) -> None:
    """A CRM callback form: ring the line's default user first, then the visitor."""
    from telephony import tasks

    data = _data(event)
    phone = str(data.get("PHONE_NUMBER") or "")
    connection = connection_for_line(event.portal, str(data.get("LINE_NUMBER") or ""))
    if connection is None or not phone:
        raise NoRoute("no PBX connection for the callback, or no PHONE_NUMBER")
    extension = extension_of(connection, connection.default_user_id)
    if not extension:
        raise NoRoute(f"connection {connection.name!r}: its default user has no extension")
    state = CallState(origin="callback", client_number=phone)
    call = _new_call(connection, Call.Origin.CALLBACK, state)
    transaction.on_commit(lambda: tasks.originate.delay(call.pk, extension), robust=True)


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
