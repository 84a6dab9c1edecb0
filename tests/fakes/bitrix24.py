"""A fake Bitrix24 cloud (portal REST API + oauth.bitrix.info) served over real HTTP.

The fake listens on 127.0.0.1 (ephemeral port) so the application's real HTTP stack, timeouts
and retries are exercised. Behaviour follows the Bitrix24 REST documentation
(https://apidocs.bitrix24.com, source github.com/bitrix24/b24restdocs): request conventions,
telephony, messageservice, OAuth refresh (the answer names the portal by
member_id/client_endpoint and the user by user_id), limits (leaky bucket, operating budget),
system errors, batch, and `user.admin`/`profile` of the token's user. The section marks below
(§) name those topics: §1 telephony, §3 install and OAuth, §4 limits, errors, batch and
paging, §5 users.

Stdlib only: it must be importable without Django settings.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from tests.fakes import portal_pages
from tests.fakes.loopback import LoopbackFake, TrackingHandler

__all__ = [
    "KNOWN_EVENTS",
    "PLANS",
    "BitrixError",
    "Call",
    "FakeBitrix24",
    "FakePortal",
    "ListResult",
    "Session",
    "parse_php_query",
    "php_flatten",
]

SCOPE = "telephony,messageservice,crm,user_basic,placement,im"
# The scope a method needs, by its first name part (§4.3: 403 insufficient_scope without it).
# Methods of the `basic` scope (app.info, profile, event.*, user.admin) and user.get (any user
# scope) are not checked.
METHOD_SCOPES = {
    "telephony": "telephony",
    "messageservice": "messageservice",
    "crm": "crm",
    "placement": "placement",
    "im": "im",
}
TOKEN_LIFETIME = 3600  # access tokens live one hour (§3.3)
OPERATING_WINDOW = 600.0  # "operating" is summed over a sliding 10-minute window (§4.2)
BATCH_MAX = 50  # §4.4
PAGE_SIZE = 50  # list methods page by 50 (§4.5)
DEDUP_WINDOW = 30 * 60  # externalCall.register dedup window (§1.3)

# Per-plan leaky bucket (drain per second, size) (§4.1) and the app.info licence fields (§3.3).
PLANS: dict[str, dict[str, Any]] = {
    "standard": {
        "bucket": (2.0, 50.0),
        "LICENSE": "ru_project",
        "LICENSE_TYPE": "project",
        "LICENSE_FAMILY": "project",
    },
    "enterprise": {
        "bucket": (5.0, 250.0),
        "LICENSE": "ru_ent250",
        "LICENSE_TYPE": "ent250",
        "LICENSE_FAMILY": "ent",
    },
}

# Default HTTP status and description of the system errors (§4.3). Used by fail_next() when the
# caller gives only a code.
SYSTEM_ERRORS: dict[str, tuple[int, str]] = {
    "QUERY_LIMIT_EXCEEDED": (503, "Too many requests"),
    "OPERATION_TIME_LIMIT": (429, "Method is blocked due to operation time limit."),
    "OVERLOAD_LIMIT": (503, "REST API is blocked due to overload."),
    "expired_token": (401, "The access token provided has expired."),
    "NO_AUTH_FOUND": (401, "Wrong authorization data"),
    "invalid_token": (401, "Unable to get application by token"),
    "INVALID_CREDENTIALS": (403, "Invalid request credentials"),
    "insufficient_scope": (403, "The request requires higher privileges than provided."),
    "ACCESS_DENIED": (403, "Access denied!"),
    "WRONG_AUTH_TYPE": (403, "Current authorization type is denied for this method"),
    "ERROR_BATCH_METHOD_NOT_ALLOWED": (405, "Method is not allowed for batch usage"),
    "ERROR_BATCH_LENGTH_EXCEEDED": (400, "Max batch length exceeded"),
    "ERROR_METHOD_NOT_FOUND": (404, "Method not found!"),
    "INTERNAL_SERVER_ERROR": (500, "Internal server error"),
    "ERROR_UNEXPECTED_ANSWER": (500, "Server returned an unexpected response."),
    "PORTAL_DELETED": (500, "Portal was deleted"),
}

KNOWN_EVENTS: frozenset[str] = frozenset(
    {
        "ONAPPINSTALL",
        "ONAPPUNINSTALL",
        "ONAPPUPDATE",
        "ONAPPPAYMENT",
        "ONAPPTEST",
        "ONAPPMETHODCONFIRM",
        "ONOFFLINEEVENT",
        "ONEXTERNALCALLSTART",
        "ONEXTERNALCALLBACKSTART",
        "ONVOXIMPLANTCALLINIT",
        "ONVOXIMPLANTCALLSTART",
        "ONVOXIMPLANTCALLEND",
        "ONCRMLEADADD",
        "ONCRMLEADUPDATE",
        "ONCRMLEADDELETE",
        "ONCRMCONTACTADD",
        "ONCRMCONTACTUPDATE",
        "ONCRMCONTACTDELETE",
        "ONCRMCOMPANYADD",
        "ONCRMCOMPANYUPDATE",
        "ONCRMCOMPANYDELETE",
        "ONCRMDEALADD",
        "ONCRMDEALUPDATE",
        "ONCRMDEALDELETE",
        "ONCRMACTIVITYADD",
        "ONCRMACTIVITYUPDATE",
        "ONUSERADD",
    }
)

CALL_TYPES = range(1, 6)  # 1 outgoing, 2 incoming, 3 incoming redirected, 4 callback, 5 info
MESSAGE_STATUSES = frozenset({"queued", "sent", "delivered", "undelivered", "failed"})
SENDER_CODE_RE = re.compile(r"^[a-zA-Z0-9._-]+$")
RECORD_EXTENSIONS = (".mp3", ".wav")


class BitrixError(Exception):
    """Raise from a method handler to answer `{"error": code, "error_description": ...}`."""

    def __init__(self, code: str, description: str = "", status: int = 400) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.code, "error_description": self.description}


def system_error(code: str, description: str | None = None) -> BitrixError:
    status, default = SYSTEM_ERRORS.get(code, (500, code))
    return BitrixError(code, default if description is None else description, status)


def _core(description: str) -> BitrixError:
    # Telephony methods report nearly everything as ERROR_CORE with a human text (§1).
    return BitrixError("ERROR_CORE", description, 400)


@dataclass
class ListResult:
    """Return this from a handler for list methods: adds top-level `total` / `next`."""

    items: list[Any]
    total: int
    next: int | None = None


@dataclass
class Call:
    """One executed (or failed) method call as seen by the fake."""

    method: str
    params: dict[str, Any]
    member_id: str | None
    at: float
    via_batch: bool = False
    batch_key: str | None = None
    status: int = 200
    error: str | None = None  # NB: may be "" (event.bind duplicate), test with `is None`
    result: Any = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class _Outcome:
    status: int = 200
    result: Any = None
    error: str | None = None
    description: str = ""
    total: int | None = None
    next: int | None = None
    time: dict[str, Any] | None = None

    @classmethod
    def success(cls, raw: Any) -> _Outcome:
        if isinstance(raw, ListResult):
            return cls(result=raw.items, total=raw.total, next=raw.next)
        return cls(result=raw)

    @classmethod
    def failure(cls, exc: BitrixError) -> _Outcome:
        return cls(status=exc.status, error=exc.code, description=exc.description)

    def body(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error, "error_description": self.description}
        body: dict[str, Any] = {"result": self.result}
        if self.next is not None:
            body["next"] = self.next
        if self.total is not None:
            body["total"] = self.total
        if self.time is not None:
            body["time"] = self.time
        return body


@dataclass
class Session:
    """A token pair of one user of a portal: what that user's frame POST carries (§3.1)."""

    user_id: str
    access_token: str
    refresh_token: str


@dataclass
class _Failure:
    method: str
    error: str
    status: int
    description: str
    remaining: int
    member_id: str | None


Handler = Callable[["FakePortal", dict[str, Any]], Any]


# --------------------------------------------------------------------------------------------
# PHP-style query strings. Bitrix is PHP: form bodies and batch commands are parsed by parse_str.
# --------------------------------------------------------------------------------------------

_BRACKET_RE = re.compile(r"\[([^\[\]]*)\]")


def parse_php_query(query: str) -> dict[str, Any]:
    """Parse like PHP parse_str: `a[b][]=1&a[b][]=2` -> {"a": {"b": ["1", "2"]}}."""
    root: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        php_assign(root, name, value)
    return _listify(root)


