"""The only code that speaks HTTP to Bitrix24: REST calls, OAuth refresh, error classification.

Errors are classified by the `error` string (Bitrix24 REST docs: system errors), not by HTTP
status alone: some SDKs and the docs disagree on statuses, the strings are stable.
"""

import enum
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from bitrixapp.models import Portal

log = logging.getLogger(__name__)

_session = requests.Session()
_session.headers["User-Agent"] = f"b24-telephony-bridge/{settings.APP_VERSION}"


class Outcome(enum.Enum):
    OK = "ok"
    REFRESH = "refresh"  # access token expired or unknown: refresh once, retry once
    RATE_LIMITED = "rate_limited"  # leaky bucket overflow: wait, not counted as an attempt
    METHOD_PAUSED = "method_paused"  # per-method operating budget spent: wait until reset
    TRANSIENT = "transient"  # server/network trouble: retry with backoff up to the horizon
    PORTAL_BLOCKED = "portal_blocked"  # needs re-authorization / payment: keep, do not send
    PERMANENT = "permanent"  # the request itself is wrong: fail and record


ERROR_OUTCOMES: dict[str, Outcome] = {
    "expired_token": Outcome.REFRESH,
    "NO_AUTH_FOUND": Outcome.REFRESH,
    "invalid_token": Outcome.REFRESH,
    "QUERY_LIMIT_EXCEEDED": Outcome.RATE_LIMITED,
    "OPERATION_TIME_LIMIT": Outcome.METHOD_PAUSED,
    "OVERLOAD_LIMIT": Outcome.TRANSIENT,
    "INTERNAL_SERVER_ERROR": Outcome.TRANSIENT,
    "ERROR_UNEXPECTED_ANSWER": Outcome.TRANSIENT,
    "PORTAL_DELETED": Outcome.PORTAL_BLOCKED,
    "PAYMENT_REQUIRED": Outcome.PORTAL_BLOCKED,
    "APPLICATION_NOT_FOUND": Outcome.PORTAL_BLOCKED,
}

# Answers of the OAuth server that mean the stored refresh token will never work again.
OAUTH_REAUTH_ERRORS = {"invalid_grant", "invalid_client", "PAYMENT_REQUIRED", "invalid_scope"}


def classify(error: str, http_status: int) -> Outcome:
    if not error and http_status < 400:
        return Outcome.OK
    known = ERROR_OUTCOMES.get(error)
    if known:
        return known
    return Outcome.TRANSIENT if http_status >= 500 or http_status == 0 else Outcome.PERMANENT


@dataclass
class RestResponse:
    http_status: int  # 0 = no HTTP answer (connection refused, reset, timeout)
    body: dict[str, Any] = field(default_factory=dict)
    duration_ms: int = 0
    token_used: str = ""
    forced: Outcome | None = None  # set when the outcome is known without Bitrix24's word

    @property
    def error(self) -> str:
        if self.http_status == 0:
            return "NETWORK_ERROR"
        return str(self.body.get("error") or "")

    @property
    def error_description(self) -> str:
        return str(self.body.get("error_description") or self.body.get("_raw") or "")

    @property
    def outcome(self) -> Outcome:
        return self.forced or classify(self.error, self.http_status)

    @property
    def result(self) -> Any:
        return self.body.get("result")

    @property
    def time(self) -> dict[str, Any]:
        return self.body.get("time") or {}


class EndpointRefused(ValueError):
    """A client endpoint we will not send tokens to."""


# A DNS host name (RFC 1123 labels: 1-63 letters, digits or inner hyphens; 253 in all) with an
# optional port. IP literals in brackets are not accepted: no portal is addressed that way, and a
# host that requests cannot resolve would make the dispatcher fail on it forever.
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")
MAX_HOST_LENGTH = 253
MAX_ENDPOINT_LENGTH = Portal._meta.get_field("client_endpoint").max_length


def valid_host(netloc: str) -> bool:
    """True for `host` or `host:port` that we will store and connect to."""
    host, colon, port = netloc.partition(":")
    if colon and not (_PORT.fullmatch(port) and 0 < int(port) < 65536):
        return False
    if not host or len(host) > MAX_HOST_LENGTH:
        return False
    return all(_LABEL.fullmatch(label) for label in host.split("."))


