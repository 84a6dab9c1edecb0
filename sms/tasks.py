"""Celery tasks of the SMS app, all on the `sms` queue: a campaign of thousands of messages
never delays call events (`calls` queue) or Bitrix24 commands (`bitrix` queue).

send_message: one message to the gateway, at the account's rate shared by every worker
(bitrixapp.ratelimit.reserve); the slot is waited for in the worker only when it is near,
otherwise the task comes back when it is due. poll_statuses (every minute, beat): reads the
status of messages sent a while ago that have no final status (a lost report), closes those
past their lifetime, and re-queues sends whose queue message was lost.
"""

import logging
import time
from datetime import timedelta

from celery import shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from bitrixapp import jobs, ratelimit
from sms import alerts, providers, statuses
from sms.models import TTL_MIN_S, SmsMessage, SmsStatus
from sms.pipeline import find_message
from sms.providers.base import Outgoing, SendError

log = logging.getLogger(__name__)
Source = statuses.Source

# Keep a little under the contract's rate: our clock and the gateway's see a request at
# slightly different moments.
RATE_MARGIN = 0.97
WAIT_IN_WORKER_S = 2.0  # a slot further off than this: the task is queued again for then
LATE_SLOT_FRACTION = 0.5  # a send later than this part of a slot's length takes a new slot
SEND_ATTEMPTS = 8  # transient failures (outage, 429) before a message fails
SEND_LEASE = timedelta(minutes=2)  # a running try books the message this long
RESUME_GRACE = timedelta(minutes=1)
POLL_AFTER = timedelta(minutes=5)  # a message this long without a final status is polled
POLL_EVERY = timedelta(minutes=5)  # and then again at most this often
POLL_BATCH = 200
TTL_MARGIN = timedelta(minutes=10)  # after TTL + this without a final status: undelivered


@shared_task(ignore_result=True)
def send_message(message_id: int) -> None:
    message = SmsMessage.objects.select_related("account", "sender").filter(pk=message_id).first()
    if message is None or message.status != SmsStatus.QUEUED or message.provider_message_id:
        return
    account = message.account
    pace, rate = f"sms:{account.pk}", account.rate_per_second * RATE_MARGIN
    slot = ratelimit.reserve(pace, rate, WAIT_IN_WORKER_S)
    if not slot.booked:
        _later(message_id, slot.wait)
        return
    due = time.monotonic() + slot.wait
    if not _claim(message):
        return  # another worker took this try (a duplicate task)
    _wait_for_slot(pace, rate, due)
    outgoing = Outgoing(
        extra_id=message.extra_id,
        phone_e164=message.recipient_e164 or "",
        text=message.text,
        alpha_name=message.sender.alpha_name,
        ttl_s=account.ttl_s,
        callback_url=account.dlr_url,
    )
    try:
        provider_id = providers.get(account.provider).send(account, outgoing)
    except SendError as exc:
        _send_failed(message, exc)
        return
    _accepted(message_id, provider_id)


def _wait_for_slot(pace: str, rate: float, due: float) -> None:
    """Sleep until the booked slot (`due`, time.monotonic()). A send that cannot leave near
    its slot (the claim or a busy machine held it up) books a later one instead of leaving
    right behind the next slot's send: the gateway counts the sends of every second, and a
    few late ones bunched with punctual ones went over its limit (429). The message is
    claimed for SEND_LEASE, so the new slot may be further off than WAIT_IN_WORKER_S."""
    booked = True
    while True:
        time.sleep(max(0.0, due - time.monotonic()))
        if booked and time.monotonic() - due <= LATE_SLOT_FRACTION / rate:
            return
        # Not booked (the next free slot was further off still): ask again once it is near.
        slot = ratelimit.reserve(pace, rate, SEND_LEASE.total_seconds() / 2)
        booked, due = slot.booked, time.monotonic() + slot.wait


def _later(message_id: int, delay: float) -> None:
    SmsMessage.objects.filter(pk=message_id).update(
        next_attempt_at=timezone.now() + timedelta(seconds=delay)
    )
    jobs.after_commit("sms.tasks.send_message", message_id, queue="sms", countdown=delay)


def _claim(message: SmsMessage) -> bool:
    """Count the try and book the message for SEND_LEASE; False if another task did first."""
    tried = message.attempts
    won = SmsMessage.objects.filter(
        pk=message.pk, status=SmsStatus.QUEUED, provider_message_id="", attempts=tried
    ).update(attempts=tried + 1, next_attempt_at=timezone.now() + SEND_LEASE)
    message.attempts = tried + 1
    return bool(won)


