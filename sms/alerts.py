"""SMS failures told to people (bitrixapp.problems): a sender name the gateway refuses, and the
first message it takes again from that sender, which proves the problem is over."""

from bitrixapp import problems
from sms.models import SmsMessage
from sms.providers.base import SendError

SENDER_REFUSED = "sms_sender_refused"


def _about(message: SmsMessage) -> str:
    return f"sender:{message.sender_id}"


def sender_refused(message: SmsMessage, exc: SendError) -> None:
    sender = message.sender
    problems.report(
        message.portal,
        SENDER_REFUSED,
        _about(message),
        fix_url=sender.admin_path,
        sender=sender.alpha_name,
        error=str(exc)[:300],
    )


def sender_accepted(message: SmsMessage) -> None:
    problems.resolve(message.portal, SENDER_REFUSED, _about(message))
