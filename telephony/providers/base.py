"""What every PBX provider module gives the rest of the app (docs/adding-a-provider.md).

A provider turns the PBX's webhooks into normalized `CallEvent`s (`parse`), checks that a
webhook really comes from the connection's PBX (`verify`), starts calls (`originate`) and
downloads recordings (`fetch_recording`). Provider modules never call Bitrix24.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any, ClassVar, Protocol
from urllib.parse import parse_qsl

from django.utils.datastructures import CaseInsensitiveMapping


class Kind(enum.StrEnum):
    RINGING = "ringing"  # a leg appeared: the call reaches the PBX or rings an employee
    ANSWERED = "answered"  # a leg is connected (also after a pickup or a transfer)
    HELD = "held"
    TRANSFERRED = "transferred"  # for PBXs that signal transfers apart from a new answer
    ENDED = "ended"  # a leg disconnected
    SUMMARY = "summary"  # the whole call is over: the final record
    RECORDING_READY = "recording_ready"  # a recording can be downloaded
    UNKNOWN = "unknown"  # stored and answered 200, changes nothing


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    INTERNAL = "internal"


@dataclass(frozen=True)
class CallEvent:
    """One provider notification in the app's terms. Empty strings mean "not given"."""

    kind: Kind
    call_key: str = ""  # the provider's id of the whole call (Mango entry_id)
    leg: str = ""  # the id of this leg (Mango call_id)
    seq: int = 0  # provider order within a leg; 0 = none given
    at: float | None = None  # unix time of the event at the PBX
    direction: Direction | None = None
    client_number: str = ""  # the outside party's number, as the PBX sent it
    line_number: str = ""  # the company line (DID) the call came in on / went out through
    extension: str = ""  # the employee extension this leg is about
    transfer: str = ""  # "blind" / "consultative" when the answer follows a transfer
    answered: bool | None = None  # SUMMARY: was there a conversation
    talk_seconds: int | None = None  # SUMMARY: conversation length
    started_at: float | None = None  # SUMMARY: when the call began
    status_code: str = ""  # Bitrix24 STATUS_CODE the provider's own reason maps to
    reason: str = ""  # the provider's disconnect reason, for FAILED_REASON and diagnosis
    recording_id: str = ""
    command_id: str = ""  # echo of our originate command (click-to-call)
    raw_type: str = ""  # the provider's own event name, for logs and the admin

    def to_json(self) -> dict[str, Any]:
        # Every field is a plain value: no need for asdict's recursive deep copy (which was a
        # twentieth of a webhook acknowledgement).
        values = ((f.name, getattr(self, f.name)) for f in fields(self))
        return {k: v for k, v in values if v not in ("", None)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CallEvent:
        values = dict(data)
        values["kind"] = Kind(values["kind"])
        if values.get("direction"):
            values["direction"] = Direction(values["direction"])
        return cls(**values)


class ProviderError(Exception):
    """The PBX refused or failed a command; `message` says why in words an admin can act on.

    `permanent`: retrying the same request cannot help (the PBX refused it as such), so
    callers stop at once instead of retrying; False for outages, limits and "not yet"."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


class WebhookRejected(Exception):
    """A webhook that is not acceptable; `status` is the HTTP answer, `field` what is wrong."""

    def __init__(self, status: int, detail: str, field: str | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field


FORM = "application/x-www-form-urlencoded"


class Webhook:
    """What the view hands a provider: the request as it came, unparsed.

    For processing, the same object is rebuilt from the stored row: then secret fields are
    masked (`Provider.secret_fields`) and only the headers the provider keeps are there.
    """

    def __init__(
        self,
        path: str,
        body: bytes,
        content_type: str,
        *,
        method: str = "POST",
        query: str = "",
        headers: Mapping[str, str] | None = None,
    ):
        self.path = path.strip("/")  # below the connection's base URL, e.g. "events/call"
        self.body = body
        self.content_type = content_type.split(";")[0].strip().lower()
        self.method = method.upper()
        self.query_string = query  # raw, as sent
        self.headers: Mapping[str, str] = CaseInsensitiveMapping(dict(headers or {}))

    @cached_property
    def query(self) -> dict[str, str]:
        """The query parameters (the last value of a repeated name)."""
        return dict(parse_qsl(self.query_string, keep_blank_values=True))

    @cached_property
    def form(self) -> dict[str, str]:
        """The urlencoded fields (the last value of a repeated name), {} for other bodies."""
        if self.content_type != FORM:
            return {}
        try:
            return dict(parse_qsl(self.body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            raise WebhookRejected(400, "body is not UTF-8 form data", field="body") from None


@dataclass(frozen=True)
class SignedWebhook:
    """A webhook as the PBX would send it (built from a fixture by `Provider.sign_fixture`)."""

    path: str
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Recording:
    filename: str  # ends in .mp3 or .wav (attachRecord accepts only these)
    content: bytes


class ConnectionLike(Protocol):
    """The parts of a PbxConnection a provider may read."""

    credentials: dict[str, str]
    api_url: str


class Provider(Protocol):
    slug: ClassVar[str]
    name: ClassVar[str]
    credential_keys: ClassVar[tuple[str, ...]]  # required keys of the credentials dict
    optional_credential_keys: ClassVar[tuple[str, ...]]  # keys it takes but can do without
    sends_summary: ClassVar[bool]  # True: the call is finished on SUMMARY, not on ENDED
    # Body fields and query parameters masked in the stored request (bracket form for nesting).
    secret_fields: ClassVar[tuple[str, ...]]
    # Request headers kept with the stored request: those parse() reads, and signature headers
    # worth seeing when diagnosing.
    kept_headers: ClassVar[tuple[str, ...]]

    def verify(self, connection: ConnectionLike, hook: Webhook) -> None:
        """Raise WebhookRejected(403, hint) unless the webhook is signed by this connection."""

    def parse(self, hook: Webhook) -> list[CallEvent]:
        """Normalized events, or WebhookRejected(400, ..., field) for a malformed body."""

    def dedupe_key(self, hook: Webhook) -> str:
        """Identity of the notification: the same delivery twice gives the same key."""

    def sign_fixture(
        self, credentials: Mapping[str, str], path: str, payload: Any, headers: Mapping[str, str]
    ) -> SignedWebhook:
        """The request the PBX would send for a fixture's payload, signed with `credentials`
        (used by `replay_webhook` and the tests)."""

    def originate(
        self,
        connection: ConnectionLike,
        extension: str,
        number: str,
        command_id: str,
        line_number: str = "",
    ) -> None:
        """Ask the PBX to ring the extension, then dial the number; ProviderError if refused."""

    def fetch_recording(self, connection: ConnectionLike, recording_id: str) -> Recording:
        """Download a recording; ProviderError if it is not (yet) available."""