def checked_endpoint(url: str) -> str:
    """A portal REST base URL we accept: https (http only if allowed), normalized to end in '/'."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. "http://[x/": an unclosed IPv6 bracket
        raise EndpointRefused(f"client endpoint is not a URL: {url!r}") from exc
    allowed = {"https", "http"} if settings.BITRIX24_ALLOW_HTTP else {"https"}
    if parts.scheme not in allowed:
        raise EndpointRefused(f"client endpoint must use {' or '.join(sorted(allowed))}: {url!r}")
    if not valid_host(parts.netloc):
        raise EndpointRefused(f"client endpoint has no valid host: {url!r}")
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    endpoint = f"{parts.scheme}://{parts.netloc}{path}"
    if len(endpoint) > MAX_ENDPOINT_LENGTH:
        raise EndpointRefused(f"client endpoint is longer than {MAX_ENDPOINT_LENGTH} characters")
    return endpoint


def call(portal: Portal, method: str, params: dict[str, Any]) -> RestResponse:
    """POST one REST method with the portal's current access token; never raises on HTTP trouble."""
    token = portal.access_token
    url = portal.rest_base + method
    started = time.monotonic()
    try:
        reply = _session.post(
            url, json={**params, "auth": token}, timeout=settings.BITRIX24_TIMEOUT
        )
    except requests.RequestException as exc:
        log.warning("bitrix24 %s %s: %s", portal.member_id, method, type(exc).__name__)
        return RestResponse(0, {"_raw": type(exc).__name__}, _ms(started), token)
    return RestResponse(reply.status_code, _json_body(reply), _ms(started), token)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _json_body(reply: requests.Response) -> dict[str, Any]:
    try:
        body = reply.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    # A proxy's HTML error page or similar: keep a little of it for diagnosis.
    error = f"HTTP_{reply.status_code}" if reply.status_code >= 400 else "ERROR_UNEXPECTED_ANSWER"
    return {"error": error, "_raw": reply.text[:300]}


class RefreshFailed(Exception):
    def __init__(self, outcome: Outcome, reason: str, http_status: int = 0):
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason
        self.http_status = http_status  # 0 = the auth server gave no answer


def refresh_tokens(portal_id: int, stale_token: str) -> Portal:
    """Refresh the portal's token pair once, under a row lock; return the fresh portal.

    Concurrent callers holding the same stale token wait on the lock and then find the token
    already replaced, so only one refresh is made (refresh tokens rotate: a second refresh with
    the old one would fail). The new pair is committed before anyone uses it.
    """
    failure = None
    with transaction.atomic():
        portal = Portal.objects.select_for_update().get(pk=portal_id)
        if portal.access_token != stale_token or not portal.can_send:
            return portal
        try:
            _store_tokens(portal, _oauth_refresh(portal.refresh_token))
        except RefreshFailed as exc:
            failure = exc  # raised after commit, so that "needs re-auth" is kept
            if exc.outcome is Outcome.PORTAL_BLOCKED:
                _mark_needs_reauth(portal, f"token refresh refused: {exc.reason}")
        else:
            portal.save()
    if failure is not None:
        raise failure
    return portal


def _oauth_refresh(refresh_token: str) -> dict[str, Any]:
    """Exchange a refresh token at the auth server (never at a URL taken from a request)."""
    params = {
        "grant_type": "refresh_token",
        "client_id": settings.BITRIX24_CLIENT_ID,
        "client_secret": settings.BITRIX24_CLIENT_SECRET,
        "refresh_token": refresh_token,
    }
    try:
        reply = _session.get(settings.BITRIX24_OAUTH_URL, params=params, timeout=(5.0, 30.0))
    except requests.RequestException as exc:
        raise RefreshFailed(
            Outcome.TRANSIENT, f"OAuth server unreachable: {type(exc).__name__}"
        ) from exc
    body = _json_body(reply)
    error = str(body.get("error") or "")
    if error in OAUTH_REAUTH_ERRORS:
        raise RefreshFailed(Outcome.PORTAL_BLOCKED, error, reply.status_code)
    if error or not body.get("access_token") or not body.get("refresh_token"):
        raise RefreshFailed(
            Outcome.TRANSIENT,
            f"OAuth server answered {reply.status_code} {error}".strip(),
            reply.status_code,
        )
    return body


