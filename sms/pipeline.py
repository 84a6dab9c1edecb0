"""Processing what was stored: Bitrix24's handler calls (a message to send) and the gateway's
delivery reports. Both parse the STORED body (inbox), so "process again" re-reads it.

A handler call becomes one SmsMessage (once per Bitrix24 message_id and sender). A number
that cannot be used, an empty or over-long text, or a marketing message without consent is
not sent: it fails at once with the reason, and Bitrix24 is told `failed`. Everything else
is queued for sending on the `sms` queue (sms.tasks.send_message), behind the rate limit.
"""

import json
from typing import Any

from django.db import IntegrityError, transaction

from bitrixapp import inbox, phones
from sms import consent, providers, statuses
from sms.models import SmsDeliveryReport, SmsHandlerCall, SmsMessage, SmsStatus
from sms.providers.base import ReportRejected
from sms.segments import segment

State = inbox.InboundRequest.State
Source = statuses.Source
# Longest texts MTS takes (multipart SMS), by encoding.
MAX_LENGTH = {"gsm7": 765, "ucs2": 335}


# ---------------------------------------------------------------- handler calls


def handle_call(row: SmsHandlerCall) -> str:
    form = inbox.parse_body(row.body, row.content_type)
    message_id = str(form.get("message_id") or "").strip()
    if not message_id:
        raise inbox.Rejected("message_id is required")
    message = _new_message(row, form, message_id)
    if message is None:
        raise inbox.Ignored(f"message {message_id} was taken before (a repeated call)")
    row.message = message
    reason = _refusal(message)
    if reason:
        statuses.change(message, SmsStatus.FAILED, Source.HANDLER, reason)
    elif message.sender.is_marketing:
        consent.check(message)
    else:
        consent.queue_send(message)
    return State.PROCESSED


def _field(form: dict[str, Any], *names: str) -> str:
    """The first of `names` given; properties[...] repeat the fields for workflows."""
    properties = form.get("properties") if isinstance(form.get("properties"), dict) else {}
    for name in names:
        for source in (form, properties):
            value = source.get(name)
            if isinstance(value, str | int | float) and str(value).strip():
                return str(value)
    return ""


def _new_message(row: SmsHandlerCall, form: dict[str, Any], message_id: str) -> SmsMessage | None:
    sender = row.sender
    account = sender.account
    text = _field(form, "message_body", "message_text")
    recipient = _field(form, "message_to", "phone_number")
    checked = phones.check(recipient, account.default_region, account.regions)
    parts = segment(text)
    try:
        with transaction.atomic():
            return SmsMessage.objects.create(
                portal_id=row.portal_id,
                account=account,
                sender=sender,
                b24_message_id=message_id[:64],
                module_id=_field(form, "module_id")[:32],
                recipient=recipient[:64],
                recipient_e164=checked.e164,
                contact_id=consent.contact_of(form),
                text=text,
                encoding=parts.encoding,
                segments=parts.segments,
                reason=checked.reason,
            )
    except IntegrityError:
        return None


def _refusal(message: SmsMessage) -> str:
    """Why the message must not be sent ("" when it may)."""
    if message.recipient_e164 is None:
        return message.reason or "no recipient number"
    if not message.text.strip():
        return "the message text is empty"
    parts = segment(message.text)
    if parts.length > MAX_LENGTH[parts.encoding]:
        limit = MAX_LENGTH[parts.encoding]
        return (
            f"the text is {parts.length} characters; MTS takes at most {limit} in {parts.encoding}"
        )
    if not (message.sender.is_active and message.account.is_active):
        return "this sender or its SMS account is switched off"
    return ""


# ---------------------------------------------------------------- delivery reports


def read_reports(body: str, content_type: str) -> Any:
    """A stored report body: a JSON object or array, or form fields."""
    if content_type.split(";")[0].strip().lower() == inbox.FORM:
        return inbox.parse_body(body, content_type)
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise inbox.Rejected("body is not JSON or form fields") from None


def handle_report(row: SmsDeliveryReport) -> str:
    provider = providers.get(row.account.provider)
    try:
        reports = provider.parse_reports(read_reports(row.body, row.content_type))
    except ReportRejected as exc:
        raise inbox.Rejected(exc.detail) from exc
    matched = sum(_apply(row, report) for report in reports)
    if not matched:
        raise inbox.Ignored("no message of this account matches the report")
    return State.PROCESSED


EXTRA_ID_PREFIX = "b24sms-"


def find_message(account_id: int, provider_message_id: str, extra_id: str) -> SmsMessage | None:
    """A message of the account by our extra_id (known before the gateway answered) or by
    the gateway's message id; locked."""
    messages = SmsMessage.objects.select_for_update().select_related("sender", "portal")
    pk = extra_id.removeprefix(EXTRA_ID_PREFIX)
    if extra_id.startswith(EXTRA_ID_PREFIX) and pk.isdigit():
        found = messages.filter(account_id=account_id, pk=int(pk)).first()
        if found is not None:
            return found
    if provider_message_id:
        return messages.filter(
            account_id=account_id, provider_message_id=provider_message_id
        ).first()
    return None


def _apply(row: SmsDeliveryReport, report: Any) -> bool:
    message = find_message(row.account_id, report.provider_message_id, report.extra_id)
    if message is None:
        return False
    if report.status:
        statuses.change(message, report.status, Source.REPORT, report.reason)
    return True
