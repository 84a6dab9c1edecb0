"""MTT ("MTT Business" virtual PBX) provider: real-time call notifications in, recordings out.

MTT's real-time notifications are known from integrator documentation, not from a public
specification: each is one JSON POST whose `type` is `incoming_call` (ringing), `answer_call`
(an operator answered; its `extension` is who actually answered — in a group call that person,
not the original target), `end_call` (the call is over, `duration` in seconds) or `miss_call`
(nobody answered). Every field name lives in `FIELDS`, with the aliases seen, so a renamed
field is a one-line change; fields we do not know are ignored.

Delivery has no guarantees: a notification may come twice, late, or never. A repeat is a
duplicate (same body, same key); `end_call` and `miss_call` are the final record of the call
(Kind.SUMMARY), so a call whose earlier notifications were lost is still logged and finished.

Authentication: the connection's secret webhook URL, plus, when the connection has a
`secret`, either an HMAC-SHA256 of the raw body in a signature header or the secret itself in
a `token` query parameter.

Recordings: `GET {api_url}/v1/records/{call_id}` with `Authorization: Bearer <api_key>`
answers `{"url": ...}` once the file exists. With an `api_key` of the form `login:password`
the Telecom API form is used instead: `GET {api_url}/v1/records/{id}/urls` with Basic auth
answers a JSON list of file URLs (api_url https://rc.mtt.ru/; documented on wiki.mtt.ru,
"Telecom API", recording download).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import requests
from django.utils.translation import gettext_lazy as _

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

TIMEOUT = (5, 15)  # (connect, read) seconds for every request to MTT
LATEST_TIME = 4102444800  # 2100-01-01: epoch seconds beyond it are not times a PBX reports
LONGEST_TALK_S = 30 * 24 * 3600
TEXT_LIMIT = 64  # number, extension and line columns
CALL_ID_LIMIT = 255  # Call.call_key
TOKEN_PARAMETER = "token"  # noqa: S105 (the name of the query parameter, not a secret)

Payload = dict[str, Any]


def signature(secret: str, body: bytes) -> str:
    """HMAC-SHA256 of the raw body keyed with the connection's secret, lowercase hex."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class Mtt:
    slug: ClassVar[str] = "mtt"
    name: ClassVar[str] = "MTT"
    credential_keys: ClassVar[tuple[str, ...]] = ("api_key",)
    optional_credential_keys: ClassVar[tuple[str, ...]] = ("secret",)
    # end_call / miss_call close the whole call: they are its final record.
    sends_summary: ClassVar[bool] = True
    default_api_url: ClassVar[str] = "https://api.mtt.ru/"
    secret_fields: ClassVar[tuple[str, ...]] = (TOKEN_PARAMETER,)
    # Signature headers are kept for diagnosis; parse() reads none.
    SIGNATURE_HEADERS: ClassVar[tuple[str, ...]] = ("X-MTT-Signature", "X-Signature")
    kept_headers: ClassVar[tuple[str, ...]] = SIGNATURE_HEADERS
    webhook_hint: ClassVar[str] = _(
        "In the MTT Business cabinet: Open API → My integrations, the integration's URL."
    )
    # "end_call with a duration below the minimum is a missed call": 3 s unless set otherwise.
    setting_defaults: ClassVar[dict[str, Any]] = {"missed_call_min_duration_s": 3}

    # Where each value comes from: the first of the names present wins. The first name is the
    # integrators' documentation's; the others are spellings seen in MTT's other APIs
    # (Telecom API call history: cli, cld, h323_conf_id, used_quantity).
    FIELDS: ClassVar[dict[str, tuple[str, ...]]] = {
        "type": ("type", "event", "event_type"),
        "call_id": ("call_id", "callid", "call_uuid", "h323_conf_id"),
        "from_number": ("from_number", "caller", "cli", "from"),
        "to_number": ("to_number", "called", "cld", "to"),
        "extension": ("extension", "ext", "operator", "sip_id"),
        "timestamp": ("timestamp", "time", "event_time"),
        "duration": ("duration", "talk_duration", "used_quantity"),
        "direction": ("direction", "call_direction"),
        "record_id": ("record_id", "recording_id"),
        "recorded": ("recorded", "is_recorded", "record"),
    }

    EVENTS: ClassVar[dict[str, Kind]] = {
        "incoming_call": Kind.RINGING,
        "answer_call": Kind.ANSWERED,
        "end_call": Kind.SUMMARY,
        "miss_call": Kind.SUMMARY,
    }

    # Optional `direction`: notifications without it are about incoming calls.
    DIRECTIONS: ClassVar[dict[str, Direction]] = {
        "in": Direction.INBOUND,
        "incoming": Direction.INBOUND,
        "inbound": Direction.INBOUND,
        "out": Direction.OUTBOUND,
        "outgoing": Direction.OUTBOUND,
        "outbound": Direction.OUTBOUND,
    }

    # Which number is the client's and which the company's line, by direction.
    PARTIES: ClassVar[dict[Direction, tuple[str, str]]] = {
        Direction.INBOUND: ("from_number", "to_number"),
        Direction.OUTBOUND: ("to_number", "from_number"),
    }

    # Recording API answers that mean "retry later" / "never".
    RECORDING_NOT_YET: ClassVar[frozenset[int]] = frozenset(
        {202, 404, 409, 425, 429, 500, 502, 503}
    )
    RECORDING_REFUSED: ClassVar[dict[int, str]] = {
        401: "MTT refused the api_key (HTTP 401): check api_key of this connection",
        403: "MTT refused access to the recording (HTTP 403): check the api_key's rights",
        410: "MTT no longer keeps this recording (HTTP 410)",
    }
    RECORDING_TYPES: ClassVar[dict[str, str]] = {"audio/wav": "wav", "audio/x-wav": "wav"}

    # Webhook inbound ------------------------------------------------------------------------

    def verify(self, connection: ConnectionLike, hook: Webhook) -> None:
        secret = (connection.credentials or {}).get("secret") or ""
        if not secret:
            return  # the secret URL alone identifies the connection
        token = hook.query.get(TOKEN_PARAMETER, "")
        if token:
            if not _same(token, secret):
                raise WebhookRejected(403, "token does not match this connection's secret")
            return
        given = next((hook.headers[h] for h in self.SIGNATURE_HEADERS if h in hook.headers), "")
        if not given:
            raise WebhookRejected(
                403,
                "this connection has a secret: sign the body (X-Signature: HMAC-SHA256 hex) "
                "or add ?token=<secret> to the URL",
            )
        if not _same(given.strip().lower().removeprefix("sha256="), signature(secret, hook.body)):
            raise WebhookRejected(
                403, "X-Signature does not match: check the secret of this connection"
            )

    def parse(self, hook: Webhook) -> list[CallEvent]:
        payload = _payload(hook)
        values = {name: _first(payload, names) for name, names in self.FIELDS.items()}
        kind = self.EVENTS.get(_text(values["type"]), Kind.UNKNOWN)
        if kind is Kind.UNKNOWN:
            return [CallEvent(kind=Kind.UNKNOWN, raw_type=_text(values["type"])[:64])]
        _check(values)
        return self._events(kind, values)

    def _events(self, kind: Kind, v: Payload) -> list[CallEvent]:
        direction = self.DIRECTIONS.get(_text(v["direction"]).lower(), Direction.INBOUND)
        client, line = self.PARTIES[direction]
        raw_type = _text(v["type"])
        talk = _seconds(v["duration"], "duration", LONGEST_TALK_S)
        # Answered: the call had a conversation. miss_call never did; end_call did if it
        # lasted at all (the engine turns one shorter than the minimum into a missed call).
        answered = raw_type == "end_call" and bool(talk)
        common = {
            "call_key": _text(v["call_id"]),
            "at": _seconds(v["timestamp"], "timestamp", LATEST_TIME) or None,
            "direction": direction,
            "client_number": _text(v[client]),
            "line_number": _text(v[line]),
            "extension": _text(v["extension"]),
            "raw_type": raw_type,
        }
        if kind is not Kind.SUMMARY:
            return [CallEvent(kind=kind, leg=common["extension"], **common)]
        summary = CallEvent(
            kind=kind,
            answered=answered,
            talk_seconds=talk if answered else 0,
            status_code="200" if answered else "304",
            **common,
        )
        return [summary, *self._recording(v, answered, common["call_key"])]

    def _recording(self, v: Payload, answered: bool, call_key: str) -> list[CallEvent]:
        """An answered call's recording is fetched unless the notification says it was not
        recorded; MTT sends no separate "recording ready" notification."""
        if not answered or _text(v["recorded"]).lower() in ("0", "false", "no"):
            return []
        recording_id = _text(v["record_id"]) or call_key
        return [CallEvent(kind=Kind.RECORDING_READY, call_key=call_key, recording_id=recording_id)]

    def dedupe_key(self, hook: Webhook) -> str:
        # MTT re-sends the same body on retry.
        return hashlib.sha256(hook.body).hexdigest()

    def sign_fixture(
        self, credentials: Mapping[str, str], path: str, payload: Any, headers: Mapping[str, str]
    ) -> SignedWebhook:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        signed = dict(headers)
        if credentials.get("secret"):
            signed["X-Signature"] = signature(credentials["secret"], body)
        return SignedWebhook(path, body, "application/json", signed)

    # Outbound -------------------------------------------------------------------------------

    def originate(
        self,
        connection: ConnectionLike,
        extension: str,
        number: str,
        command_id: str,
        line_number: str = "",
    ) -> None:
        # The VATS API's click-to-call method is given to partners only (the Open API is in
        # pilot operation): not implemented, so the CRM shows this instead of waiting.
        raise ProviderError(
            "click-to-call is not available for MTT connections: MTT's VATS API documents it "
            "for partners only",
            permanent=True,
        )

    def fetch_recording(self, connection: ConnectionLike, recording_id: str) -> Recording:
        api_key = (connection.credentials or {}).get("api_key") or ""
        if not api_key:
            raise ProviderError("this connection has no api_key: fill in its MTT credentials")
        style = RECORDING_STYLES["basic" if ":" in api_key else "bearer"]
        answer = self._get(style.url(_api_url(connection), recording_id), style.auth(api_key))
        self._check(answer, recording_id, "the recordings API")
        link = style.link(answer)
        if not link:
            raise ProviderError(f"recording {recording_id} not available yet (no file URL)")
        file = self._get(link, {})
        self._check(file, recording_id, "the file download")
        return Recording(self._filename(recording_id, link, file), file.content)

    def _get(self, url: str, headers: dict[str, str]) -> requests.Response:
        try:
            with public_http.session() as http:
                return http.get(url, headers=headers, timeout=TIMEOUT)
        except public_http.PrivateAddress as exc:
            raise ProviderError(public_http.refusal(exc), permanent=True) from None
        except requests.RequestException as exc:
            # str(exc) may contain a signed file link: name the error class only.
            raise ProviderError(f"MTT unreachable: {type(exc).__name__}") from None

    def _check(self, answer: requests.Response, recording_id: str, what: str) -> None:
        if answer.status_code == 200 and answer.content:
            return
        if answer.status_code in self.RECORDING_REFUSED:
            raise ProviderError(self.RECORDING_REFUSED[answer.status_code], permanent=True)
        raise ProviderError(
            f"recording {recording_id} not available yet ({what} answered HTTP "
            f"{answer.status_code})"
        )

    def _filename(self, recording_id: str, link: str, answer: requests.Response) -> str:
        content_type = answer.headers.get("Content-Type", "").split(";")[0].strip().lower()
        extension = self.RECORDING_TYPES.get(content_type)
        if extension is None:
            extension = "wav" if link.split("?")[0].lower().endswith(".wav") else "mp3"
        return f"{re.sub(r'[^A-Za-z0-9._-]', '_', recording_id)}.{extension}"


