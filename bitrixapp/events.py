"""Inbound Bitrix24 events: what is stored, and who acts on each event after it is stored.

Feature apps register a handler per event name (e.g. telephony for ONEXTERNALCALLSTART);
an event without a handler is kept and marked ignored.
"""

import logging
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.utils import timezone

from bitrixapp.models import BitrixEvent, Portal

log = logging.getLogger(__name__)

EventHandler = Callable[[BitrixEvent], None]
EVENT_HANDLERS: dict[str, EventHandler] = {}

# Never stored: they are secrets, and the installer's tokens are the ones we use anyway.
SECRET_AUTH_KEYS = {"access_token", "refresh_token", "application_token"}


def event_handler(name: str) -> Callable[[EventHandler], EventHandler]:
    def register(fn: EventHandler) -> EventHandler:
        EVENT_HANDLERS[name.upper()] = fn
        return fn

    return register


def without_secrets(form: dict[str, Any]) -> dict[str, Any]:
    payload = dict(form)
    auth = payload.get("auth")
    if isinstance(auth, dict):
        payload["auth"] = {k: v for k, v in auth.items() if k not in SECRET_AUTH_KEYS}
    return payload


def store(portal: Portal, name: str, form: dict[str, Any]) -> BitrixEvent:
    """Persist an accepted event and queue its processing once the row is committed."""
    from bitrixapp import tasks

    event = BitrixEvent.objects.create(portal=portal, event=name, payload=without_secrets(form))
    # Robust: a broker outage must not turn a stored event into a 500 (the sweeper re-queues).
    transaction.on_commit(lambda: tasks.process_event.delay(event.pk), robust=True)
    return event


def process(event_id: int) -> None:
    """Run the event's handler once; safe to call again for an event already processed."""
    with transaction.atomic():
        event = BitrixEvent.objects.select_for_update().filter(pk=event_id).first()
        if event is None or event.state != BitrixEvent.State.RECEIVED:
            return
        event.attempts += 1
        handler = EVENT_HANDLERS.get(event.event)
        if handler is None:
            _close(event, BitrixEvent.State.IGNORED)
            return
        try:
            with transaction.atomic():
                handler(event)
        except Exception as exc:
            log.exception("event %s (%s) failed", event.pk, event.event)
            _close(event, BitrixEvent.State.FAILED, repr(exc))
            return
        _close(event, BitrixEvent.State.PROCESSED)


def _close(event: BitrixEvent, state: str, error: str = "") -> None:
    event.state = state
    event.error = error[:2000]
    event.processed_at = timezone.now()
    event.save()


def reprocess(event: BitrixEvent) -> None:
    """Admin action: run a stored event through its handler again."""
    from bitrixapp import tasks

    BitrixEvent.objects.filter(pk=event.pk).update(state=BitrixEvent.State.RECEIVED, error="")
    tasks.process_event.delay(event.pk)