@dataclass(frozen=True)
class VerifiedGrant:
    """What the auth server says about a token pair: the only source of truth for an install.

    Its `domain` is the host of `client_endpoint`: the auth server's own `domain` field names the
    auth server (oauth.bitrix.info), not the portal (Bitrix24 REST docs: settings/oauth)."""

    member_id: str
    client_endpoint: str
    server_endpoint: str
    access_token: str
    refresh_token: str
    expires_in: int
    scope: str
    app_status: str
    user_id: int | None

    @property
    def domain(self) -> str:
        return urlsplit(self.client_endpoint).netloc


class GrantNotVerified(Exception):
    """The auth server did not confirm install tokens. `retryable`: it gave no usable answer
    (down, 5xx); otherwise it refused them (invalid_grant, invalid_client, ...)."""

    def __init__(self, reason: str, retryable: bool):
        super().__init__(reason)
        self.retryable = retryable


# An access token lives an hour (Bitrix24 REST docs: settings/oauth); a day is plenty.
MAX_TOKEN_LIFETIME_S = 86400
MAX_USER_ID = 2**31 - 1  # Portal.installer_user_id is a PostgreSQL integer


def verify_grant(refresh_token: str) -> VerifiedGrant:
    """Trade install tokens for fresh ones at the auth server and return what it says.

    Refresh tokens rotate: the pair that was posted is dead afterwards, the returned one is the
    pair to keep. Whoever posted tokens the auth server does not know gets GrantNotVerified."""
    try:
        body = _oauth_refresh(refresh_token)
    except RefreshFailed as exc:
        retryable = exc.outcome is Outcome.TRANSIENT and not 400 <= exc.http_status < 500
        raise GrantNotVerified(exc.reason, retryable) from exc
    try:
        return _verified_grant(body)
    except (EndpointRefused, ValueError, TypeError) as exc:
        raise GrantNotVerified(f"unusable auth server answer: {exc}", retryable=False) from exc


def _verified_grant(body: dict[str, Any]) -> VerifiedGrant:
    member_id = str(body.get("member_id") or "")
    if not member_id or len(member_id) > Portal._meta.get_field("member_id").max_length:
        raise ValueError("no usable member_id")
    user_id = body.get("user_id")
    user_id = int(user_id) if user_id not in (None, "") else None
    if user_id is not None and not 0 < user_id <= MAX_USER_ID:
        raise ValueError(f"user_id {user_id} out of range")
    expires_in = int(body.get("expires_in") or 3600)
    server_endpoint = str(body.get("server_endpoint") or "")
    return VerifiedGrant(
        member_id=member_id,
        client_endpoint=checked_endpoint(str(body.get("client_endpoint") or "")),
        server_endpoint=server_endpoint if len(server_endpoint) <= MAX_ENDPOINT_LENGTH else "",
        access_token=str(body["access_token"]),
        refresh_token=str(body["refresh_token"]),
        expires_in=min(max(expires_in, 60), MAX_TOKEN_LIFETIME_S),
        scope=str(body.get("scope") or "")[: Portal._meta.get_field("scope").max_length],
        app_status=str(body.get("status") or "")[:1],
        user_id=user_id,
    )


def is_portal_admin(grant: VerifiedGrant) -> bool:
    """Ask the portal (`user.admin`) whether the verified token's user is a portal admin.

    Only the verified endpoint is called, with the verified token; any trouble counts as no."""
    return _ask_user(grant.client_endpoint, grant.access_token, "user.admin") is True


def _ask_user(endpoint: str, access_token: str, method: str) -> Any:
    """The `result` of a no-parameter method asked with a user's token; None on any trouble."""
    try:
        reply = _session.post(
            endpoint + method, json={"auth": access_token}, timeout=settings.BITRIX24_TIMEOUT
        )
    except requests.RequestException as exc:
        log.warning("%s at %s: %s", method, urlsplit(endpoint).netloc, type(exc).__name__)
        return None
    return _json_body(reply).get("result") if reply.status_code == 200 else None


