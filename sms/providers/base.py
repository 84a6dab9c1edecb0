"""What an SMS gateway provider offers the app: send one message, read its status, and read
the delivery reports the gateway pushes. Providers never call Bitrix24 and hold no state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


class SendError(Exception):
    """The gateway did not take the message. `permanent`: no retry can help (a bad number, an
    unknown alpha name); otherwise try again later (rate limit, outage, network)."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        retry_after: float | None = None,
        sender_refused: bool = False,
    ):
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after
        # The gateway refuses the sender name itself (not registered, not allowed): every
        # message of that sender fails the same way until an admin sorts it out with the gateway.
        self.sender_refused = sender_refused


class ReportRejected(ValueError):
    """A pushed report cannot be read; the message names the field."""

    def __init__(self, detail: str, field: str | None = None):
        super().__init__(detail)
        self.detail, self.field = detail, field


@dataclass(frozen=True)
class Report:
    """A delivery status as the gateway tells it, mapped to our status (None: not yet known)."""

    provider_message_id: str
    extra_id: str
    status: str | None
    reason: str
    parts: int | None = None


@dataclass(frozen=True)
class Outgoing:
    """What a provider needs to send one message."""

    extra_id: str
    phone_e164: str
    text: str
    alpha_name: str
    ttl_s: int
    callback_url: str


class SmsProvider:
    slug: ClassVar[str]
    name: ClassVar[str]
    credential_keys: ClassVar[tuple[str, ...]]
    optional_credential_keys: ClassVar[tuple[str, ...]] = ()
    default_api_url: ClassVar[str]

    def send(self, account: Any, message: Outgoing) -> str:
        """Hand the message to the gateway; its message id. Raises SendError."""
        raise NotImplementedError

    def poll(self, account: Any, extra_id: str) -> Report | None:
        """The current status by our id; None when the gateway has none yet. Raises SendError."""
        raise NotImplementedError

    def parse_reports(self, document: Any) -> list[Report]:
        """The reports in one pushed body (already decoded). Raises ReportRejected."""
        raise NotImplementedError
