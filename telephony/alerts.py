"""Telephony's failures told to people (bitrixapp.problems): what each problem is about (its
subject), what its messages mention, and the moments that prove it is over."""

from django.db.models.signals import post_save
from django.dispatch import receiver

from bitrixapp import problems
from telephony.engine import CallState
from telephony.models import Call, PbxConnection, PbxExtension, PbxLine
from telephony.providers.base import CallEvent, ProviderError

# The problem a PBX refusal is, by what the call was for.
REFUSED = {Call.Origin.CLICK_TO_CALL: "click_refused", Call.Origin.CALLBACK: "callback_refused"}
# connection.last_error starts so after a refused webhook (see webhook_refused).
WEBHOOK_REFUSED = "webhook refused: "


def _about(connection: PbxConnection) -> str:
    return f"connection:{connection.pk}"


# ---------------------------------------------------------------- calls from the CRM


def reason(call: Call, kind: str, exc: ProviderError) -> str:
    """The CRM call's failure reason, in the portal's language."""
    return problems.user_message(call.portal, kind, phone=call.client_number, error=str(exc))


def originate_refused(call: Call, kind: str, exc: ProviderError, user: int | None) -> None:
    connection = call.connection
    problems.report(
        call.portal,
        kind,
        _about(connection),
        notify_user=user,
        fix_url=connection.admin_path,
        connection=connection.name,
        phone=call.client_number,
        error=str(exc)[:300],
    )


def originate_worked(call: Call) -> None:
    """The PBX took a call from the CRM: what stood in the way of this one is over."""
    connection, portal = call.connection, call.portal
    problems.resolve(portal, REFUSED[call.origin], _about(connection))
    if call.origin == Call.Origin.CALLBACK:
        problems.resolve(portal, "callback_impossible", _about(connection))
        return
    user = CallState.from_json(call.state).register_user
    problems.resolve(portal, "click_no_connection", "portal")
    problems.resolve(portal, "click_no_extension", f"{_about(connection)}:user:{user}")


# ---------------------------------------------------------------- PBX webhooks


def webhook_refused(connection: PbxConnection, detail: str) -> None:
    connection.record_error(WEBHOOK_REFUSED + detail)
    problems.report(
        connection.portal,
        "webhook_bad_signature",
        _about(connection),
        fix_url=connection.admin_path,
        connection=connection.name,
    )


def refusal_open(connection: PbxConnection) -> bool:
    """Whether the connection's last error is a refused webhook (webhook_accepted closes it)."""
    return connection.last_error.startswith(WEBHOOK_REFUSED)


def webhook_accepted(connection: PbxConnection) -> None:
    """A verified webhook after refused ones: the key is right again. The connection's last
    error tells whether there is anything to close, so a healthy webhook costs no query."""
    if not refusal_open(connection):
        return
    PbxConnection.objects.filter(pk=connection.pk, last_error__startswith=WEBHOOK_REFUSED).update(
        last_error=""
    )
    problems.resolve(connection.portal, "webhook_bad_signature", _about(connection))


# ---------------------------------------------------------------- lines and extensions


def line_refused(portal_id: int, line_number: str, error: str) -> None:
    line = PbxLine.objects.select_related("connection__portal").filter(
        connection__portal_id=portal_id, line_number=line_number
    )
    first = line.first()
    if first is None:
        return  # the mapping was deleted meanwhile: nothing to fix
    problems.report(
        first.connection.portal,
        "line_refused",
        f"line:{line_number}",
        fix_url=first.connection.admin_path,
        line=first.name or line_number,
        error=error[:300],
    )


def line_registered(portal_id: int, line_number: str) -> None:
    line = PbxLine.objects.select_related("connection__portal").filter(
        connection__portal_id=portal_id, line_number=line_number
    )
    first = line.first()
    if first is not None:
        problems.resolve(first.connection.portal, "line_refused", f"line:{line_number}")


def extension_seen(connection: PbxConnection, event: CallEvent, mapped: dict[str, int]) -> None:
    """A PBX event about an extension no Bitrix24 user is mapped to: its calls go to the
    default user, which an admin should know about."""
    if not event.extension or event.extension in mapped:
        return
    problems.report(
        connection.portal,
        "unmapped_extension",
        f"{_about(connection)}:ext:{event.extension}",
        fix_url=connection.admin_path,
        connection=connection.name,
        extension=event.extension,
    )


@receiver(post_save, sender=PbxExtension, dispatch_uid="telephony.alerts.extension_mapped")
def _extension_mapped(sender: type, instance: PbxExtension, **kwargs: object) -> None:
    connection = instance.connection
    subject = f"{_about(connection)}:ext:{instance.extension}"
    problems.resolve(connection.portal, "unmapped_extension", subject)
    if not instance.user_id:
        return
    # The user who could not call from the CRM for want of an extension has one now.
    user = f"{_about(connection)}:user:{instance.user_id}"
    problems.resolve(connection.portal, "click_no_extension", user)
    if instance.user_id == connection.default_user_id:
        _callbacks_can_ring(connection)


# ---------------------------------------------------------------- connections


@receiver(post_save, sender=PbxConnection, dispatch_uid="telephony.alerts.connection_saved")
def _connection_saved(sender: type, instance: PbxConnection, **kwargs: object) -> None:
    """An admin set up or changed a connection: what it was missing may be there now. Calls
    the PBX refused are over only when it takes one (originate_worked): new credentials may
    still be wrong."""
    if not instance.is_active:
        return
    problems.resolve(instance.portal, "click_no_connection", "portal")
    problems.resolve(instance.portal, "callback_no_connection", "portal")
    _callbacks_can_ring(instance)


def _callbacks_can_ring(connection: PbxConnection) -> None:
    """Every callback request can ring someone once the default user has an extension or a
    callback extension is set, whoever the client's CRM owner is."""
    from telephony.bitrix_events import callback_extension  # it imports this module

    if callback_extension(connection, owner=None):
        problems.resolve(connection.portal, "callback_impossible", _about(connection))


# ---------------------------------------------------------------- recordings


def recording_failed(connection: PbxConnection, error: str) -> None:
    problems.report(
        connection.portal,
        "recording_failed",
        _about(connection),
        fix_url=connection.admin_path,
        connection=connection.name,
        error=error[:300],
    )


def recording_downloaded(connection: PbxConnection) -> None:
    problems.resolve(connection.portal, "recording_failed", _about(connection))
