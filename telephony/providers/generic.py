"""Generic JSON provider: our own documented event format, for any PBX or middleware that can
POST JSON (an Asterisk dialplan, FreeSWITCH, a script). docs/generic-webhook.md is the
integrator's page; the OpenAPI schema at /api/schema/ describes the same format.

One JSON object per request, or an array of them. Each is validated field by field by
`GenericEventSerializer` (a 400 names the field and the expected form); one bad event refuses
the whole request, so nothing is partially applied.

Signature: `X-Timestamp: <unix seconds>` and `X-Signature: sha256=<hex>`, the HMAC-SHA256
keyed with the connection's `secret` of `<timestamp>.<raw body>`. A timestamp more than five
minutes away from our clock is refused (a captured request cannot be replayed later; within
the window the same body is a duplicate). During a secret rotation `previous_secret` is
accepted too, until the admin removes it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from bitrixapp import public_http, storable
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

TIMEOUT = (5, 30)  # (connect, read) seconds for a recording download
# A call recording is a few MB (an hour of 8 kHz audio is ~60 MB); the URL is the PBX's to
# choose, so a larger answer is refused rather than held in a worker's memory.
RECORDING_MAX_BYTES = 200 * 1024 * 1024
WINDOW_S = 300  # how far X-Timestamp may be from our clock, either way
TIMESTAMP_HEADER, SIGNATURE_HEADER = "X-Timestamp", "X-Signature"
MAX_EVENTS = 100  # events in one request (an array)
MAX_EXTENSIONS = 50  # extensions of one ring group
LATEST_TIME = 4102444800  # 2100-01-01
LONGEST_TALK_S = 30 * 24 * 3600
MAX_SEQ = 2**31 - 1


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=` + hex HMAC-SHA256 of `<timestamp>.<body>` keyed with the secret."""
    message = timestamp.encode("ascii") + b"." + body
    return "sha256=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


# `event` → what it becomes. `ended` is the final record of the whole call.
EVENTS: dict[str, Kind] = {
    "ringing": Kind.RINGING,
    "answered": Kind.ANSWERED,
    "transferred": Kind.TRANSFERRED,
    "ended": Kind.SUMMARY,
    "recording": Kind.RECORDING_READY,
}

DIRECTIONS: dict[str, Direction] = {"in": Direction.INBOUND, "out": Direction.OUTBOUND}

# `status` of an `ended` event: a named reason (case-insensitive; Asterisk's ${DIALSTATUS}
# values included) → Bitrix24 STATUS_CODE. A Bitrix24 code itself is accepted as is.
NAMED_STATUS: dict[str, str] = {
    "answered": "200",
    "answer": "200",  # DIALSTATUS
    "completed": "200",
    "no_answer": "304",
    "noanswer": "304",  # DIALSTATUS
    "missed": "304",
    "cancel": "304",  # DIALSTATUS: the caller hung up while it rang, a missed call
    "busy": "486",
    "rejected": "603",
    "declined": "603",
    "cancelled": "603-S",
    "unavailable": "480",
    "chanunavail": "480",  # DIALSTATUS
    "congestion": "503",  # DIALSTATUS
    "not_found": "404",
    "invalid_number": "404",
    "forbidden": "403",
    "blocked": "423",
    "no_funds": "402",
    "failed": "OTHER",
}
BITRIX_STATUS = frozenset({*NAMED_STATUS.values(), "484"})


# ---------------------------------------------------------------- the format, field by field


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "maxLength": 64},
            {"type": "array", "items": {"type": "string", "maxLength": 64}, "maxItems": 50},
        ]
    }
)
class ExtensionField(serializers.Field):
    """One extension as text, or a list of them (a ring group)."""

    default_error_messages = {
        "invalid": "must be text or a list of texts (at most {max} items of 64 characters)",
    }

    def to_internal_value(self, data: Any) -> list[str]:
        items = data if isinstance(data, list) else [data]
        if len(items) > MAX_EXTENSIONS or not all(_is_extension(x) for x in items):
            self.fail("invalid", max=MAX_EXTENSIONS)
        return [str(x) for x in items if str(x)]

    def to_representation(self, value: Any) -> Any:
        return value