def php_assign(root: dict[str, Any], name: str, value: Any) -> None:
    """Store `value` under a bracketed PHP name (`a[b][0]`, `a[]`) inside `root`."""
    base, bracket, rest = name.partition("[")
    keys = [base, *_BRACKET_RE.findall(bracket + rest)] if bracket and "]" in rest else [name]
    node = root
    for key in keys[:-1]:
        slot = _php_key(node, key)
        child = node.get(slot)
        if not isinstance(child, dict):
            child = node[slot] = {}
        node = child
    node[_php_key(node, keys[-1])] = value


def _php_key(node: dict[str, Any], key: str) -> str:
    # `a[]` appends: PHP uses max(integer key) + 1.
    if key:
        return key
    indexes = [int(k) for k in node if k.isdigit()]
    return str(max(indexes) + 1 if indexes else 0)


def _listify(value: Any) -> Any:
    # A PHP array whose keys are exactly 0..n-1 (in order) is a JSON list; anything else an object.
    if isinstance(value, list):
        return [_listify(v) for v in value]
    if not isinstance(value, dict):
        return value
    converted = {k: _listify(v) for k, v in value.items()}
    if converted and list(converted) == [str(i) for i in range(len(converted))]:
        return list(converted.values())
    return converted


def php_array(mapping: dict[str, Any]) -> dict[str, Any] | list[Any]:
    """Serialize a dict the way PHP json_encode does: `{}` -> `[]`, keys 0..n-1 -> list."""
    if list(mapping) == [str(i) for i in range(len(mapping))]:
        return list(mapping.values())
    return mapping


