"""MTS Communicator (Belarus), the JSONv2 API of the Hyber platform MTS runs it on.

Send: `POST {api_url}/{client_id}/json2/simple`, HTTP Basic auth with the login and password
MTS issues; the body names the number as an integer without "+", our id as `extra_id`, where
to push delivery reports (`callback_url`) and the SMS options (text, alpha name, TTL). It
answers `{"message_id": "<uuid>"}` or `{"error_code": <int>, "error_text": "..."}`.

Status: pushed to `callback_url` (a single report object or, batched, an array of them), and
readable at `GET /{client_id}/dr/external/{extra_id}/simple`. `status` 1 = in progress,
2 = delivered, 3 = not delivered (substatus 26: not within the TTL); -1 = nothing yet.
Neither the push's exact body nor its retries or any signing are published, so reading it is
tolerant (numbers may come as strings, `phone_number` or `number`), the DLR URL carries an
unguessable token, and unfinished messages are also polled (sms.tasks.poll_statuses).

The full list of error codes is not published either: a refusal is classified by its HTTP
status (4xx: the message itself is wrong; 429, 5xx and network errors: try again), with
`TRANSIENT_ERROR_CODES` for codes known to be worth retrying.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import requests

from bitrixapp import public_http
from sms.models import SmsStatus
from sms.providers.base import Outgoing, Report, ReportRejected, SendError, SmsProvider

TIMEOUT = (5, 20)  # connect, read (seconds)

# (status, substatus) → our status; (status, None) covers the other substatuses. The one
# place a gateway status becomes a Bitrix24 one.
STATUSES: dict[tuple[int, int | None], str] = {
    (1, None): SmsStatus.SENT,
    (2, None): SmsStatus.DELIVERED,
    (3, 26): SmsStatus.UNDELIVERED,
    (3, None): SmsStatus.FAILED,
}
NO_STATUS_YET = -1
SUBSTATUS_WORDS = {
    11: "sending started",
    12: "accepted by the operator",
    23: "delivered",
    26: "not delivered within its lifetime",
    36: "send error",
}
# Error codes that say "later" rather than "never" (none are documented yet).
TRANSIENT_ERROR_CODES: set[int] = set()
# HTTP statuses after which the same request may well succeed later.
TRANSIENT_HTTP = {408, 409, 423, 425, 429}


class MtsCommunicator(SmsProvider):
    slug: ClassVar[str] = "mts_by"
    name: ClassVar[str] = "MTS Communicator (Belarus)"
    credential_keys: ClassVar[tuple[str, ...]] = ("client_id", "login", "password")
    default_api_url: ClassVar[str] = "https://api.communicator.mts.by/"

    # ------------------------------------------------------------ sending

    def send(self, account: Any, message: Outgoing) -> str:
        body = {
            "phone_number": int(message.phone_e164.lstrip("+")),
            "extra_id": message.extra_id,
            "callback_url": message.callback_url,
            "channels": ["sms"],
            "channel_options": {
                "sms": {
                    "text": message.text,
                    "alpha_name": message.alpha_name,
                    "ttl": message.ttl_s,
                }
            },
        }
        answer = self._request(account, "POST", "json2/simple", json=body)
        if answer.status_code != 200:
            raise _refusal(answer)
        message_id = _json(answer).get("message_id")
        if not message_id:
            raise SendError("MTS answered 200 without a message_id", permanent=False)
        return str(message_id)

    def poll(self, account: Any, extra_id: str) -> Report | None:
        answer = self._request(account, "GET", f"dr/external/{extra_id}/simple")
        if answer.status_code == 404:
            return None
        if answer.status_code != 200:
            raise _refusal(answer)
        try:
            report = _report(_json(answer), "")
        except ReportRejected as exc:
            raise SendError(f"MTS status answer unreadable: {exc.detail}", permanent=False) from exc
        return report if report.status else None

    def _request(self, account: Any, method: str, path: str, **kwargs: Any) -> requests.Response:
        credentials = account.credentials or {}
        base = (account.api_url or self.default_api_url).rstrip("/")
        url = f"{base}/{credentials.get('client_id', '')}/{path}"
        auth = (credentials.get("login", ""), credentials.get("password", ""))
        try:
            return _session().request(method, url, auth=auth, timeout=TIMEOUT, **kwargs)
        except public_http.PrivateAddress as exc:
            raise SendError(public_http.refusal(exc), permanent=True) from None
        except requests.RequestException as exc:
            raise SendError(f"MTS not reachable: {type(exc).__name__}", permanent=False) from exc

    # ------------------------------------------------------------ reports

    def parse_reports(self, document: Any) -> list[Report]:
        items = document if isinstance(document, list) else [document]
        if not items:
            raise ReportRejected("the report list is empty")
        return [
            _report(item, f"[{i}]" if isinstance(document, list) else "")
            for i, item in enumerate(items)
        ]


_local = threading.local()


def _session() -> requests.Session:
    """One keep-alive session per thread (a campaign sends thousands of requests)."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = public_http.session()
    return session


