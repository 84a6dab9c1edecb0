"""Consent for marketing messages: the bound CRM contact's consent field must say yes.

The field (the sender's `consent_field`, e.g. UF_CRM_SMS_CONSENT) is read with `crm.item.get`
through the command outbox; the answer is cached per contact for CACHE_S, so a campaign to
many deals of one contact asks Bitrix24 once. A marketing message with no contact bound,
or a contact without consent, is never sent: it fails with the reason.
"""

from typing import Any

from django.core.cache import cache
from django.utils import timezone

from bitrixapp import jobs, outbox
from bitrixapp.models import B24Command
from sms import statuses
from sms.models import SmsMessage, SmsStatus

CACHE_S = 300
CONTACT = 3  # Bitrix24 CRM entity type id of a contact (OWNER_TYPE_ID, entityTypeId)
# How Bitrix24 spells "yes" in a boolean field (crm.item.get gives "Y", "1", true or 1).
YES = {"y", "yes", "1", "true", "on"}


def contact_of(form: dict[str, Any]) -> int | None:
    """The CRM contact a message is bound to: a CRM card's bindings, or a workflow's
    document (["crm", "CCrmDocumentContact", "CONTACT_12"])."""
    bindings = form.get("bindings")
    items = bindings.values() if isinstance(bindings, dict) else bindings or []
    for binding in items:
        if isinstance(binding, dict) and str(binding.get("OWNER_TYPE_ID")) == str(CONTACT):
            owner = str(binding.get("OWNER_ID") or "")
            if owner.isdigit():
                return int(owner)
    document = form.get("document_id")
    parts = list(document.values()) if isinstance(document, dict) else document
    for part in parts if isinstance(parts, list) else [parts]:
        text = str(part or "")
        if text.startswith("CONTACT_") and text[8:].isdigit():
            return int(text[8:])
    return None


def is_yes(value: Any) -> bool:
    if isinstance(value, list):
        return any(is_yes(v) for v in value)
    return str(value).strip().lower() in YES if value is not None else False


def _key(message: SmsMessage) -> str:
    return f"sms:consent:{message.portal_id}:{message.contact_id}:{message.sender.consent_field}"


def check(message: SmsMessage) -> None:
    """Decide a (locked, queued) marketing message: send, fail, or ask Bitrix24 first."""
    if not message.sender.consent_field:
        statuses.change(message, SmsStatus.FAILED, statuses.Source.HANDLER, NO_FIELD)
        return
    if message.contact_id is None:
        statuses.change(message, SmsStatus.FAILED, statuses.Source.HANDLER, NO_CONTACT)
        return
    known = cache.get(_key(message))
    if known is not None:
        decide(message, known)
        return
    outbox.enqueue(
        message.portal,
        "crm.item.get",
        {"entityTypeId": CONTACT, "id": message.contact_id, "useOriginalUfNames": "Y"},
        owner_key=message.owner_key,
        handler="sms.consent_read",
        context={"sms_message": message.pk},
    )


def decide(message: SmsMessage, consented: bool) -> None:
    if consented:
        queue_send(message)
    else:
        reason = (
            f"contact {message.contact_id} has not agreed to marketing messages "
            f"({message.sender.consent_field} is not yes)"
        )
        statuses.change(message, SmsStatus.FAILED, statuses.Source.HANDLER, reason)


def queue_send(message: SmsMessage) -> None:
    """Cleared for sending: from now on a lost send task is queued again (tasks.resume_sends)."""
    SmsMessage.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now())
    jobs.after_commit("sms.tasks.send_message", message.pk, queue="sms")


NO_FIELD = "marketing sender without a consent field: set one to send marketing messages"
NO_CONTACT = "marketing message not bound to a CRM contact: consent unknown"


@outbox.result_handler("sms.consent_read")
def _consent_read(command: B24Command) -> None:
    message = (
        SmsMessage.objects.select_for_update()
        .select_related("sender", "portal")
        .filter(pk=command.context.get("sms_message"))
        .first()
    )
    if message is None or message.status != SmsStatus.QUEUED:
        return
    if command.state != B24Command.State.DONE or not isinstance(command.result, dict):
        reason = f"consent could not be read: {command.error_code} {command.error_description}"
        statuses.change(message, SmsStatus.FAILED, statuses.Source.HANDLER, reason.strip())
        return
    item = command.result.get("item") or {}
    consented = is_yes(item.get(message.sender.consent_field))
    cache.set(_key(message), consented, CACHE_S)
    decide(message, consented)