def php_flatten(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Flatten nested data into PHP form pairs: {"a": {"b": 1}} -> [("a[b]", "1")]."""
    if isinstance(data, dict):
        items: Iterable[tuple[Any, Any]] = data.items()
    elif isinstance(data, list | tuple):
        items = enumerate(data)
    else:
        return [(prefix, _php_scalar(data))]
    pairs: list[tuple[str, str]] = []
    for key, value in items:
        pairs.extend(php_flatten(value, f"{prefix}[{key}]" if prefix else str(key)))
    return pairs


def _php_scalar(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


# --------------------------------------------------------------------------------------------
# Request bodies
# --------------------------------------------------------------------------------------------


def _header_params(value: str, header: str = "content-type") -> Message:
    msg = Message()
    msg[header] = value
    return msg


def _parse_json_body(body: bytes, _ctype: str) -> dict[str, Any]:
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        # Fake-specific strictness: surfaces client bugs instead of silently dropping params.
        raise BitrixError("INVALID_REQUEST", f"Malformed JSON body: {exc}") from exc
    if not isinstance(data, dict):
        raise BitrixError("INVALID_REQUEST", "JSON body must be an object")
    return data


def _parse_form_body(body: bytes, _ctype: str) -> dict[str, Any]:
    return parse_php_query(body.decode("utf-8", errors="replace"))


def multipart_parts(body: bytes, ctype: str) -> list[tuple[str, str | None, bytes]]:
    """Split a multipart/form-data body into (field name, filename, content) triples."""
    boundary = _header_params(ctype).get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        return []
    parts: list[tuple[str, str | None, bytes]] = []
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        disposition = next(
            (
                line.split(b":", 1)[1].decode("latin-1").strip()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-disposition:")
            ),
            "",
        )
        msg = _header_params(disposition, "content-disposition")
        name = msg.get_param("name", header="content-disposition")
        filename = msg.get_filename()
        parts.append((str(name or ""), filename, content.removesuffix(b"\r\n")))
    return parts


def _parse_multipart_body(body: bytes, ctype: str) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for name, filename, content in multipart_parts(body, ctype):
        value: Any = content.decode("utf-8", errors="replace")
        if filename is not None:
            value = {"filename": filename, "content": content}
        php_assign(root, name, value)
    return _listify(root)


_BODY_PARSERS: dict[str, Callable[[bytes, str], dict[str, Any]]] = {
    "application/json": _parse_json_body,
    "application/x-www-form-urlencoded": _parse_form_body,
    "multipart/form-data": _parse_multipart_body,
}


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        return _read_chunked(handler.rfile)
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length > 0 else b""


def _read_chunked(rfile: Any) -> bytes:
    chunks: list[bytes] = []
    while True:
        size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b"\n", b""):
                continue
            return b"".join(chunks)
        chunks.append(rfile.read(size))
        rfile.readline()


def request_params(path: str, headers: Any, body: bytes) -> dict[str, Any]:
    """Query string merged with the body (body wins, like PHP's $_REQUEST order)."""
    params = parse_php_query(urlsplit(path).query)
    if body:
        ctype = headers.get("Content-Type", "")
        parser = _BODY_PARSERS.get(ctype.split(";")[0].strip().lower(), _parse_form_body)
        params.update(parser(body, ctype))
    return params


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _send_text(handler: BaseHTTPRequestHandler, status: int, text: str, ctype: str) -> None:
    data = text.encode("utf-8")
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        handler.close_connection = True


def _send_json(handler: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
    data = json.dumps(payload, ensure_ascii=False, default=_json_default).encode("utf-8")
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        # The client gave up (its read timeout fired during fake.delay): nothing to answer.
        handler.close_connection = True


# --------------------------------------------------------------------------------------------
# Small param helpers
# --------------------------------------------------------------------------------------------


def _text(params: dict[str, Any], key: str) -> str:
    value = params.get(key)
    return "" if value is None else str(value).strip()


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in {"1", "y", "true"}


def _yn(value: Any, default: str) -> str:
    if value is None or value == "":
        return default
    return "Y" if _truthy(value) else "N"


def _digits(phone: Any) -> str:
    return "".join(ch for ch in str(phone) if ch.isdigit())


def _filter_value(value: Any) -> str:
    # user.get filters compare loosely: ACTIVE=true / "Y" / True are the same thing.
    if isinstance(value, bool):
        return "Y" if value else "N"
    text = str(value)
    return {"true": "Y", "false": "N"}.get(text.lower(), text)


def _matches(user: dict[str, Any], key: str, wanted: Any) -> bool:
    actual = _filter_value(user.get(key))
    if isinstance(wanted, list):
        return actual in {_filter_value(w) for w in wanted}
    return actual == _filter_value(wanted)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _new_token() -> str:
    return secrets.token_hex(24)


def _lower_lookup(table: dict[str, float], method: str) -> float:
    return next((v for k, v in table.items() if k.lower() == method), 0.0)


# --------------------------------------------------------------------------------------------
# Portal state
# --------------------------------------------------------------------------------------------


class FakePortal:
    """One Bitrix24 portal (one app installation) and everything the app stored in it."""

    def __init__(
        self,
        fake: FakeBitrix24,
        member_id: str,
        domain: str,
        plan: str,
        access_token: str | None = None,
        refresh_token: str | None = None,
        application_token: str | None = None,
    ) -> None:
        if plan not in PLANS:
            raise ValueError(f"plan must be one of {sorted(PLANS)}, got {plan!r}")
        self._fake = fake
        self.member_id = member_id
        self.domain = domain
        self.plan = plan
        self.access_token = access_token or _new_token()
        self.refresh_token = refresh_token or _new_token()
        self.application_token = application_token or secrets.token_hex(16)
        self.access_expires_at = fake.clock() + TOKEN_LIFETIME
        self.refresh_revoked = False
        # The auth server answers with the portal's client_endpoint; None = this fake's REST URL.
        # Tests set a foreign one (e.g. https://acme.bitrix24.ru/rest/) when only OAuth matters.
        self.endpoint: str | None = None
        # Real refresh tokens rotate. Off: a refresh answers the same pair again, for tests that
        # post fixed literal tokens more than once.
        self.rotate_on_refresh = True
        self.admins: set[str] = {"1"}  # user IDs for which user.admin / profile say ADMIN
        self.sessions: list[Session] = []  # other users' token pairs (see sign_in)
        self.caller_id = "1"  # the user whose token the current REST call carries
        # The scopes the app was installed with: a method of another scope is refused with
        # insufficient_scope (a portal that installed the app before it asked for `im`).
        self.scope = SCOPE
        self.installed = True  # app.info INSTALLED (False until BX24.installFinish, §3.2)
        self.bucket: tuple[float, float] | None = None  # (drain per s, size) override
        self.users: list[dict[str, Any]] = []
        self.add_user(1, NAME="Admin", LAST_NAME="User", UF_PHONE_INNER="100")
        self.lines: dict[str, dict[str, Any]] = {}
        self.bindings: list[tuple[str, str]] = []
        self.binding_options: dict[tuple[str, str], dict[str, Any]] = {}
        self.crm_entities: dict[str, Any] = {}
        self.active_calls: dict[str, dict[str, Any]] = {}
        self.statistics: dict[str, dict[str, Any]] = {}
        self.records: dict[str, list[dict[str, Any]]] = {}
        self.senders: dict[str, dict[str, Any]] = {}
        self.message_statuses: list[dict[str, Any]] = []
        self.message_ids: set[str] | None = None  # None: any MESSAGE_ID is accepted
        # im.notify.system.add: every one received, and the live ones by TAG (a new one with
        # the same TAG deletes the earlier ones).
        self.notifications: list[dict[str, Any]] = []
        self.live_notifications: dict[str, dict[str, Any]] = {}
        self._counters: dict[str, int] = {}
        self._uploads: dict[str, tuple[str, str]] = {}
        self._bucket_level = 0.0
        self._bucket_at: float | None = None
        self._operating: dict[str, list[tuple[float, float]]] = {}

    def __repr__(self) -> str:
        return f"FakePortal(member_id={self.member_id!r}, domain={self.domain!r})"

    @property
    def client_endpoint(self) -> str:
        return self.endpoint or self._fake.rest_url

    @property
    def access_expired(self) -> bool:
        return self._fake.clock() >= self.access_expires_at

    def expire_access_token(self) -> None:
        """Calls with the current access token now get 401 expired_token until a refresh."""
        self.access_expires_at = float("-inf")

    def revoke_refresh_token(self) -> None:
        """The current refresh token now gets 400 invalid_grant (the user must re-authorize)."""
        self.refresh_revoked = True

    def rotate_tokens(self) -> None:
        """Issue a fresh token pair out of band (as if the user opened the app again)."""
        with self._fake._lock:
            self._fake._rotate(self)

    def sign_in(
        self,
        user_id: int | str = 1,
        access_token: str | None = None,
        refresh_token: str | None = None,
    ) -> Session:
        """A user opens the app: Bitrix24 issues a token pair of that user (§3.1). Its refresh
        token works at the auth server and its access token calls REST as that user."""
        session = Session(str(user_id), access_token or _new_token(), refresh_token or _new_token())
        with self._fake._lock:
            self.sessions.append(session)
        return session

    def add_user(self, user_id: int | str, **fields: Any) -> dict[str, Any]:
        """Add a user row for user.get / USER_ID validation (IDs are strings, as in Bitrix)."""
        user = {"ID": str(user_id), "NAME": "", "LAST_NAME": "", "ACTIVE": True}
        user["UF_PHONE_INNER"] = ""
        user.update(fields)
        self.users.append(user)
        return user

    def find_user(self, key: str, value: Any) -> dict[str, Any] | None:
        return next((u for u in self.users if str(u.get(key)) == str(value)), None)

    @property
    def bucket_level(self) -> float:
        drain, _size = self._fake._bucket_of(self)
        if self._bucket_at is None:
            return 0.0
        return max(0.0, self._bucket_level - (self._fake.clock() - self._bucket_at) * drain)

    def operating_used(self, method: str) -> float:
        with self._fake._lock:
            return sum(cost for _, cost in self._fake._window(self, method.lower()))

    # Payload builders for the app's inbound endpoints (events, the iframe POST).

    def auth_data(self, with_tokens: bool = True) -> dict[str, str]:
        """The `auth[...]` block Bitrix adds to events (§1.11)."""
        data = {
            "domain": self.domain,
            "client_endpoint": self.client_endpoint,
            "server_endpoint": self.client_endpoint,
            "member_id": self.member_id,
            "application_token": self.application_token,
            "scope": self.scope,
            "status": "L",
        }
        if with_tokens:
            data.update(
                access_token=self.access_token,
                refresh_token=self.refresh_token,
                expires=str(int(self._fake.clock()) + TOKEN_LIFETIME),
                expires_in=str(TOKEN_LIFETIME),
            )
        return data

    def event_payload(
        self, event: str, data: dict[str, Any] | None = None, *, with_tokens: bool = True
    ) -> dict[str, str]:
        """Form fields of an event POST, flattened with brackets, all values strings."""
        message = {
            "event": event.upper(),
            "event_handler_id": "1",
            "data": data or {},
            "ts": str(int(self._fake.clock())),
            "auth": self.auth_data(with_tokens),
        }
        return dict(php_flatten(message))

    def frame_payload(
        self, placement: str = "DEFAULT", options: str = "", session: Session | None = None
    ) -> dict[str, str]:
        """POST fields sent when the app page opens in the Bitrix24 iframe (§3.1), with the
        tokens of `session` (a user who signed in) or else the app's own pair."""
        return {
            "AUTH_ID": session.access_token if session else self.access_token,
            "AUTH_EXPIRES": str(TOKEN_LIFETIME),
            "REFRESH_ID": session.refresh_token if session else self.refresh_token,
            "SERVER_ENDPOINT": self.client_endpoint,
            "APPLICATION_TOKEN": self.application_token,
            "APPLICATION_SCOPE": self.scope,
            "member_id": self.member_id,
            "status": "L",
            "PLACEMENT": placement,
            "PLACEMENT_OPTIONS": options,
        }

    def register_call(self, **params: Any) -> str:
        """What Bitrix24 does itself before ONEXTERNALCALLSTART (a click on a number in the
        CRM): it registers the call, outside the app's REST log. Returns its CALL_ID."""
        with self._fake._lock:
            return str(_register(self, params)["CALL_ID"])

    def _next_id(self, kind: str) -> int:
        self._counters[kind] = self._counters.get(kind, 0) + 1
        return self._counters[kind]


# --------------------------------------------------------------------------------------------
# Built-in methods: fn(portal, params) -> result, raising BitrixError on failure.
# --------------------------------------------------------------------------------------------


def _app_info(p: FakePortal, _params: dict[str, Any]) -> dict[str, Any]:
    plan = PLANS[p.plan]
    return {
        "ID": 1,
        "CODE": "local.app",
        "VERSION": 1,
        "STATUS": "L",
        "INSTALLED": p.installed,
        "PAYMENT_EXPIRED": "N",
        "DAYS": None,
        "LANGUAGE_ID": "ru",
        "LICENSE": plan["LICENSE"],
        "LICENSE_TYPE": plan["LICENSE_TYPE"],
        "LICENSE_FAMILY": plan["LICENSE_FAMILY"],
    }


def _profile(p: FakePortal, _params: dict[str, Any]) -> dict[str, Any]:
    user = p.find_user("ID", p.caller_id) or {}
    return {
        "ID": int(p.caller_id),
        "ADMIN": p.caller_id in p.admins,
        "NAME": user.get("NAME", ""),
        "LAST_NAME": user.get("LAST_NAME", ""),
    }


def _user_admin(p: FakePortal, _params: dict[str, Any]) -> bool:
    # §5: true/false, "can the current user manage app settings".
    return p.caller_id in p.admins


def _event_key(params: dict[str, Any]) -> tuple[str, str]:
    event = _text(params, "event") or _text(params, "EVENT")
    handler = _text(params, "handler") or _text(params, "HANDLER")
    if not handler:
        # Not documented; real Bitrix rejects a missing handler with some 400 error.
        raise BitrixError("ERROR_ARGUMENT", "Handler is not specified")
    return event.upper(), handler


def _event_bind(p: FakePortal, params: dict[str, Any]) -> bool:
    key = _event_key(params)
    if key[0] not in p._fake.known_events:
        raise BitrixError("ERROR_EVENT_NOT_FOUND", "Event not found")
    if key in p.bindings:
        # Real Bitrix answers a duplicate bind with an EMPTY error code and this (sic) text.
        raise BitrixError("", "Handler already binded")
    p.bindings.append(key)
    p.binding_options[key] = {
        "auth_type": _int(params.get("auth_type")),
        "offline": 1 if _text(params, "event_type").lower() == "offline" else 0,
    }
    return True


def _event_unbind(p: FakePortal, params: dict[str, Any]) -> dict[str, int]:
    key = _event_key(params)
    count = p.bindings.count(key)
    p.bindings[:] = [b for b in p.bindings if b != key]
    p.binding_options.pop(key, None)
    return {"count": count}


def _event_get(p: FakePortal, _params: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"event": event, "handler": handler, **p.binding_options.get((event, handler), {})}
        for event, handler in p.bindings
    ]


_USER_GET_CONTROL = frozenset(
    {"FILTER", "filter", "start", "sort", "order", "SORT", "ORDER", "ADMIN_MODE", "select"}
)


def _user_get(p: FakePortal, params: dict[str, Any]) -> ListResult:
    # Fields may also be passed at top level (legacy user.get behaviour).
    wanted = dict(params.get("FILTER") or params.get("filter") or {})
    wanted.update({k: v for k, v in params.items() if k not in _USER_GET_CONTROL})
    found = [u for u in p.users if all(_matches(u, k, v) for k, v in wanted.items())]
    start = max(0, _int(params.get("start")))
    nxt = start + PAGE_SIZE if start + PAGE_SIZE < len(found) else None
    return ListResult(copy.deepcopy(found[start : start + PAGE_SIZE]), len(found), nxt)


def _line_add(p: FakePortal, params: dict[str, Any]) -> dict[str, int]:
    number = _text(params, "NUMBER")
    if not number:
        raise _core("NUMBER should not be empty")
    if number in p.lines:
        raise _core("Line already exists")
    line_id = p._next_id("line")
    p.lines[number] = {
        "ID": line_id,
        "NUMBER": number,
        "NAME": _text(params, "NAME"),
        "CRM_AUTO_CREATE": _yn(params.get("CRM_AUTO_CREATE"), "Y"),
    }
    return {"ID": line_id}


def _existing_line(p: FakePortal, number: str) -> dict[str, Any]:
    if not number:
        raise _core("NUMBER should not be empty")
    line = p.lines.get(number)
    if line is None:
        raise _core(f"Could not find line with number {number}")
    return line


def _line_update(p: FakePortal, params: dict[str, Any]) -> dict[str, str]:
    number = _text(params, "NUMBER")
    if not number:
        raise _core("NUMBER should not be empty")
    if "NAME" not in params and "CRM_AUTO_CREATE" not in params:
        raise _core("There are no fields to update")
    line = _existing_line(p, number)
    if "NAME" in params:
        line["NAME"] = _text(params, "NAME")
    if "CRM_AUTO_CREATE" in params:
        line["CRM_AUTO_CREATE"] = _yn(params["CRM_AUTO_CREATE"], "Y")
    return {"ID": str(line["ID"])}  # update returns the ID as a string, add as an int


def _line_delete(p: FakePortal, params: dict[str, Any]) -> list[Any]:
    line = _existing_line(p, _text(params, "NUMBER"))
    del p.lines[line["NUMBER"]]
    return []


def _line_get(p: FakePortal, _params: dict[str, Any]) -> list[dict[str, Any]]:
    keys = ("NUMBER", "NAME", "CRM_AUTO_CREATE")
    return [{k: line[k] for k in keys} for line in p.lines.values()]


def _require_user_params(params: dict[str, Any]) -> None:
    if _text(params, "USER_ID") in {"", "0"} and not _text(params, "USER_PHONE_INNER"):
        raise _core("USER_ID or USER_PHONE_INNER should be set")


def _resolve_user(p: FakePortal, params: dict[str, Any]) -> int:
    _require_user_params(params)
    user_id = _text(params, "USER_ID")
    if user_id not in {"", "0"}:
        user = p.find_user("ID", user_id)
    else:
        user = p.find_user("UF_PHONE_INNER", _text(params, "USER_PHONE_INNER"))
    if user is None or not _truthy(user.get("ACTIVE", True)):
        raise _core("User is not found or is not active")
    return int(user["ID"])


def _call_type(value: Any) -> int:
    call_type = _int(value, -1)
    if call_type not in CALL_TYPES:
        raise _core("Unknown TYPE")
    return call_type


def _start_date(p: FakePortal, value: Any) -> str:
    if value in (None, ""):
        return _iso(p._fake.clock())
    try:
        return datetime.fromisoformat(str(value)).isoformat()
    except ValueError as exc:
        raise _core("CALL_START_DATE should be in the ISO-8601 format") from exc


def _crm_matches(p: FakePortal, phone: str) -> list[dict[str, Any]]:
    digits = _digits(phone)
    found: list[dict[str, Any]] = []
    for number, entry in p.crm_entities.items():
        if digits and _digits(number) == digits:
            found.extend(entry if isinstance(entry, list) else [entry])
    return found


def _crm_link(p: FakePortal, params: dict[str, Any], phone: str, user_id: int) -> dict[str, Any]:
    link: dict[str, Any] = {
        "CRM_CREATED_LEAD": None,
        "CRM_CREATED_ENTITIES": [],
        "CRM_ENTITY_TYPE": None,
        "CRM_ENTITY_ID": None,
    }
    matches = _crm_matches(p, phone)
    if params.get("CRM_ENTITY_TYPE") and params.get("CRM_ENTITY_ID"):
        link.update(
            CRM_ENTITY_TYPE=params["CRM_ENTITY_TYPE"], CRM_ENTITY_ID=params["CRM_ENTITY_ID"]
        )
    elif matches:
        link.update(
            CRM_ENTITY_TYPE=matches[0]["CRM_ENTITY_TYPE"],
            CRM_ENTITY_ID=matches[0]["CRM_ENTITY_ID"],
        )
    elif _truthy(params.get("CRM_CREATE")):
        lead_id = p._next_id("lead")
        p.crm_entities[phone] = {
            "CRM_ENTITY_TYPE": "LEAD",
            "CRM_ENTITY_ID": lead_id,
            "ASSIGNED_BY_ID": user_id,
        }
        link.update(
            CRM_CREATED_LEAD=lead_id,
            CRM_CREATED_ENTITIES=[{"ENTITY_TYPE": "LEAD", "ENTITY_ID": lead_id}],
            CRM_ENTITY_TYPE="LEAD",
            CRM_ENTITY_ID=lead_id,
        )
    return link


def _register(p: FakePortal, params: dict[str, Any]) -> dict[str, Any]:
    _require_user_params(params)
    call_type = _call_type(params.get("TYPE"))
    start_date = _start_date(p, params.get("CALL_START_DATE"))
    phone = _text(params, "PHONE_NUMBER")
    if not _digits(phone):
        raise _core("Unsupported phone number format")
    user_id = _resolve_user(p, params)
    line, ext_id = _text(params, "LINE_NUMBER"), _text(params, "EXTERNAL_CALL_ID")
    dedup_key = (phone, call_type, user_id, line, ext_id)
    now = p._fake.clock()
    for call in p.active_calls.values():
        # Quirk (§1.3): an identical register within 30 min returns the same, still open call.
        if call["DEDUP_KEY"] == dedup_key and now - call["REGISTERED_AT"] < DEDUP_WINDOW:
            return copy.deepcopy(call["RESULT"])
    call_id = f"externalCall.{secrets.token_hex(16)}.{int(now)}"
    result = {"CALL_ID": call_id, **_crm_link(p, params, phone, user_id)}
    p.active_calls[call_id] = {
        "CALL_ID": call_id,
        "USER_ID": user_id,
        "PHONE_NUMBER": phone,
        "TYPE": call_type,
        "LINE_NUMBER": line,
        "EXTERNAL_CALL_ID": ext_id,
        "CALL_START_DATE": start_date,
        "REGISTERED_AT": now,
        "DEDUP_KEY": dedup_key,
        "SHOWN_TO": [user_id] if _yn(params.get("SHOW"), "Y") == "Y" else [],
        "RESULT": result,
    }
    return copy.deepcopy(result)


def _user_ids(value: Any, default: list[int]) -> list[int]:
    if value in (None, "", []):
        return default
    values = value if isinstance(value, list) else [value]
    return [_int(v) for v in values]


def _visibility(show: bool) -> Handler:
    def handler(p: FakePortal, params: dict[str, Any]) -> bool:
        call = p.active_calls.get(_text(params, "CALL_ID"))
        if call is None:
            return False
        users = set(_user_ids(params.get("USER_ID"), [call["USER_ID"]]))
        shown = set(call["SHOWN_TO"])
        call["SHOWN_TO"] = sorted(shown | users if show else shown - users)
        return True

    return handler


def _finish(p: FakePortal, params: dict[str, Any]) -> dict[str, Any]:
    call_id = params.get("CALL_ID")
    if not isinstance(call_id, str):
        raise BitrixError("INVALID_ARGUMENT", "CALL_ID must be a string")
    user_id = _resolve_user(p, params)
    # Bitrix deletes the call from its active-call table on finish, so finishing twice (e.g. a
    # retry after a lost response) fails with this same "not found" error.
    call = p.active_calls.pop(call_id, None)
    if call is None:
        raise _core("Call is not found (call should be registered prior to finishing)")
    duration = max(0, _int(params.get("DURATION")))
    status_code = _text(params, "STATUS_CODE") or ("200" if duration > 0 else "304")
    crm_type, crm_id = call["RESULT"]["CRM_ENTITY_TYPE"], call["RESULT"]["CRM_ENTITY_ID"]
    record = {
        "ID": p._next_id("statistic"),
        "CALL_ID": call_id,
        "EXTERNAL_CALL_ID": call["EXTERNAL_CALL_ID"] or None,
        "PORTAL_USER_ID": user_id,
        "PHONE_NUMBER": call["PHONE_NUMBER"],
        "PORTAL_NUMBER": call["LINE_NUMBER"] or None,
        "INCOMING": str(call["TYPE"]),
        "CALL_DURATION": duration,
        "CALL_START_DATE": call["CALL_START_DATE"],
        "CALL_STATUS": 1 if status_code == "200" else 0,
        "CALL_VOTE": _int(params.get("VOTE")) or None,
        "COST": float(params.get("COST") or 0),
        "COST_CURRENCY": _text(params, "COST_CURRENCY"),
        "CALL_FAILED_CODE": status_code,
        "CALL_FAILED_REASON": _text(params, "FAILED_REASON"),
        "REST_APP_ID": 1,
        "REST_APP_NAME": "local.app",
        "CRM_ACTIVITY_ID": p._next_id("activity") if crm_id else None,
        "COMMENT": None,
        "CRM_ENTITY_TYPE": crm_type,
        "CRM_ENTITY_ID": crm_id,
    }
    p.statistics[call_id] = record
    return copy.deepcopy(record)


def _record_filename(params: dict[str, Any]) -> str:
    if "FILENAME" not in params and not _text(params, "RECORD_URL"):
        raise _core(
            "Required parameters are not set. "
            "Request should contain either URL or FILENAME parameter"
        )
    name = _text(params, "FILENAME")
    if "FILENAME" not in params:  # URL mode: the name is taken from the URL
        name = urlsplit(_text(params, "RECORD_URL")).path.rsplit("/", 1)[-1]
    if not name:
        raise _core("File name is empty")
    if not name.lower().endswith(RECORD_EXTENSIONS):
        raise _core("Wrong file extension. Only wav and mp3 are allowed")
    return name


def _decode_record(value: Any) -> bytes:
    text = "".join(str(value or "").split())
    if not text:
        raise _core("File content is empty.")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _core("File content is not properly encoded. Base64 encoding is expected.") from exc


def _attach_record(p: FakePortal, params: dict[str, Any]) -> dict[str, Any]:
    call_id = _text(params, "CALL_ID")
    if call_id not in p.statistics:
        raise _core(
            "Call is not found in the statistic table. It looks like it is not finished yet."
        )
    filename = _record_filename(params)
    if "FILE_CONTENT" in params:
        content = _decode_record(params["FILE_CONTENT"])
        return {"FILE_ID": _store_record(p, call_id, filename=filename, content=content)}
    if _text(params, "RECORD_URL"):
        # The fake never downloads the URL; the app only has to hand it over.
        url = _text(params, "RECORD_URL")
        return {"FILE_ID": _store_record(p, call_id, filename=filename, url=url)}
    token = secrets.token_hex(16)
    p._uploads[token] = (call_id, filename)
    return {"uploadUrl": f"{p._fake.base_url}/upload/{token}/", "fieldName": "file"}


def _store_record(p: FakePortal, call_id: str, **record: Any) -> int:
    file_id = p._next_id("file")
    # A later attach replaces the recording in Bitrix; the fake keeps the history (last wins).
    p.records.setdefault(call_id, []).append({**record, "file_id": file_id})
    return file_id


def _search_crm(p: FakePortal, params: dict[str, Any]) -> list[dict[str, Any]]:
    phone = _text(params, "PHONE_NUMBER")
    if not phone:
        raise _core("PHONE_NUMBER is empty")
    return [_crm_row(p, entry) for entry in _crm_matches(p, phone)]


def _crm_row(p: FakePortal, entry: dict[str, Any]) -> dict[str, Any]:
    assigned = entry.get("ASSIGNED_BY_ID")
    user = p.find_user("ID", assigned) or {}
    return {
        "CRM_ENTITY_TYPE": entry["CRM_ENTITY_TYPE"],
        "CRM_ENTITY_ID": entry["CRM_ENTITY_ID"],
        "ASSIGNED_BY_ID": assigned,
        "NAME": entry.get("NAME", ""),
        "ASSIGNED_BY": {
            "ID": assigned,
            "TIMEMAN_STATUS": entry.get("TIMEMAN_STATUS", "OPENED"),
            "USER_PHONE_INNER": user.get("UF_PHONE_INNER", ""),
            "WORK_PHONE": user.get("WORK_PHONE", ""),
            "PERSONAL_PHONE": user.get("PERSONAL_PHONE", ""),
            "PERSONAL_MOBILE": user.get("PERSONAL_MOBILE", ""),
        },
    }


def _sender_invalid(description: str) -> BitrixError:
    return BitrixError("ERROR_SENDER_VALIDATION_FAILURE", description)


def _sender_add(p: FakePortal, params: dict[str, Any]) -> bool:
    required = ("CODE", "TYPE", "HANDLER", "NAME")
    if not any(params.get(k) for k in required):
        raise _sender_invalid("Empty data!")
    code, kind = _text(params, "CODE"), _text(params, "TYPE")
    checks = (
        (not code, "Empty sender code!"),
        (not SENDER_CODE_RE.match(code), "Wrong sender code!"),
        (not params.get("NAME"), "Empty sender NAME!"),
        (not kind, "Empty sender message TYPE!"),
        (kind != "SMS", "Unknown sender message TYPE!"),
        (not _text(params, "HANDLER"), "Empty sender HANDLER!"),  # text not documented
    )
    failed = next((text for bad, text in checks if bad), None)
    if failed:
        raise _sender_invalid(failed)
    if code in p.senders:
        raise BitrixError("ERROR_SENDER_ALREADY_INSTALLED", "Sender already installed!")
    p.senders[code] = {
        "CODE": code,
        "TYPE": kind,
        "HANDLER": _text(params, "HANDLER"),
        "NAME": params["NAME"],
        "DESCRIPTION": params.get("DESCRIPTION", ""),
    }
    return True


def _sender_update(p: FakePortal, params: dict[str, Any]) -> bool:
    code = _text(params, "CODE")
    if not code:
        raise BitrixError("ERROR_SENDER_CODE_REQUIRED", "Sender code is required!")
    changes = {k: params[k] for k in ("HANDLER", "NAME", "DESCRIPTION") if k in params}
    if not changes:
        raise BitrixError("ERROR_SENDER_OTHER_PARAMS_REQUIRED", "Other params are required!")
    if code not in p.senders:
        raise BitrixError("ERROR_SENDER_NOT_FOUND", "Sender not found!")
    p.senders[code].update(changes)
    return True


def _sender_delete(p: FakePortal, params: dict[str, Any]) -> bool:
    code = _text(params, "CODE")
    if not code:
        raise _sender_invalid("Empty sender code!")
    if p.senders.pop(code, None) is None:
        raise BitrixError("ERROR_SENDER_NOT_FOUND", "Sender not found!")
    return True


def _sender_list(p: FakePortal, _params: dict[str, Any]) -> list[str]:
    return list(p.senders)


def _status_update(p: FakePortal, params: dict[str, Any]) -> bool:
    code, message_id = _text(params, "CODE"), _text(params, "MESSAGE_ID")
    status = _text(params, "STATUS")
    if not code or not message_id:
        raise _sender_invalid("Empty sender code!" if not code else "Empty message ID!")
    if code not in p.senders:
        raise BitrixError("ERROR_SENDER_NOT_FOUND", "Sender not found!")
    if p.message_ids is not None and message_id not in p.message_ids:
        raise BitrixError("ERROR_MESSAGE_NOT_FOUND", "Message not found!")
    if status not in MESSAGE_STATUSES:
        raise BitrixError("ERROR_MESSAGE_STATUS_INCORRECT", "Incorrect message status!")
    p.message_statuses.append({"CODE": code, "MESSAGE_ID": message_id, "STATUS": status})
    return True


def _notify_system(p: FakePortal, params: dict[str, Any]) -> int:
    user_id, message = _int(params.get("USER_ID")), _text(params, "MESSAGE")
    if not user_id or p.find_user("ID", str(user_id)) is None:
        raise BitrixError("USER_ID_EMPTY", "Recipient user not found")
    if not message:
        raise BitrixError("MESSAGE_EMPTY", "Message can't be empty")
    notice = {"USER_ID": user_id, "MESSAGE": message, "TAG": _text(params, "TAG")}
    p.notifications.append(notice)
    if notice["TAG"]:
        p.live_notifications[f"{user_id}:{notice['TAG']}"] = notice
    return p._next_id("notification")


BUILTIN_METHODS: dict[str, Handler] = {
    "app.info": _app_info,
    "profile": _profile,
    "user.admin": _user_admin,
    "event.bind": _event_bind,
    "event.unbind": _event_unbind,
    "event.get": _event_get,
    "user.get": _user_get,
    "telephony.externalline.add": _line_add,
    "telephony.externalline.update": _line_update,
    "telephony.externalline.delete": _line_delete,
    "telephony.externalline.get": _line_get,
    "telephony.externalcall.register": _register,
    "telephony.externalcall.show": _visibility(show=True),
    "telephony.externalcall.hide": _visibility(show=False),
    "telephony.externalcall.finish": _finish,
    "telephony.externalcall.attachrecord": _attach_record,
    "telephony.externalcall.searchcrmentities": _search_crm,
    "messageservice.sender.add": _sender_add,
    "messageservice.sender.update": _sender_update,
    "messageservice.sender.delete": _sender_delete,
    "messageservice.sender.list": _sender_list,
    "messageservice.message.status.update": _status_update,
    "im.notify.system.add": _notify_system,
}


# --------------------------------------------------------------------------------------------
# Batch helpers
# --------------------------------------------------------------------------------------------

# `$result[key][FIELD][0]...`: a reference to an earlier command's result inside a batch.
_REF_RE = re.compile(r"\$result\[([^\[\]]+)\]((?:\[[^\[\]]*\])*)")


def _batch_commands(cmd: Any) -> list[tuple[str, str]]:
    if cmd in (None, "", [], {}):
        return []
    if isinstance(cmd, list):
        commands = [(str(i), c) for i, c in enumerate(cmd)]
    elif isinstance(cmd, dict):
        commands = [(str(k), c) for k, c in cmd.items()]
    else:
        raise BitrixError("INVALID_ARG_VALUE", "cmd must be an array")
    if len(commands) > BATCH_MAX:
        raise system_error("ERROR_BATCH_LENGTH_EXCEEDED")
    return [(key, str(command)) for key, command in commands]


def _resolve_ref(results: dict[str, Any], key: str, path: str) -> tuple[bool, Any]:
    if key not in results:
        return False, None
    node = results[key]
    for part in _BRACKET_RE.findall(path):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def _substitute(value: Any, results: dict[str, Any]) -> Any:
    """Replace `$result[...]` references; unresolvable ones stay literal, as in Bitrix."""
    if isinstance(value, dict):
        return {k: _substitute(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, results) for v in value]
    if not isinstance(value, str) or "$result[" not in value:
        return value
    whole = _REF_RE.fullmatch(value)
    if whole:  # the whole value is one reference: keep the referenced value's type
        found, resolved = _resolve_ref(results, whole.group(1), whole.group(2))
        return resolved if found else value

    def replace(match: re.Match[str]) -> str:
        found, resolved = _resolve_ref(results, match.group(1), match.group(2))
        if not found or isinstance(resolved, dict | list):
            return match.group(0)
        return _php_scalar(resolved)

    return _REF_RE.sub(replace, value)


def _parse_command(command: str, results: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    method, _, query = command.partition("?")
    params = _substitute(parse_php_query(query), results)  # decoded first, then substituted
    params.pop("auth", None)
    return _strip_format(method.strip()), params


def _strip_format(method: str) -> str:
    return method[: -len(".json")] if method.lower().endswith(".json") else method


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


class _RequestHandler(TrackingHandler):
    timeout = 60  # idle keep-alive connections are dropped after a minute, like a portal

    def do_GET(self) -> None:
        self.server.fake._serve(self)

    def do_POST(self) -> None:
        self.server.fake._serve(self)


_ROUTES: tuple[tuple[str, str], ...] = (
    ("/rest/", "_serve_rest"),
    ("/oauth/token", "_serve_oauth"),
    ("/upload/", "_serve_upload"),
    ("/portal/", "_serve_page"),  # pages for people (make demo): tests/fakes/portal_pages.py
)


def _route(path: str) -> str | None:
    return next((name for prefix, name in _ROUTES if path.startswith(prefix)), None)


def _rest_method(path: str) -> str:
    return _strip_format(unquote(path[len("/rest/") :]).strip("/"))


# --------------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------------


class FakeBitrix24(LoopbackFake):
    """Fake Bitrix24 cloud: OAuth server, portal REST API and recording-upload endpoint."""

    handler_class = _RequestHandler
    thread_name = "fake-bitrix24"

    def __init__(self, client_id: str = "app.123", client_secret: str = "s3cret") -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self._default_knobs()
        self.calls: list[Call] = []
        self.throttled: list[tuple[str, str, float]] = []
        self.http_requests: list[tuple[str | None, str, float]] = []
        self.rejected: list[dict[str, Any]] = []
        self.oauth_requests: list[dict[str, Any]] = []
        self.errors: list[BaseException] = []  # exceptions raised inside the fake / handlers
        self._portals: dict[str, FakePortal] = {}
        self._failures: list[_Failure] = []
        self._retired_access: dict[str, str] = {}
        self._outage: str | None = None
        self._lock = threading.RLock()

    @property
    def domain(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.domain}"

    @property
    def oauth_url(self) -> str:
        return f"{self.base_url}/oauth/token/"

    @property
    def rest_url(self) -> str:
        return f"{self.base_url}/rest/"

    # Portals -----------------------------------------------------------------------------

    def add_portal(
        self,
        member_id: str,
        domain: str | None = None,
        plan: str = "standard",
        **tokens: str,
    ) -> FakePortal:
        """Install the app on a new portal. `tokens`: access_token, refresh_token,
        application_token. `domain` defaults to fake.domain (works as DOMAIN with PROTOCOL=0)."""
        if domain is None:
            domain = self.domain if self._server else f"{member_id}.bitrix24.test"
        portal = FakePortal(self, member_id, domain, plan, **tokens)
        with self._lock:
            self._portals[member_id] = portal
        return portal

    def remove_portal(self, member_id: str) -> None:
        """The portal is gone (app deleted): its tokens are unknown from now on."""
        with self._lock:
            self._portals.pop(member_id, None)

    def portal(self, member_id: str) -> FakePortal:
        return self._portals[member_id]

    @property
    def portals(self) -> list[FakePortal]:
        return list(self._portals.values())

    # Test knobs --------------------------------------------------------------------------

    def _default_knobs(self) -> None:
        self.clock: Callable[[], float] = time.time  # wall clock for expiry/windows/buckets
        self.enforce_rate_limit = True
        self.operating_cost: dict[str, float] = {}
        self.operating_limit = 480.0
        self.delay = 0.0
        self.method_delay: dict[str, float] = {}
        self.oauth_delay = 0.0
        # "500": the auth server answers 500; "close": it drops the connection. REST unaffected.
        self.oauth_outage: str | None = None
        self.known_events: set[str] = set(KNOWN_EVENTS)
        # The application URL the portal opens in its frame (/portal/<member_id>/app/).
        self.app_url: str | None = None
        self._handlers: dict[str, Handler] = {}

    def reset(self) -> None:
        """Clear recordings, injected failures, the outage, buckets and operating windows, and
        put every knob (delays, costs, limits, handlers, clock) back to its default, so that
        one test's settings never leak into the next. Portals (tokens, lines, ...) stay."""
        with self._lock:
            self._default_knobs()
            for log in (self.calls, self.throttled, self.http_requests, self.rejected):
                log.clear()
            self.oauth_requests.clear()
            self.errors.clear()
            self._failures.clear()
            self._outage = None
            for portal in self._portals.values():
                portal._bucket_level, portal._bucket_at = 0.0, None
                portal._operating.clear()

    def set_handler(self, method: str, fn: Handler | None) -> None:
        """Override (or with None, un-override) a method: fn(portal, params) -> result."""
        with self._lock:
            if fn is None:
                self._handlers.pop(method.lower(), None)
            else:
                self._handlers[method.lower()] = fn

    def fail_next(
        self,
        method: str,
        error: str = "INTERNAL_SERVER_ERROR",
        status: int | None = None,
        description: str | None = None,
        times: int = 1,
        member_id: str | None = None,
    ) -> None:
        """Fail the next `times` calls of `method` ("batch" = the whole batch request).
        status/description default to the documented ones for known codes (else 500)."""
        default = system_error(error, description)
        with self._lock:
            self._failures.append(
                _Failure(
                    method=method.lower(),
                    error=error,
                    status=default.status if status is None else status,
                    description=default.description,
                    remaining=times,
                    member_id=member_id,
                )
            )

    def outage(self, mode: str = "500") -> None:
        """ "500": every request gets 500 INTERNAL_SERVER_ERROR; "close": connection dropped."""
        if mode not in {"500", "close"}:
            raise ValueError("outage mode must be '500' or 'close'")
        self._outage = mode

    def restore(self) -> None:
        self._outage = None

    # Inspection --------------------------------------------------------------------------

    def methods(self, member_id: str | None = None, include_failed: bool = False) -> list[str]:
        with self._lock:
            return [
                c.method
                for c in self.calls
                if (include_failed or c.error is None)
                and (member_id is None or c.member_id == member_id)
            ]

    def calls_of(self, method: str, member_id: str | None = None) -> list[Call]:
        wanted = method.lower()
        with self._lock:
            return [
                c
                for c in self.calls
                if c.method.lower() == wanted and (member_id is None or c.member_id == member_id)
            ]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def wait_calls(self, n: int, method: str | None = None, timeout: float = 10.0) -> bool:
        """Wait until at least n calls (of `method`, any outcome) have been recorded."""

        def enough() -> bool:
            return len(self.calls_of(method) if method else self.calls) >= n

        return self.wait_for(enough, timeout)

    # HTTP entry point --------------------------------------------------------------------

    def _serve(self, handler: _RequestHandler) -> None:
        path = urlsplit(handler.path).path
        body = _read_body(handler)
        mode = self._outage or (self.oauth_outage if path.startswith("/oauth/token") else None)
        if mode is not None:
            self._reject(handler, path, body, mode)
            if mode == "close":
                handler.close_connection = True  # drop the socket without any answer
                return
            _send_json(handler, 500, system_error("INTERNAL_SERVER_ERROR").body())
            return
        route = _route(path)
        if route is None:
            _send_json(handler, 404, {"error": "NOT_FOUND", "error_description": path})
            return
        try:
            status, payload = getattr(self, route)(handler, path, body)
        except Exception as exc:  # a bug in the fake or in a custom handler
            self.errors.append(exc)
            status, payload = (
                500,
                {"error": "INTERNAL_SERVER_ERROR", "error_description": repr(exc)},
            )
        if isinstance(payload, portal_pages.HtmlPage):
            _send_text(handler, status, payload.body, payload.content_type)
            return
        _send_json(handler, status, payload)

    def _serve_page(self, _handler: _RequestHandler, path: str, _body: bytes) -> tuple[int, Any]:
        return portal_pages.page_for(self, path, self.app_url)

    def _reject(self, handler: _RequestHandler, path: str, body: bytes, mode: str) -> None:
        try:
            params = request_params(handler.path, handler.headers, body)
        except BitrixError:
            params = {}
        is_rest = path.startswith("/rest/")
        portal = self._portal_by_token(params.get("auth")) if is_rest else None
        entry = {
            "path": path,
            "method": _rest_method(path) if is_rest else None,
            "member_id": portal.member_id if portal else None,
            "at": time.monotonic(),
            "mode": mode,
        }
        with self._lock:
            self.rejected.append(entry)

    # OAuth (oauth.bitrix.info) -----------------------------------------------------------

    def _serve_oauth(self, handler: _RequestHandler, _path: str, body: bytes) -> tuple[int, Any]:
        params = request_params(handler.path, handler.headers, body)
        with self._lock:
            self.oauth_requests.append(dict(params))
        if self.oauth_delay > 0:
            time.sleep(self.oauth_delay)
        with self._lock:
            return self._refresh(params)

    def _refresh(self, params: dict[str, Any]) -> tuple[int, Any]:
        if (params.get("client_id"), params.get("client_secret")) != (
            self.client_id,
            self.client_secret,
        ):
            return 401, {"error": "invalid_client", "error_description": "Invalid client"}
        if params.get("grant_type") != "refresh_token" or not params.get("refresh_token"):
            return 400, {"error": "invalid_request", "error_description": "Unsupported request"}
        found = self._holder_of(str(params["refresh_token"]))
        if found is None:  # unknown, already used (rotated away) or revoked
            return 400, {"error": "invalid_grant", "error_description": "Invalid refresh token"}
        portal, session = found
        if session is None:
            if portal.rotate_on_refresh:
                self._rotate(portal)
            pair, user_id = (portal.access_token, portal.refresh_token), "1"
        else:
            if portal.rotate_on_refresh:
                self._retired_access[session.access_token] = portal.member_id
                session.access_token, session.refresh_token = _new_token(), _new_token()
            pair, user_id = (session.access_token, session.refresh_token), session.user_id
        return 200, {
            "access_token": pair[0],
            "refresh_token": pair[1],
            "expires": int(portal.access_expires_at),
            "expires_in": TOKEN_LIFETIME,
            "client_endpoint": portal.client_endpoint,
            "server_endpoint": "https://oauth.bitrix.info/rest/",
            "domain": "oauth.bitrix.info",  # the auth server, NOT the portal (§3.3)
            "member_id": portal.member_id,
            "scope": portal.scope,
            "status": "L",
            "user_id": int(user_id),
        }

    def _holder_of(self, refresh_token: str) -> tuple[FakePortal, Session | None] | None:
        for portal in self._portals.values():
            if portal.refresh_token == refresh_token and not portal.refresh_revoked:
                return portal, None
            session = next((s for s in portal.sessions if s.refresh_token == refresh_token), None)
            if session is not None:
                return portal, session
        return None

    def _rotate(self, portal: FakePortal) -> None:
        # Refresh tokens rotate: the old pair dies. The old access token is remembered so it
        # answers expired_token (what a stale token really gets) instead of NO_AUTH_FOUND.
        self._retired_access[portal.access_token] = portal.member_id
        portal.access_token, portal.refresh_token = _new_token(), _new_token()
        portal.access_expires_at = self.clock() + TOKEN_LIFETIME
        portal.refresh_revoked = False

    # Recording upload (attachRecord uploadUrl) -------------------------------------------

    def _serve_upload(self, handler: _RequestHandler, path: str, body: bytes) -> tuple[int, Any]:
        token = path[len("/upload/") :].strip("/")
        with self._lock:
            portal = next((p for p in self._portals.values() if token in p._uploads), None)
            if portal is None:
                return 404, {"error": "NOT_FOUND", "error_description": "Unknown upload URL"}
            call_id, filename = portal._uploads[token]
            ctype = handler.headers.get("Content-Type", "")
            files = [part for part in multipart_parts(body, ctype) if part[0] == "file"]
            if not files or not files[0][2]:
                return 400, {"error": "ERROR_CORE", "error_description": "File content is empty."}
            file_id = _store_record(portal, call_id, filename=filename, content=files[0][2])
            return 200, {"result": {"FILE_ID": file_id}}

    # REST --------------------------------------------------------------------------------

    def _serve_rest(self, handler: _RequestHandler, path: str, body: bytes) -> tuple[int, Any]:
        sent = _rest_method(path)
        try:
            params = request_params(handler.path, handler.headers, body)
        except BitrixError as exc:
            return exc.status, exc.body()
        token = params.pop("auth", None)
        with self._lock:
            outcome, pause = self._rest_locked(sent, params, token)
        # The work is done (and recorded) before the answer is delayed, like a slow portal:
        # a client that times out and retries causes a second execution.
        pause += self.delay
        if pause > 0:
            time.sleep(pause)
        return outcome.status, outcome.body()

    def _rest_locked(self, sent: str, params: dict[str, Any], token: Any) -> tuple[_Outcome, float]:
        at = time.monotonic()
        portal, auth_error = self._authenticate(token)
        member_id = portal.member_id if portal else None
        self.http_requests.append((member_id, sent, at))
        if auth_error is not None:
            outcome = _Outcome.failure(auth_error)
            self._record(sent, params, member_id, at, outcome)
            return outcome, 0.0
        assert portal is not None
        if not self._admit(portal):
            self.throttled.append((portal.member_id, sent, at))
            return _Outcome.failure(system_error("QUERY_LIMIT_EXCEEDED")), 0.0
        if sent.lower() == "batch":
            return self._batch(portal, sent, params, at)
        outcome = self._execute(portal, sent, params, at)
        return outcome, _lower_lookup(self.method_delay, sent.lower())

    def _portal_by_token(self, token: Any) -> FakePortal | None:
        if not token:
            return None
        found = next(
            (
                p
                for p in self._portals.values()
                if token in (p.access_token, *(s.access_token for s in p.sessions))
            ),
            None,
        )
        retired = self._retired_access.get(str(token))
        return found or (self._portals.get(retired) if retired else None)

    def _authenticate(self, token: Any) -> tuple[FakePortal | None, BitrixError | None]:
        portal = self._portal_by_token(token)
        if portal is None:
            return None, system_error("NO_AUTH_FOUND")
        session = next((s for s in portal.sessions if s.access_token == token), None)
        if session is not None:
            portal.caller_id = session.user_id
            return portal, None
        if portal.access_token != token or portal.access_expired:
            return portal, system_error("expired_token")
        portal.caller_id = "1"  # the app's own pair belongs to the installer
        return portal, None

    def _bucket_of(self, portal: FakePortal) -> tuple[float, float]:
        return portal.bucket or PLANS[portal.plan]["bucket"]

    def _admit(self, portal: FakePortal) -> bool:
        # Leaky bucket (§4.1): +1 per accepted request, drains at Y/s; above X -> 503.
        level = portal.bucket_level
        _drain, size = self._bucket_of(portal)
        portal._bucket_at = self.clock()
        portal._bucket_level = level
        if self.enforce_rate_limit and level > size:
            return False
        portal._bucket_level = level + 1
        return True

    def _window(self, portal: FakePortal, method: str) -> list[tuple[float, float]]:
        entries = portal._operating.setdefault(method, [])
        cutoff = self.clock() - OPERATING_WINDOW
        entries[:] = [entry for entry in entries if entry[0] > cutoff]
        return entries

    def _time_object(self, portal: FakePortal, method: str, start: float) -> dict[str, Any]:
        finish = self.clock()
        window = self._window(portal, method)
        reset_at = window[0][0] + OPERATING_WINDOW if window else finish + OPERATING_WINDOW
        return {
            "start": start,
            "finish": finish,
            "duration": finish - start,
            "processing": finish - start,
            "date_start": _iso(start),
            "date_finish": _iso(finish),
            "operating_reset_at": int(reset_at),
            "operating": round(sum(cost for _, cost in window), 6),
        }

    def _take_failure(self, portal: FakePortal, method: str) -> BitrixError | None:
        for failure in self._failures:
            if failure.method == method and failure.member_id in (None, portal.member_id):
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.remove(failure)
                return BitrixError(failure.error, failure.description, failure.status)
        return None

    def _lookup(self, method: str, via_batch: bool) -> Handler:
        if via_batch and method == "batch":
            raise system_error("ERROR_BATCH_METHOD_NOT_ALLOWED")
        fn = self._handlers.get(method) or BUILTIN_METHODS.get(method)
        if fn is None:
            raise system_error("ERROR_METHOD_NOT_FOUND")
        return fn

    def _attempt(
        self, portal: FakePortal, method: str, params: dict[str, Any], via_batch: bool
    ) -> _Outcome:
        try:
            injected = self._take_failure(portal, method)
            if injected is not None:
                raise injected
            needs = METHOD_SCOPES.get(method.split(".")[0])
            if needs and needs not in portal.scope.split(","):
                raise system_error("insufficient_scope")
            if sum(cost for _, cost in self._window(portal, method)) > self.operating_limit:
                # §4.2: the call AFTER the one that crossed the limit is rejected.
                raise system_error("OPERATION_TIME_LIMIT")
            fn = self._lookup(method, via_batch)
        except BitrixError as exc:
            return _Outcome.failure(exc)
        try:
            return _Outcome.success(fn(portal, copy.deepcopy(params)))
        except BitrixError as exc:
            return _Outcome.failure(exc)
        except Exception as exc:  # a broken custom handler: answer like a PHP fatal error
            self.errors.append(exc)
            return _Outcome.failure(system_error("INTERNAL_SERVER_ERROR", repr(exc)))
        finally:
            cost = _lower_lookup(self.operating_cost, method)
            self._window(portal, method).append((self.clock(), cost))

    def _execute(
        self,
        portal: FakePortal,
        sent: str,
        params: dict[str, Any],
        at: float,
        batch_key: str | None = None,
    ) -> _Outcome:
        method = sent.lower()
        start = self.clock()
        outcome = self._attempt(portal, method, params, via_batch=batch_key is not None)
        if outcome.error is None:
            outcome.time = self._time_object(portal, method, start)
        self._record(sent, params, portal.member_id, at, outcome, batch_key)
        return outcome

    def _record(
        self,
        sent: str,
        params: dict[str, Any],
        member_id: str | None,
        at: float,
        outcome: _Outcome,
        batch_key: str | None = None,
    ) -> Call:
        call = Call(
            method=sent,
            params=copy.deepcopy(params),
            member_id=member_id,
            at=at,
            via_batch=batch_key is not None,
            batch_key=batch_key,
            status=outcome.status,
            error=outcome.error,
            result=copy.deepcopy(outcome.result),
        )
        self.calls.append(call)
        return call

    def _batch(
        self, portal: FakePortal, sent: str, params: dict[str, Any], at: float
    ) -> tuple[_Outcome, float]:
        start = self.clock()
        try:
            injected = self._take_failure(portal, "batch")
            if injected is not None:
                raise injected
            commands = _batch_commands(params.get("cmd"))
        except BitrixError as exc:
            outcome = _Outcome.failure(exc)
            self._record(sent, params, portal.member_id, at, outcome)
            return outcome, 0.0
        # Recorded first so the log reads: batch, then its sub-calls in order.
        batch_call = self._record(sent, params, portal.member_id, at, _Outcome())
        halt = _truthy(params.get("halt"))
        parts: dict[str, dict[str, Any]] = {
            "result": {},
            "result_error": {},
            "result_total": {},
            "result_next": {},
            "result_time": {},
        }
        pause = _lower_lookup(self.method_delay, "batch")
        for key, command in commands:
            sub_sent, sub_params = _parse_command(command, parts["result"])
            outcome = self._execute(portal, sub_sent, sub_params, time.monotonic(), key)
            pause += _lower_lookup(self.method_delay, sub_sent.lower())
            if outcome.error is not None:
                parts["result_error"][key] = {
                    "error": outcome.error,
                    "error_description": outcome.description,
                }
                if halt:
                    break
                continue
            self._store_part(parts, key, outcome)
        # PHP json_encode: empty arrays become [] and 0..n-1 keyed arrays become lists.
        result = {name: php_array(values) for name, values in parts.items()}
        batch_call.result = copy.deepcopy(result)
        outer = _Outcome(result=result, time=self._time_object(portal, "batch", start))
        return outer, pause

    @staticmethod
    def _store_part(parts: dict[str, dict[str, Any]], key: str, outcome: _Outcome) -> None:
        parts["result"][key] = outcome.result
        parts["result_time"][key] = outcome.time
        if outcome.total is not None:
            parts["result_total"][key] = outcome.total
        if outcome.next is not None:
            parts["result_next"][key] = outcome.next
