"""Keeping Bitrix24 in step with a connection's lines, and extensions with Bitrix24 users.

Lines are registered as Bitrix24 external lines (telephony.externalLine.add/update/delete);
extensions can be filled from the users' UF_PHONE_INNER (user.get, 50 per page). Rows an
admin typed (source "manual") always win over ones read from Bitrix24.
"""

from bitrixapp import outbox
from bitrixapp.models import B24Command
from telephony import alerts
from telephony.models import PbxConnection, PbxExtension, PbxLine

LINE_ERRORS_MEANING_EXISTS = ("Line already exists",)


def _line_params(line: PbxLine) -> dict:
    return {
        "NUMBER": line.line_number,
        "NAME": line.name or line.line_number,
        "CRM_AUTO_CREATE": "Y" if line.crm_auto_create else "N",
    }


def register_line(line: PbxLine) -> B24Command:
    """Create or update the Bitrix24 external line of this mapping (idempotent)."""
    return outbox.enqueue(
        line.connection.portal,
        "telephony.externalLine.add",
        _line_params(line),
        owner_key=f"line:{line.connection.portal_id}:{line.line_number}",
        handler="telephony.line_added",
    )


def remove_line(connection: PbxConnection, line_number: str) -> B24Command | None:
    """Delete the Bitrix24 external line unless another mapping of the portal still uses it
    (Bitrix24 lines belong to the portal, and two connections may share one)."""
    still_used = PbxLine.objects.filter(
        connection__portal_id=connection.portal_id, line_number=line_number
    ).exists()
    if still_used:
        return None
    return outbox.enqueue(
        connection.portal,
        "telephony.externalLine.delete",
        {"NUMBER": line_number},
        owner_key=f"line:{connection.portal_id}:{line_number}",
    )


@outbox.result_handler("telephony.line_added")
def _line_added(command: B24Command) -> None:
    number = command.params["NUMBER"]
    lines = PbxLine.objects.filter(connection__portal_id=command.portal_id, line_number=number)
    if command.state == B24Command.State.DONE:
        lines.update(registered_at=command.finished_at)
        alerts.line_registered(command.portal_id, number)
    elif any(text in command.error_description for text in LINE_ERRORS_MEANING_EXISTS):
        # Registered before (another connection, an earlier install): bring name/flags up to date.
        outbox.enqueue(
            command.portal,
            "telephony.externalLine.update",
            command.params,
            owner_key=command.owner_key,
        )
        lines.update(registered_at=command.finished_at)
        alerts.line_registered(command.portal_id, number)
    else:
        error = f"{command.error_code} {command.error_description}".strip()
        alerts.line_refused(command.portal_id, number, error)


def load_extensions(connection: PbxConnection, start: int = 0) -> B24Command:
    """Read Bitrix24 users with an extension (UF_PHONE_INNER) into this connection's mapping."""
    return outbox.enqueue(
        connection.portal,
        "user.get",
        {"FILTER": {"ACTIVE": True}, "start": start},
        owner_key=f"users:{connection.pk}",
        handler="telephony.users_loaded",
        context={"connection": connection.pk},
    )


@outbox.result_handler("telephony.users_loaded")
def _users_loaded(command: B24Command) -> None:
    if command.state != B24Command.State.DONE or not isinstance(command.result, list):
        return
    connection = PbxConnection.objects.filter(pk=command.context.get("connection")).first()
    if connection is None:
        return
    manual = set(
        connection.extensions.filter(source=PbxExtension.Source.MANUAL).values_list(
            "extension", flat=True
        )
    )
    for user in command.result:
        extension = str(user.get("UF_PHONE_INNER") or "").strip()
        if extension and extension not in manual:
            PbxExtension.objects.update_or_create(
                connection=connection,
                extension=extension,
                defaults={"user_id": int(user["ID"]), "source": PbxExtension.Source.BITRIX},
            )
    if len(command.result) == 50:  # a full page: there may be more
        load_extensions(connection, start=int(command.params.get("start") or 0) + 50)
