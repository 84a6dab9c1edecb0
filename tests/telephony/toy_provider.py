"""A toy PBX provider, added exactly as docs/adding-a-provider.md says (one module, one
`providers.register` line, fixtures), to prove the interface fits a header-signed JSON PBX.

It posts one JSON object per event to the connection's URL, names the event in an
`X-Toy-Event` header and signs the raw body with HMAC-SHA256 in `X-Toy-Signature`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any, ClassVar

from telephony.providers.base import (
    CallEvent,
    ConnectionLike,
    Direction,
    Kind,
    ProviderError,
    Recording,
    SignedWebhook,
    Webhook,
    WebhookRejected,
)

EVENT_HEADER, SIGNATURE_HEADER = "X-Toy-Event", "X-Toy-Signature"


def signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Toy:
    slug: ClassVar[str] = "toy"
    name: ClassVar[str] = "Toy PBX"
    credential_keys: ClassVar[tuple[str, ...]] = ("secret",)
    optional_credential_keys: ClassVar[tuple[str, ...]] = ()
    sends_summary: ClassVar[bool] = False
    secret_fields: ClassVar[tuple[str, ...]] = ()
    # parse() reads the event name from a header: it must be kept with the stored request.
    kept_headers: ClassVar[tuple[str, ...]] = (EVENT_HEADER, SIGNATURE_HEADER)

    EVENTS: ClassVar[dict[str, Kind]] = {
        "ring": Kind.RINGING,
        "answer": Kind.ANSWERED,
        "hangup": Kind.ENDED,
    }
    # Where each CallEvent field comes from in the body; a later firmware renamed `call`.
    FIELDS: ClassVar[dict[str, tuple[str, ...]]] = {
        "call_key": ("call",),
        "client_number": ("from",),
        "line_number": ("line",),
        "extension": ("ext",),
    }

    def verify(self, connection: ConnectionLike, hook: Webhook) -> None:
        given = hook.headers.get(SIGNATURE_HEADER, "")
        expected = signature(connection.credentials.get("secret", ""), hook.body)
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise WebhookRejected(403, f"{SIGNATURE_HEADER} does not match: check the secret")

    def parse(self, hook: Webhook) -> list[CallEvent]:
        kind = self.EVENTS.get(hook.headers.get(EVENT_HEADER, ""), Kind.UNKNOWN)
        try:
            body = json.loads(hook.body)
        except ValueError:
            raise WebhookRejected(400, "body is not JSON", field="body") from None
        if not isinstance(body, dict):
            raise WebhookRejected(400, "body is not a JSON object", field="body")
        values = {field: self._first(body, names) for field, names in self.FIELDS.items()}
        if not values["call_key"]:
            raise WebhookRejected(400, "call is required", field="call")
        return [
            CallEvent(
                kind=kind,
                direction=Direction.INBOUND,
                talk_seconds=int(body["talked"]) if "talked" in body else None,
                raw_type=hook.headers.get(EVENT_HEADER, ""),
                **values,
            )
        ]

    @staticmethod
    def _first(body: dict[str, Any], names: tuple[str, ...]) -> str:
        return next((str(body[name]) for name in names if body.get(name) is not None), "")

    def dedupe_key(self, hook: Webhook) -> str:
        event = hook.headers.get(EVENT_HEADER, "")
        return hashlib.sha256(event.encode() + b"\n" + hook.body).hexdigest()

    def sign_fixture(
        self, credentials: Mapping[str, str], path: str, payload: Any, headers: Mapping[str, str]
    ) -> SignedWebhook:
        body = json.dumps(payload).encode()
        signed = {**headers, SIGNATURE_HEADER: signature(credentials["secret"], body)}
        return SignedWebhook(path, body, "application/json", signed)

    def originate(
        self,
        connection: ConnectionLike,
        extension: str,
        number: str,
        command_id: str,
        line_number: str = "",
    ) -> None:
        raise ProviderError("the toy PBX cannot place calls", permanent=True)

    def fetch_recording(self, connection: ConnectionLike, recording_id: str) -> Recording:
        raise ProviderError("the toy PBX keeps no recordings", permanent=True)