def _json(answer: requests.Response) -> dict[str, Any]:
    try:
        document = answer.json()
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _refusal(answer: requests.Response) -> SendError:
    error = _json(answer)
    code, text = error.get("error_code"), str(error.get("error_text") or "")[:300]
    described = f"MTS refused (HTTP {answer.status_code}" + (f", error {code}" if code else "")
    described += f"): {text}" if text else ")"
    status = answer.status_code
    if status == 429:
        retry_after = _seconds(answer.headers.get("Retry-After"))
        return SendError(described, permanent=False, retry_after=retry_after)
    if status in (401, 403):
        # Wrong login or password: every message of the account fails the same way until an
        # admin fixes it; retried (with a cap) so that a fix in time saves the messages.
        return SendError(f"{described}; check the login and password", permanent=False)
    transient = status >= 500 or status in TRANSIENT_HTTP or code in TRANSIENT_ERROR_CODES
    # MTS's public documentation lists no error codes; a refusal about the sender names the
    # request's `alpha_name` field in its text, so that is what tells it apart.
    about_sender = not transient and "alpha" in text.lower()
    return SendError(described, permanent=not transient, sender_refused=about_sender)


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _integer(item: dict[str, Any], key: str, path: str, required: bool = True) -> int | None:
    value = item.get(key)
    if value is None or value == "":
        if required:
            raise ReportRejected(f"{key} is required", field=f"{path}{key}" if path else key)
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        raise ReportRejected(
            f"{key} must be a number", field=f"{path}{key}" if path else key
        ) from None


def _report(item: Any, path: str) -> Report:
    if not isinstance(item, dict):
        raise ReportRejected("a report must be a JSON object", field=path or None)
    message_id = str(item.get("message_id") or "").strip()
    extra_id = str(item.get("extra_id") or "").strip()
    if not message_id and not extra_id:
        raise ReportRejected("message_id or extra_id is required", field=f"{path}message_id")
    status = _integer(item, "status", path)
    substatus = _integer(item, "substatus", path, required=False)
    parts = _integer(item, "total_sms_parts", path, required=False)
    ours = None
    if status != NO_STATUS_YET:
        ours = STATUSES.get((status, substatus)) or STATUSES.get((status, None))
    return Report(message_id[:64], extra_id[:64], ours, _reason(item, status, substatus), parts)


def _reason(item: dict[str, Any], status: int | None, substatus: int | None) -> str:
    words = SUBSTATUS_WORDS.get(substatus or 0, "")
    reason = f"MTS status {status}" + (f"/{substatus}" if substatus is not None else "")
    reason += f" ({words})" if words else ""
    error = str(item.get("error_text") or "").strip()
    if error or item.get("error_code"):
        reason += f"; error {item.get('error_code', '')} {error}".rstrip()
    return reason[:500]