@extend_schema_field(
    {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "integer", "minimum": 1}]}
)
class TimestampField(serializers.Field):
    """ISO-8601 with an offset, or Unix seconds (a number or digits)."""

    default_error_messages = {
        "invalid": "must be ISO-8601 with a UTC offset (2024-06-17T10:00:00+03:00) or Unix "
        "seconds (1718607600)",
    }

    def to_internal_value(self, data: Any) -> float:
        seconds = _epoch(data)
        if seconds is None or not 0 < seconds <= LATEST_TIME:
            self.fail("invalid")
        return seconds

    def to_representation(self, value: Any) -> Any:
        return value


class GenericEventSerializer(serializers.Serializer):
    """One event of the generic JSON webhook (docs/generic-webhook.md)."""

    call_id = serializers.CharField(
        max_length=255, help_text="The call's id, the same in every event of one call"
    )
    event = serializers.ChoiceField(choices=list(EVENTS), help_text="What happened")
    direction = serializers.ChoiceField(
        choices=list(DIRECTIONS), default="in", help_text="in: the client called; out: we did"
    )
    client_number = serializers.CharField(
        max_length=64, required=False, allow_blank=True, help_text="The client's phone number"
    )
    line = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        help_text="The company number: dialed by the client (in) or shown as caller ID (out)",
    )
    extension = ExtensionField(
        required=False,
        help_text="Who rings (a list for a ring group), answered, or was transferred to",
    )
    timestamp = TimestampField(
        required=False, help_text="When it happened: ISO-8601 with offset, or Unix seconds"
    )
    duration = serializers.IntegerField(
        min_value=0,
        max_value=LONGEST_TALK_S,
        required=False,
        help_text="ended: seconds of conversation (0 or absent if nobody answered)",
    )
    status = serializers.CharField(
        max_length=16,
        required=False,
        allow_blank=True,
        help_text="ended: a Bitrix24 STATUS_CODE (200, 304, 486 ...) or a named reason: "
        + ", ".join(sorted(NAMED_STATUS)),
    )
    recording_url = serializers.URLField(
        max_length=255,
        required=False,
        allow_blank=True,
        help_text="recording (required) or ended: an http(s) URL the app downloads the file "
        "from (.mp3 or .wav)",
    )
    seq = serializers.IntegerField(
        min_value=0,
        max_value=MAX_SEQ,
        required=False,
        help_text="Optional order of the call's events (an older seq of a leg is ignored)",
    )

    # What each field must look like, appended to its error (the 400's detail).
    EXPECTED: ClassVar[dict[str, str]] = {
        "call_id": "text of 1 to 255 characters",
        "event": "one of " + ", ".join(EVENTS),
        "direction": "in or out",
        "client_number": "text of up to 64 characters, e.g. +79161234567",
        "line": "text of up to 64 characters, e.g. +74951234567",
        "duration": f"a whole number of seconds from 0 to {LONGEST_TALK_S}",
        "status": "a Bitrix24 STATUS_CODE or one of " + ", ".join(sorted(NAMED_STATUS)),
        "recording_url": "an http or https URL of up to 255 characters",
        "seq": f"a whole number from 0 to {MAX_SEQ}",
    }

    def validate_status(self, value: str) -> str:
        if value and value.lower() not in NAMED_STATUS and value.upper() not in BITRIX_STATUS:
            raise serializers.ValidationError(f"unknown status {value[:16]!r}")
        return value

    def validate_recording_url(self, value: str) -> str:
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise serializers.ValidationError("must be an http or https URL")
        return value

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if data["event"] == "recording" and not data.get("recording_url"):
            raise serializers.ValidationError({"recording_url": "is required for a recording"})
        return data


def _is_extension(value: Any) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool) and len(str(value)) <= 64


