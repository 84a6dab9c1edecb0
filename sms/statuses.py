"""The one place a message's status changes: kept in its history and told to Bitrix24.

Statuses only move forward: queued → sent → a final one (delivered, undelivered, failed).
A late or repeated report (a "sent" after "delivered", a second "delivered") changes
nothing, and a final status is never replaced. Each change goes to Bitrix24 as
`messageservice.message.status.update` through the command outbox, in order per message
(owner_key), so an outage of Bitrix24 only delays it.
"""

from django.utils import timezone

from bitrixapp import outbox
from sms.models import SmsMessage, SmsStatus, SmsStatusChange

FINAL = frozenset({SmsStatus.DELIVERED, SmsStatus.UNDELIVERED, SmsStatus.FAILED})
RANK = {
    SmsStatus.QUEUED: 0,
    SmsStatus.SENT: 1,
    SmsStatus.DELIVERED: 2,
    SmsStatus.UNDELIVERED: 2,
    SmsStatus.FAILED: 2,
}
Source = SmsStatusChange.Source


def change(message: SmsMessage, status: str, source: str, reason: str = "") -> bool:
    """Move a (locked) message to `status` if that is a step forward; True when it moved."""
    if RANK[status] <= RANK[SmsStatus(message.status)]:
        return False
    now = timezone.now()
    message.status, message.reason = status, reason[:2000]
    fields = ["status", "reason", "updated_at"]
    if status in FINAL:
        message.final_at, message.next_attempt_at = now, None
        fields += ["final_at", "next_attempt_at"]
    message.save(update_fields=fields)
    SmsStatusChange.objects.create(
        message=message, status=status, source=source, reason=reason[:2000], at=now
    )
    tell_bitrix24(message, status)
    return True


def tell_bitrix24(message: SmsMessage, status: str) -> None:
    outbox.enqueue(
        message.portal,
        "messageservice.message.status.update",
        {"CODE": message.sender.code, "MESSAGE_ID": message.b24_message_id, "STATUS": status},
        owner_key=message.owner_key,
        context={"sms_message": message.pk},
    )


def is_final(status: str) -> bool:
    return status in FINAL