@dataclass(frozen=True)
class PortalUser:
    """Who opened the app page, as the portal itself says (`profile`, `user.admin`)."""

    user_id: int
    name: str
    is_admin: bool


def current_user(portal: Portal, access_token: str) -> PortalUser | None:
    """The user whose token the app page was posted with, asked of the portal's STORED REST
    endpoint (never a URL from the request); None when the portal does not know the token."""
    profile = _ask_user(portal.rest_base, access_token, "profile")
    if not isinstance(profile, dict) or not str(profile.get("ID") or "").isdigit():
        return None
    user_id = int(profile["ID"])
    if not 0 < user_id <= MAX_USER_ID:
        return None
    name = " ".join(str(profile.get(k) or "").strip() for k in ("NAME", "LAST_NAME")).strip()
    # profile's ADMIN flag and user.admin must agree: the second is what Bitrix24 documents
    # as "may manage app settings".
    admin = (
        profile.get("ADMIN") is True
        and _ask_user(portal.rest_base, access_token, "user.admin") is True
    )
    return PortalUser(user_id, name[:200], admin)


def _mark_needs_reauth(portal: Portal, reason: str) -> None:
    portal.status = Portal.Status.NEEDS_REAUTH
    portal.record_error(reason)
    portal.save(update_fields=["status", "last_error", "last_error_at", "updated_at"])
    _report_parked(portal, reason)


def _report_parked(portal: Portal, reason: str) -> None:
    # Imported here: problems sends through the outbox, which imports this module.
    from bitrixapp import problems

    problems.report(portal, "portal_reauth", "portal", reason=reason[:300])


def _store_tokens(portal: Portal, data: dict[str, Any]) -> None:
    portal.access_token = data["access_token"]
    portal.refresh_token = data["refresh_token"]
    portal.token_expires_at = timezone.now() + timedelta(
        seconds=int(data.get("expires_in") or 3600)
    )
    if data.get("client_endpoint"):
        try:
            portal.client_endpoint = checked_endpoint(str(data["client_endpoint"]))
        except EndpointRefused as exc:
            log.warning("portal %s: ignoring refreshed endpoint: %s", portal.member_id, exc)
    if data.get("scope"):
        portal.scope = str(data["scope"])


def call_with_refresh(
    portal: Portal, method: str, params: dict[str, Any]
) -> tuple[Portal, RestResponse]:
    """One call; on an expired/unknown token refresh once and retry once."""
    reply = call(portal, method, params)
    if reply.outcome is not Outcome.REFRESH:
        return portal, reply
    try:
        portal = refresh_tokens(portal.pk, reply.token_used)
    except RefreshFailed as exc:
        body = {"error": "REFRESH_FAILED", "error_description": exc.reason}
        return portal, RestResponse(401, body, reply.duration_ms, forced=exc.outcome)
    if not portal.can_send:
        body = {"error": "PORTAL_NOT_ACTIVE", "error_description": portal.last_error}
        return portal, RestResponse(401, body, forced=Outcome.PORTAL_BLOCKED)
    retry = call(portal, method, params)
    if retry.outcome is Outcome.REFRESH:
        # A brand-new token refused too: the app lost access to this portal.
        _mark_needs_reauth(portal, f"fresh token refused: {retry.error}")
        retry.forced = Outcome.PORTAL_BLOCKED
    return portal, retry


class UploadFailed(Exception):
    """An upload to a Bitrix24 upload URL did not succeed (retry later)."""


def upload(url: str, field_name: str, filename: str, content: bytes) -> dict[str, Any]:
    """POST a file to an upload URL Bitrix24 handed out (attachRecord's upload mode)."""
    if not url.startswith("https://") and not settings.BITRIX24_ALLOW_HTTP:
        raise UploadFailed("refusing a non-https upload URL")
    try:
        reply = _session.post(
            url, files={field_name: (filename, content)}, timeout=settings.BITRIX24_TIMEOUT
        )
    except requests.RequestException as exc:
        raise UploadFailed(type(exc).__name__) from exc
    body = _json_body(reply)
    if reply.status_code >= 400 or body.get("error"):
        raise UploadFailed(f"HTTP {reply.status_code} {body.get('error') or ''}".strip())
    return body