class RecordingStyle:
    """One way of asking MTT for a recording's file URL."""

    def __init__(
        self,
        path: str,
        auth: Callable[[str], dict[str, str]],
        link: Callable[[requests.Response], str],
    ):
        self.path, self.auth, self.link = path, auth, link

    def url(self, api_url: str, recording_id: str) -> str:
        return api_url + self.path.format(id=quote(recording_id, safe=""))


def _bearer(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def _basic(api_key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(api_key.encode()).decode()}


def _url_field(answer: requests.Response) -> str:
    body = _json_of(answer)
    return _text(body.get("url") or body.get("download_url")) if isinstance(body, dict) else ""


def _first_url(answer: requests.Response) -> str:
    # One call may be split into several files (…_1.wav, …_2.wav); Bitrix24 takes one per
    # attachRecord, so the first is attached.
    body = _json_of(answer)
    return _text(body[0]) if isinstance(body, list) and body else ""


RECORDING_STYLES = {
    "bearer": RecordingStyle("v1/records/{id}", _bearer, _url_field),
    "basic": RecordingStyle("v1/records/{id}/urls", _basic, _first_url),
}


# Helpers ------------------------------------------------------------------------------------


def _payload(hook: Webhook) -> Payload:
    try:
        payload = json.loads(hook.body)
    except (ValueError, RecursionError):
        raise WebhookRejected(400, "body is not JSON", field="body") from None
    if not isinstance(payload, dict):
        raise WebhookRejected(400, "body is not a JSON object", field="body")
    problem = storable.find_problem(payload)
    if problem:
        name = _field_name(problem.path)
        raise WebhookRejected(400, f"{name} {problem.reason}", field=name)
    return payload


def _first(payload: Payload, names: tuple[str, ...]) -> Any:
    return next((payload[name] for name in names if payload.get(name) not in (None, "")), None)


# The longest text each value may have (where it is stored); objects and lists are refused.
LIMITS = {
    "call_id": CALL_ID_LIMIT,
    "from_number": TEXT_LIMIT,
    "to_number": TEXT_LIMIT,
    "extension": TEXT_LIMIT,
    "record_id": CALL_ID_LIMIT,
    "direction": TEXT_LIMIT,
}


def _check(values: Payload) -> None:
    if not _text(values["call_id"]):
        raise WebhookRejected(400, "call_id is required (the call's id)", field="call_id")
    for name, limit in LIMITS.items():
        value = values[name]
        if isinstance(value, dict | list):
            raise WebhookRejected(400, f"{name} must be text", field=name)
        if len(_text(value)) > limit:
            raise WebhookRejected(400, f"{name} is longer than {limit} characters", field=name)


def _seconds(value: Any, name: str, maximum: int) -> int:
    """A whole number of seconds from 0 to `maximum`; absent is 0; "12" and 12.0 are read."""
    if value is None or value == "":
        return 0
    try:
        number = None if isinstance(value, bool) else int(float(value))
    except (TypeError, ValueError, OverflowError):
        number = None
    if number is None or not 0 <= number <= maximum:
        raise WebhookRejected(
            400, f"{name} must be a whole number of seconds from 0 to {maximum}", field=name
        )
    return number


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _same(given: str, expected: str) -> bool:
    # bytes: compare_digest rejects non-ASCII str, and the sender controls `given`
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _api_url(connection: ConnectionLike) -> str:
    return (getattr(connection, "api_url", "") or Mtt.default_api_url).rstrip("/") + "/"


def _json_of(answer: requests.Response) -> Any:
    try:
        return answer.json()
    except ValueError:
        return None


def _field_name(path: tuple[str, ...] | list[str]) -> str:
    """The dotted name of a bad value for the 400, or "body" when the name itself cannot be
    stored or shown (a key with a NUL or a lone surrogate)."""
    name = storable.shorten(".".join(str(part) for part in path))
    return name if name and not storable.find_problem(name) else "body"
