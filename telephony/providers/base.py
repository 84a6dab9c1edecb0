"""What every PBX provider module gives the rest of the app (DESIGN.md principle 6).

A provider turns the PBX's webhooks into normalized `CallEvent`s (`parse`), checks that a
webhook really comes from the connection's PBX (`verify`), starts calls (`originate`) and
downloads recordings (`fetch_recording`). Provider modules never call Bitrix24.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Protocol


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
        return {k: v for k, v in asdict(self).items() if v not in ("", None)}

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


@dataclass
class Webhook:
    """What the view hands a provider: the raw request, unparsed."""

    path: str  # below the connection's base URL, e.g. "events/call"
    body: bytes
    content_type: str
    form: dict[str, str] = field(default_factory=dict)  # urlencoded fields, values as sent


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
    sends_summary: ClassVar[bool]  # True: the call is finished on SUMMARY, not on ENDED

    def verify(self, connection: ConnectionLike, hook: Webhook) -> None:
        """Raise WebhookRejected(403, hint) unless the webhook is signed by this connection."""

    def parse(self, hook: Webhook) -> list[CallEvent]:
        """Normalized events, or WebhookRejected(400, ..., field) for a malformed body."""

    def dedupe_key(self, hook: Webhook) -> str:
        """Identity of the notification: the same delivery twice gives the same key."""

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
