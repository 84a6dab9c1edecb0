"""Inbound Bitrix24 events: what is stored, who acts on each, and which events are bound.

Feature apps register a handler per event name (e.g. telephony for ONEXTERNALCALLSTART); the
events bound on install are exactly the registered ones plus the platform's own. An event
without a handler is kept and marked ignored. Storing and processing go through the inbox
(`bitrixapp.inbox`): retries with backoff, `failed` with the error kept, one sweeper.
"""

from collections.abc import Callable, Mapping
from typing import Any

from bitrixapp import inbox
from bitrixapp.models import BitrixEvent, Portal

EventHandler = Callable[[BitrixEvent], None]
EVENT_HANDLERS: dict[str, EventHandler] = {}

# Handled by the platform itself in the view (uninstall must stop work at once).
PLATFORM_EVENTS = ("ONAPPUNINSTALL",)


def event_handler(name: str) -> Callable[[EventHandler], EventHandler]:
    """Register the function that acts on a stored event; twice for one name is an error."""

    def register(fn: EventHandler) -> EventHandler:
        key = name.upper()
        if key in EVENT_HANDLERS or key in PLATFORM_EVENTS:
            raise RuntimeError(f"a handler for {key} is registered already")
        EVENT_HANDLERS[key] = fn
        return fn

    return register


def events_to_bind() -> tuple[str, ...]:
    """What install binds: every event some app handles, then the platform's own."""
    return (*EVENT_HANDLERS, *PLATFORM_EVENTS)


def store(
    portal: Portal,
    name: str,
    body: bytes,
    content_type: str,
    headers: Mapping[str, str],
    form: dict[str, Any],
) -> BitrixEvent:
    """Keep an authenticated event (tokens masked) and queue it once the row is committed."""
    body, kind = inbox.storable_body(body, content_type, form)
    return inbox.store(
        BitrixEvent,
        portal=portal,
        source=name,
        body=inbox.redact(body, kind, BitrixEvent.SECRET_FIELDS),
        content_type=kind,
        headers=inbox.diagnostic_headers(headers),
    )


def handle(event: BitrixEvent) -> str:
    """The inbox handler: run the event's registered handler, if any."""
    handler = EVENT_HANDLERS.get(event.source)
    if handler is None:
        return BitrixEvent.State.IGNORED
    handler(event)
    return BitrixEvent.State.PROCESSED