def _accepted(message_id: int, provider_id: str) -> None:
    with transaction.atomic():
        message = SmsMessage.objects.select_for_update().select_related("sender", "portal")
        message = message.get(pk=message_id)
        message.provider_message_id = provider_id[:64]
        message.sent_at = timezone.now()
        message.next_attempt_at = None
        message.save(update_fields=["provider_message_id", "sent_at", "next_attempt_at"])
        # A report may have come first (its status is further on): then this changes nothing.
        statuses.change(message, SmsStatus.SENT, Source.GATEWAY, "accepted by the gateway")
        alerts.sender_accepted(message)


def _send_failed(message: SmsMessage, exc: SendError) -> None:
    if exc.sender_refused:
        alerts.sender_refused(message, exc)
    give_up = exc.permanent or message.attempts >= SEND_ATTEMPTS
    if not exc.permanent:
        message.account.record_error(str(exc))
    if give_up:
        reason = str(exc) if exc.permanent else f"gave up after {message.attempts} tries: {exc}"
        with transaction.atomic():
            locked = SmsMessage.objects.select_for_update().select_related("sender", "portal")
            statuses.change(locked.get(pk=message.pk), SmsStatus.FAILED, Source.GATEWAY, reason)
        return
    delay = exc.retry_after or get_exponential_backoff_interval(
        5, message.attempts - 1, 600, full_jitter=True
    )
    SmsMessage.objects.filter(pk=message.pk).update(reason=str(exc)[:2000])
    _later(message.pk, max(delay, 1.0))


# ---------------------------------------------------------------- the minute sweep


@shared_task(ignore_result=True)
def poll_statuses() -> dict[str, int]:
    return {"resumed": resume_sends(), "polled": poll_open(), "expired": expire_open()}


def resume_sends(limit: int = 1000) -> int:
    """Queue again the sends whose task was lost (a broker outage, a killed worker)."""
    cutoff = timezone.now() - RESUME_GRACE
    due = list(
        SmsMessage.objects.filter(
            status=SmsStatus.QUEUED, provider_message_id="", next_attempt_at__lt=cutoff
        ).values_list("pk", flat=True)[:limit]
    )
    for pk in due:
        SmsMessage.objects.filter(pk=pk).update(next_attempt_at=timezone.now() + SEND_LEASE)
        jobs.now("sms.tasks.send_message", pk, queue="sms")
    return len(due)


def expire_open(limit: int = 1000) -> int:
    """Close messages still open after their lifetime plus a margin: the gateway gave up."""
    now = timezone.now()
    candidates = (
        SmsMessage.objects.filter(
            status=SmsStatus.SENT, sent_at__lt=now - TTL_MARGIN - timedelta(seconds=TTL_MIN_S)
        )
        .order_by("sent_at")
        .values_list("pk", "sent_at", "account__ttl_s")[:limit]
    )
    overdue = [
        pk for pk, sent_at, ttl in candidates if sent_at + timedelta(seconds=ttl) + TTL_MARGIN < now
    ]
    closed = 0
    for pk in overdue:
        with transaction.atomic():
            message = SmsMessage.objects.select_for_update().select_related("sender", "portal")
            message = message.get(pk=pk)
            reason = "no delivery report within the message's lifetime: the gateway gave up"
            closed += statuses.change(message, SmsStatus.UNDELIVERED, Source.TIMEOUT, reason)
    return closed


def poll_open(limit: int = POLL_BATCH) -> int:
    """Ask the gateway about messages sent POLL_AFTER ago without a final status (their
    report was lost), oldest-polled first, at most `limit` per run."""
    now = timezone.now()
    due = list(
        SmsMessage.objects.filter(status=SmsStatus.SENT, sent_at__lt=now - POLL_AFTER)
        .filter(Q(last_polled_at__isnull=True) | Q(last_polled_at__lt=now - POLL_EVERY))
        .select_related("account")
        .order_by(F("last_polled_at").asc(nulls_first=True), "pk")[:limit]
    )
    for message in due:
        _poll(message)
    return len(due)


def _poll(message: SmsMessage) -> None:
    account = message.account
    SmsMessage.objects.filter(pk=message.pk).update(last_polled_at=timezone.now())
    try:
        report = providers.get(account.provider).poll(account, message.extra_id)
    except SendError as exc:
        log.warning("status poll of SMS %s failed: %s", message.pk, exc)
        return
    if report is None or not report.status:
        return
    with transaction.atomic():
        locked = find_message(account.pk, message.provider_message_id, message.extra_id)
        if locked is not None:
            statuses.change(locked, report.status, Source.POLL, report.reason)
