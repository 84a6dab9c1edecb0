"""Keeping Bitrix24's SMS providers in step with the senders (messageservice.sender.*).

A new sender is added (`sender.add`, TYPE=SMS, HANDLER = its own URL, NAME in ru and en);
a change is sent as `sender.update`; a renamed CODE or a switched-off or deleted sender is
removed (`sender.delete`). Bitrix24 answering ERROR_SENDER_ALREADY_INSTALLED to an add (an
earlier install, a lost answer) is reconciled with an update, and ERROR_SENDER_NOT_FOUND to
an update (deleted in Bitrix24) with an add. Registration state is kept on the sender.
"""

from django.conf import settings
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from bitrixapp import outbox
from bitrixapp.models import B24Command, Portal
from sms.models import SmsSender

DONE = B24Command.State.DONE
ALREADY_INSTALLED = "ERROR_SENDER_ALREADY_INSTALLED"
NOT_FOUND = "ERROR_SENDER_NOT_FOUND"


def _owner(portal_id: int, code: str) -> str:
    return f"sms-sender:{portal_id}:{code}"


# Bitrix24 shows a provider's NAME and DESCRIPTION per language: ours, with the same codes.
LANGUAGES = tuple(code for code, _name in settings.LANGUAGES)


def _params(sender: SmsSender) -> dict:
    return {
        "CODE": sender.code,
        "TYPE": "SMS",
        "HANDLER": sender.handler_url,
        # The name is the admin's own words, the same in every language.
        "NAME": dict.fromkeys(LANGUAGES, sender.name),
        "DESCRIPTION": {lang: _description(sender, lang) for lang in LANGUAGES},
    }


def _description(sender: SmsSender, language: str) -> str:
    with translation.override(language):
        return _("%(alpha_name)s via %(account)s") % {
            "alpha_name": sender.alpha_name,
            "account": sender.account.name,
        }


def add(sender: SmsSender) -> B24Command:
    return outbox.enqueue(
        sender.portal,
        "messageservice.sender.add",
        _params(sender),
        owner_key=_owner(sender.portal_id, sender.code),
        handler="sms.sender_added",
        context={"sms_sender": sender.pk},
    )


def update(sender: SmsSender) -> B24Command:
    params = {k: v for k, v in _params(sender).items() if k != "TYPE"}
    return outbox.enqueue(
        sender.portal,
        "messageservice.sender.update",
        params,
        owner_key=_owner(sender.portal_id, sender.code),
        handler="sms.sender_updated",
        context={"sms_sender": sender.pk},
    )


def remove(portal: Portal, code: str) -> B24Command:
    return outbox.enqueue(
        portal, "messageservice.sender.delete", {"CODE": code}, owner_key=_owner(portal.pk, code)
    )


def sync(sender: SmsSender) -> None:
    """After a sender was saved: bring Bitrix24 in step (add, update, or delete + add)."""
    registered = sender.registered_code
    if registered and registered != sender.code:
        remove(sender.portal, registered)
        registered = ""
    if not sender.is_active or not sender.account.is_active:
        if registered:
            remove(sender.portal, registered)
        SmsSender.objects.filter(pk=sender.pk).update(registered_code="", registered_at=None)
        return
    if registered:
        update(sender)
    else:
        add(sender)


def forget(sender: SmsSender) -> None:
    """A sender is being deleted: remove its Bitrix24 provider."""
    if sender.registered_code:
        remove(sender.portal, sender.registered_code)


def _registered(command: B24Command, sender: SmsSender) -> None:
    SmsSender.objects.filter(pk=sender.pk).update(
        registered_code=command.params["CODE"],
        registered_at=command.finished_at or timezone.now(),
        registration_error="",
    )


def _failed(command: B24Command, sender: SmsSender) -> None:
    SmsSender.objects.filter(pk=sender.pk).update(
        registration_error=f"{command.error_code}: {command.error_description}"[:2000]
    )


def _sender_of(command: B24Command) -> SmsSender | None:
    sender = SmsSender.objects.filter(pk=command.context.get("sms_sender")).first()
    # A command for a CODE the sender no longer has (renamed meanwhile) says nothing about it.
    return sender if sender is not None and sender.code == command.params.get("CODE") else None


@outbox.result_handler("sms.sender_added")
def _sender_added(command: B24Command) -> None:
    sender = _sender_of(command)
    if sender is None:
        return
    if command.state == DONE:
        _registered(command, sender)
    elif command.error_code == ALREADY_INSTALLED:
        update(sender)
    else:
        _failed(command, sender)


@outbox.result_handler("sms.sender_updated")
def _sender_updated(command: B24Command) -> None:
    sender = _sender_of(command)
    if sender is None:
        return
    if command.state == DONE:
        _registered(command, sender)
    elif command.error_code == NOT_FOUND:
        add(sender)
    else:
        _failed(command, sender)