def _epoch(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value == value else None  # NaN is not a time
    if not isinstance(value, str):
        return None
    if value.isdigit() and len(value) <= 12:
        return float(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo else None


# ---------------------------------------------------------------- the provider


class GenericJson:
    slug: ClassVar[str] = "generic"
    name: ClassVar[str] = "Generic JSON webhook (any PBX)"
    credential_keys: ClassVar[tuple[str, ...]] = ("secret",)
    optional_credential_keys: ClassVar[tuple[str, ...]] = ("previous_secret",)
    sends_summary: ClassVar[bool] = True  # `ended` is about the whole call
    secret_fields: ClassVar[tuple[str, ...]] = ()
    kept_headers: ClassVar[tuple[str, ...]] = (TIMESTAMP_HEADER, SIGNATURE_HEADER)
    webhook_hint: ClassVar[str] = _(
        "Post the events of docs/generic-webhook.md to this URL, signed with the secret."
    )

    def verify(self, connection: ConnectionLike, hook: Webhook) -> None:
        timestamp = _timestamp(hook)
        given = hook.headers.get(SIGNATURE_HEADER, "").strip().lower()
        if not given:
            raise WebhookRejected(
                403, f"{SIGNATURE_HEADER} is required: sha256=<hex HMAC-SHA256>", SIGNATURE_HEADER
            )
        credentials = connection.credentials or {}
        secrets = [credentials.get(k) for k in ("secret", "previous_secret")]
        matches = [
            hmac.compare_digest(given.encode(), signature(s, timestamp, hook.body).encode())
            for s in secrets
            if s
        ]
        if not any(matches):
            raise WebhookRejected(
                403,
                f"{SIGNATURE_HEADER} does not match: it must be sha256=<hex HMAC-SHA256 of "
                f"'<X-Timestamp>.<body>'> keyed with this connection's secret",
                SIGNATURE_HEADER,
            )

    def parse(self, hook: Webhook) -> list[CallEvent]:
        items = _events_in(hook)
        checked = [_validated(item, f"[{i}]." if len(items) > 1 else "") for i, item in items]
        return [event for data in checked for event in _call_events(data)]

    def dedupe_key(self, hook: Webhook) -> str:
        # The body alone: the same events re-sent with a new X-Timestamp are a duplicate.
        return hashlib.sha256(hook.body).hexdigest()

    def sign_fixture(
        self, credentials: Mapping[str, str], path: str, payload: Any, headers: Mapping[str, str]
    ) -> SignedWebhook:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        timestamp = str(int(time.time()))
        signed = {
            **headers,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(credentials["secret"], timestamp, body),
        }
        return SignedWebhook(path, body, "application/json", signed)

    def originate(
        self,
        connection: ConnectionLike,
        extension: str,
        number: str,
        command_id: str,
        line_number: str = "",
    ) -> None:
        # The format is one-way (PBX → app): there is no endpoint of the PBX to call.
        raise ProviderError(
            "click-to-call is not available for generic JSON connections (the PBX only "
            "posts events)",
            permanent=True,
        )

    def fetch_recording(self, connection: ConnectionLike, recording_id: str) -> Recording:
        """`recording_id` is the event's recording_url (checked as http(s) when received),
        downloaded from a public address only (bitrixapp.public_http)."""
        try:
            with (
                public_http.session() as http,
                http.get(
                    recording_id, timeout=TIMEOUT, allow_redirects=True, stream=True
                ) as answer,
            ):
                if answer.status_code in (401, 403, 410):
                    raise ProviderError(
                        f"the PBX refused the recording download (HTTP {answer.status_code})",
                        permanent=True,
                    )
                content = _capped(answer) if answer.status_code == 200 else b""
        except public_http.PrivateAddress as exc:
            raise ProviderError(public_http.refusal(exc), permanent=True) from None
        except requests.RequestException as exc:
            # str(exc) would show the URL, which may carry a token.
            raise ProviderError(f"recording download failed ({type(exc).__name__})") from None
        if not content:
            raise ProviderError(
                f"recording not available yet (HTTP {answer.status_code} from the PBX)"
            )
        return Recording(_filename(recording_id, answer), content)


# ---------------------------------------------------------------- helpers


def _capped(answer: requests.Response) -> bytes:
    """The body, read in chunks up to RECORDING_MAX_BYTES; a larger one fails for good."""
    chunks, size = [], 0
    for chunk in answer.iter_content(chunk_size=1024 * 1024):
        size += len(chunk)
        if size > RECORDING_MAX_BYTES:
            raise ProviderError(
                f"the recording is larger than {RECORDING_MAX_BYTES // (1024 * 1024)} MB",
                permanent=True,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _timestamp(hook: Webhook) -> str:
    value = hook.headers.get(TIMESTAMP_HEADER, "").strip()
    if not value:
        raise WebhookRejected(
            403, f"{TIMESTAMP_HEADER} is required: Unix seconds", TIMESTAMP_HEADER
        )
    if not (value.isdigit() and len(value) <= 12):
        raise WebhookRejected(
            400, f"{TIMESTAMP_HEADER} must be Unix seconds, e.g. 1718607600", TIMESTAMP_HEADER
        )
    skew = int(value) - time.time()
    if abs(skew) > WINDOW_S:
        raise WebhookRejected(
            403,
            f"{TIMESTAMP_HEADER} is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} "
            f"the server's clock: requests more than {WINDOW_S // 60} minutes off are refused "
            "(replay protection); check the PBX's clock",
            TIMESTAMP_HEADER,
        )
    return value


def _events_in(hook: Webhook) -> list[tuple[int, Any]]:
    try:
        body = json.loads(hook.body)
    except (ValueError, RecursionError):
        raise WebhookRejected(400, "body must be a JSON object or an array", "body") from None
    problem = storable.find_problem(body)
    if problem:
        name = _field_name(problem.path)
        raise WebhookRejected(400, f"{name} {problem.reason}", name)
    items = body if isinstance(body, list) else [body]
    if not items or len(items) > MAX_EVENTS:
        raise WebhookRejected(400, f"body must hold 1 to {MAX_EVENTS} events", "body")
    return list(enumerate(items))


def _validated(item: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise WebhookRejected(400, f"{prefix or 'body'} must be a JSON object", prefix or "body")
    serializer = GenericEventSerializer(data=item)
    if serializer.is_valid():
        return serializer.validated_data
    name, messages = next(iter(serializer.errors.items()))
    message = " ".join(str(m) for m in messages).rstrip(".")
    expected = GenericEventSerializer.EXPECTED.get(name)
    hint = f" (expected {expected})" if expected and expected not in message else ""
    field = prefix + name
    raise WebhookRejected(400, f"{field}: {message}{hint}", field)


def _call_events(d: dict[str, Any]) -> list[CallEvent]:
    kind = EVENTS[d["event"]]
    extensions = d.get("extension") or [""]
    common = {
        "call_key": d["call_id"],
        "seq": d.get("seq", 0),
        "at": d.get("timestamp"),
        "direction": DIRECTIONS[d["direction"]],
        "client_number": d.get("client_number", ""),
        "line_number": d.get("line", ""),
        "raw_type": d["event"],
    }
    if kind is Kind.RINGING:  # a ring group: one leg per extension
        return [CallEvent(kind=kind, leg=ext, extension=ext, **common) for ext in extensions]
    if kind in (Kind.ANSWERED, Kind.TRANSFERRED):
        transfer = "blind" if kind is Kind.TRANSFERRED else ""
        ext = extensions[0]
        return [CallEvent(kind=kind, leg=ext, extension=ext, transfer=transfer, **common)]
    recording = _recording(d)
    if kind is Kind.RECORDING_READY:
        return recording
    return [_ended(d, extensions[0], common), *recording]


def _ended(d: dict[str, Any], extension: str, common: dict[str, Any]) -> CallEvent:
    status = _status_code(d.get("status", ""))
    duration = d.get("duration", 0)
    answered = status == "200" if status else duration > 0
    return CallEvent(
        kind=Kind.SUMMARY,
        extension=extension,
        answered=answered,
        talk_seconds=duration if answered else 0,
        status_code=status or ("200" if answered else "304"),
        reason=d.get("status", ""),
        **common,
    )


def _recording(d: dict[str, Any]) -> list[CallEvent]:
    url = d.get("recording_url")
    if not url:
        return []
    return [CallEvent(kind=Kind.RECORDING_READY, call_key=d["call_id"], recording_id=url)]


def _status_code(status: str) -> str:
    return NAMED_STATUS.get(status.lower()) or (status.upper() if status else "")


def _filename(url: str, answer: requests.Response) -> str:
    content_type = answer.headers.get("Content-Type", "").split(";")[0].strip().lower()
    name = urlsplit(url).path.rsplit("/", 1)[-1] or "recording"
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", name.rsplit(".", 1)[0])[:100] or "recording"
    wav = "wav" in content_type or url.split("?")[0].lower().endswith(".wav")
    return f"{stem}.{'wav' if wav else 'mp3'}"


def _field_name(path: tuple[str, ...] | list[str]) -> str:
    """The dotted name of a bad value for the 400, or "body" when the name itself cannot be
    stored or shown (a key with a NUL or a lone surrogate)."""
    name = storable.shorten(".".join(str(part) for part in path))
    return name if name and not storable.find_problem(name) else "body"
