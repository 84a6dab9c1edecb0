"""Installing, re-authorizing and uninstalling a portal.

Two install shapes arrive at /bitrix/install/ (Bitrix24 REST docs:
settings/app-installation): the install page opened in the Bitrix24 frame (AUTH_ID,
REFRESH_ID, member_id, query DOMAIN/PROTOCOL; it then calls
BX24.installFinish()), and the server-to-server ONAPPINSTALL form (auth[...]). Both end in
`install()`, which stores the portal and queues the one-time setup through the outbox.

Nothing in an install request is trusted as such: a member_id, domain or URL proves nothing and
anyone can post them. The tokens are exchanged at the Bitrix24 auth server first
(`rest.verify_grant`), and its answer decides which portal they belong to, its REST endpoint
and the tokens we keep. An install without tokens is only an app update of a known portal and
must carry that portal's stored application_token.
"""

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from bitrixapp import events, jobs, outbox, problems, rest
from bitrixapp.http import secrets_equal
from bitrixapp.models import B24Command, Portal

SETUP_OWNER = "setup"
# Seconds an install should wait before trying again when the auth server is unreachable.
RETRY_AFTER_S = 30
# A refresh token we exchanged stays remembered this long (see _already_verified).
CONSUMED_TOKEN_TTL_S = 15 * 60
MAX_EXPIRES_IN = 10**7
_MAX_LENGTH = {
    name: Portal._meta.get_field(name).max_length
    for name in ("member_id", "domain", "client_endpoint", "server_endpoint", "scope")
}


class InstallRefused(ValueError):
    """The request is wrong (400) or not proven genuine (403): nothing is stored."""

    def __init__(self, detail: str, field: str | None = None, status: int = 400):
        super().__init__(detail)
        self.field = field
        self.status = status


class AuthServerUnavailable(Exception):
    """The auth server could not confirm the tokens right now: retry later, nothing stored."""


# Where each grant value came from, per request shape, to name the field in an error.
FIELD_NAMES: dict[str, dict[str, str]] = {
    "frame": {
        "member_id": "member_id",
        "refresh_token": "REFRESH_ID",
        "application_token": "APPLICATION_TOKEN",
    },
    "event": {
        "member_id": "auth[member_id]",
        "refresh_token": "auth[refresh_token]",
        "application_token": "auth[application_token]",
    },
}


@dataclass
class Grant:
    """Everything an install or app-page POST claims about the portal and its tokens.

    Claims only: `install()` and `revive()` act on what the auth server says about the tokens."""

    member_id: str
    domain: str
    client_endpoint: str
    access_token: str
    refresh_token: str
    expires_in: int = 3600
    server_endpoint: str = ""
    application_token: str = ""
    scope: str = ""
    app_status: str = ""
    user_id: int | None = None
    language: str = ""  # LANG of the frame, data[LANGUAGE_ID] of ONAPPINSTALL
    shape: str = "event"

    @property
    def has_tokens(self) -> bool:
        return bool(self.access_token or self.refresh_token)

    def field(self, name: str) -> str:
        return FIELD_NAMES[self.shape][name]


def _str(value: Any, name: str, max_length: int | None = None, required: bool = False) -> str:
    """A text field as posted: a string (or a plain number), no NUL, within the column size."""
    if value is None or value == "":
        if required:
            raise InstallRefused(f"{name} is required", name)
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InstallRefused(f"{name} must be a string", name)
    text = str(value)
    if "\x00" in text:
        raise InstallRefused(f"{name} must not contain NUL characters", name)
    if max_length is not None and len(text) > max_length:
        raise InstallRefused(f"{name} is longer than {max_length} characters", name)
    return text


def _int(value: Any, name: str, default: int | None, maximum: int) -> int | None:
    if value is None or value == "":
        return default
    # JSON floats (1e20) and booleans are not integers; "3600" as form text is.
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InstallRefused(f"{name} must be an integer", name)
    text = str(value).strip()
    if not text.isascii() or not text.isdigit():
        raise InstallRefused(f"{name} must be an integer", name)
    number = int(text)
    if not 0 < number <= maximum:
        raise InstallRefused(f"{name} must be between 1 and {maximum}", name)
    return number


def _host(value: Any, name: str) -> str:
    host = _str(value, name, _MAX_LENGTH["domain"], required=True)
    if not rest.valid_host(host):
        raise InstallRefused(f"{name} is not a host name", name)
    return host


def _endpoint(url: str, name: str) -> str:
    try:
        return rest.checked_endpoint(url)
    except rest.EndpointRefused as exc:
        raise InstallRefused(str(exc), name) from exc


def _language(value: Any) -> str:
    """A Bitrix24 language id ("ru", "en", "ua"...); anything else is dropped, not refused:
    it only chooses the language of our messages."""
    text = value if isinstance(value, str) else ""
    return text.lower() if text.isascii() and text.isalpha() and len(text) <= 8 else ""


def grant_from_frame(query: dict[str, Any], form: dict[str, Any]) -> Grant:
    """The install/app page POST: tokens in the body, the portal's address in the query."""
    domain = _host(query.get("DOMAIN"), "DOMAIN")
    protocol = str(query.get("PROTOCOL") or "1")
    # The frame POST carries no client_endpoint; the auth server's answer will supply it. The
    # derived one only lets an http portal be refused early when http is not allowed.
    scheme = {"1": "https", "0": "http"}.get(protocol)
    if scheme is None:
        raise InstallRefused("PROTOCOL must be 0 or 1", "PROTOCOL")
    return Grant(
        member_id=_str(form.get("member_id"), "member_id", _MAX_LENGTH["member_id"], True),
        domain=domain,
        client_endpoint=_endpoint(f"{scheme}://{domain}/rest/", "PROTOCOL"),
        access_token=_str(form.get("AUTH_ID"), "AUTH_ID", required=True),
        refresh_token=_str(form.get("REFRESH_ID"), "REFRESH_ID", required=True),
        expires_in=_int(form.get("AUTH_EXPIRES"), "AUTH_EXPIRES", 3600, MAX_EXPIRES_IN) or 3600,
        server_endpoint=_str(
            form.get("SERVER_ENDPOINT"), "SERVER_ENDPOINT", _MAX_LENGTH["server_endpoint"]
        ),
        application_token=_str(form.get("APPLICATION_TOKEN"), "APPLICATION_TOKEN"),
        scope=_str(form.get("APPLICATION_SCOPE"), "APPLICATION_SCOPE", _MAX_LENGTH["scope"]),
        app_status=_str(form.get("status"), "status")[:1],
        language=_language(query.get("LANG")),
        shape="frame",
    )


def grant_from_event(form: dict[str, Any]) -> Grant:
    """The ONAPPINSTALL form: everything under auth[...]. Tokens may be absent (an app update
    of an app without UI); if one is there, both must be."""
    auth, data = form.get("auth"), form.get("data")
    data = data if isinstance(data, dict) else {}
    if not isinstance(auth, dict):
        raise InstallRefused("auth[...] fields are required", "auth")
    access = _str(auth.get("access_token"), "auth[access_token]")
    refresh = _str(auth.get("refresh_token"), "auth[refresh_token]")
    if access or refresh:
        _str(access, "auth[access_token]", required=True)
        _str(refresh, "auth[refresh_token]", required=True)
    endpoint = _str(
        auth.get("client_endpoint"),
        "auth[client_endpoint]",
        _MAX_LENGTH["client_endpoint"],
        required=True,
    )
    return Grant(
        member_id=_str(auth.get("member_id"), "auth[member_id]", _MAX_LENGTH["member_id"], True),
        domain=_host(auth.get("domain"), "auth[domain]"),
        client_endpoint=_endpoint(endpoint, "auth[client_endpoint]"),
        access_token=access,
        refresh_token=refresh,
        expires_in=_int(auth.get("expires_in"), "auth[expires_in]", 3600, MAX_EXPIRES_IN) or 3600,
        server_endpoint=_str(
            auth.get("server_endpoint"), "auth[server_endpoint]", _MAX_LENGTH["server_endpoint"]
        ),
        application_token=_str(
            auth.get("application_token"), "auth[application_token]", required=True
        ),
        scope=_str(auth.get("scope"), "auth[scope]", _MAX_LENGTH["scope"]),
        app_status=_str(auth.get("status"), "auth[status]")[:1],
        user_id=_int(auth.get("user_id"), "auth[user_id]", None, rest.MAX_USER_ID),
        language=_language(data.get("LANGUAGE_ID")),
        shape="event",
    )


def install(grant: Grant) -> Portal:
    """Create or revive the portal with verified tokens and queue its setup (idempotent).

    Raises InstallRefused (nothing stored) or AuthServerUnavailable (nothing stored, retry)."""
    if not grant.has_tokens:
        return _update_without_tokens(grant)
    with transaction.atomic():
        # The frame POST and ONAPPINSTALL often arrive together: get_or_create absorbs the race
        # on the unique member_id, and the row lock, held across the auth server exchange,
        # makes installs of one portal take turns (see _already_verified). A failed
        # verification rolls the whole transaction back, a new row included.
        portal, created = Portal.objects.select_for_update().get_or_create(
            member_id=grant.member_id,
            defaults={"domain": grant.domain, "client_endpoint": grant.client_endpoint},
        )
        verified = _verify(grant, portal if not created else None)
        if verified is None:
            return portal  # this very token was verified for this portal moments ago
        if not created:
            _check_token_change(grant, portal, verified)
        was_parked = portal.status == Portal.Status.NEEDS_REAUTH
        if created or portal.status != Portal.Status.ACTIVE:
            portal.installed_at = timezone.now()
        _apply_verified(portal, verified)
        if grant.application_token:
            portal.application_token = grant.application_token
        portal.status = Portal.Status.ACTIVE
        portal.uninstalled_at = None
        if grant.language and not portal.language:
            portal.language = grant.language
        portal.save()
        queue_setup(portal)
        if was_parked:
            problems.resolve(portal, "portal_reauth", "portal")
        # Commands parked while the portal needed re-auth go now, not at the next sweep.
        outbox.kick_after_commit(portal.pk)
    return portal


def _verify(grant: Grant, existing: Portal | None) -> rest.VerifiedGrant | None:
    """The auth server's word on the posted tokens, or None for a token we already exchanged
    for this same active portal (a repeated or concurrent delivery of the same install)."""
    try:
        verified = rest.verify_grant(grant.refresh_token)
    except rest.GrantNotVerified as exc:
        if exc.retryable:
            raise AuthServerUnavailable(
                f"the Bitrix24 auth server could not confirm the install tokens: {exc}"
            ) from exc
        if existing is not None and _already_verified(grant, existing):
            return None
        raise InstallRefused(
            f"the Bitrix24 auth server refused the install tokens ({exc}); if "
            "BITRIX24_CLIENT_ID/BITRIX24_CLIENT_SECRET are right, install the app again",
            grant.field("refresh_token"),
            status=403,
        ) from exc
    if verified.member_id != grant.member_id:
        raise InstallRefused(
            "the install tokens belong to another portal than the member_id posted",
            grant.field("member_id"),
            status=403,
        )
    cache.set(_consumed_key(grant.refresh_token), verified.member_id, CONSUMED_TOKEN_TTL_S)
    return verified


def _check_token_change(grant: Grant, portal: Portal, verified: rest.VerifiedGrant) -> None:
    """A new application token for an installed portal means a reinstall, which only a portal
    admin can do. Any employee can get verified tokens of their own (by opening the app), so
    without this check one could post them with an application token of their choosing and
    then forge the portal's events (an uninstall with CLEAN=1 among them). After an uninstall
    the old token is void: tokens the auth server confirms prove the app is installed again."""
    stored = portal.application_token
    if portal.status == Portal.Status.UNINSTALLED or not stored or not grant.application_token:
        return
    if secrets_equal(grant.application_token, stored):
        return
    if not rest.is_portal_admin(verified):
        raise InstallRefused(
            "only a portal administrator can reinstall the app (the posted application token "
            "differs from the stored one and the tokens are not an administrator's)",
            grant.field("application_token"),
            status=403,
        )


def _consumed_key(refresh_token: str) -> str:
    return "b24:install:consumed:" + hashlib.sha256(refresh_token.encode()).hexdigest()


def _already_verified(grant: Grant, portal: Portal) -> bool:
    # Refresh tokens rotate, so the second delivery of the same install tokens (the frame POST
    # and ONAPPINSTALL carrying one pair, or a retry) is refused by the auth server. Only we
    # and Bitrix24 have seen that token: if we exchanged it for this portal, the request is
    # genuine. It changes nothing: the first delivery stored everything.
    remembered = cache.get(_consumed_key(grant.refresh_token))
    return remembered == portal.member_id and portal.status == Portal.Status.ACTIVE


def _update_without_tokens(grant: Grant) -> Portal:
    """ONAPPINSTALL without tokens (app without UI, app update): only for a known portal, and
    only with its stored application_token. Bindings vanish on updates: set them up again."""
    portal = (
        Portal.objects.filter(member_id=grant.member_id)
        .exclude(status=Portal.Status.UNINSTALLED)
        .first()
    )
    if portal is None:
        name = grant.field("refresh_token")
        raise InstallRefused(f"{name} is required to install the app on a new portal", name)
    if not secrets_equal(grant.application_token, portal.application_token):
        raise InstallRefused(
            f"{grant.field('application_token')} does not match the one stored at install",
            grant.field("application_token"),
            status=403,
        )
    with transaction.atomic():
        queue_setup(portal)
        outbox.kick_after_commit(portal.pk)
    return portal


def _apply_verified(portal: Portal, verified: rest.VerifiedGrant) -> None:
    portal.domain = verified.domain
    portal.client_endpoint = verified.client_endpoint
    portal.server_endpoint = verified.server_endpoint or portal.server_endpoint
    portal.access_token = verified.access_token
    portal.refresh_token = verified.refresh_token
    portal.token_expires_at = timezone.now() + timedelta(seconds=verified.expires_in)
    portal.scope = verified.scope or portal.scope
    portal.app_status = verified.app_status or portal.app_status
    portal.installer_user_id = verified.user_id or portal.installer_user_id


def revive(portal: Portal, grant: Grant) -> tuple[bool, str]:
    """An app-page open by a portal admin brings a portal that needs re-auth back to work.

    Returns (revived, why not). The tokens must be confirmed by the auth server for this
    portal and belong to an admin (`user.admin` asked with them); anything else stores nothing.
    """
    if portal.status != Portal.Status.NEEDS_REAUTH:
        return False, ""
    try:
        verified = rest.verify_grant(grant.refresh_token)
    except rest.GrantNotVerified as exc:
        return False, f"the Bitrix24 auth server did not confirm this session ({exc})"
    if verified.member_id != portal.member_id:
        return False, "these tokens belong to another portal"
    if not rest.is_portal_admin(verified):
        return False, "only a portal administrator can restore access: ask one to open the app"
    with transaction.atomic():
        locked = Portal.objects.select_for_update().get(pk=portal.pk)
        installer = locked.installer_user_id
        _apply_verified(locked, verified)
        # The reviving admin's tokens make them the installer; the one before stays an admin
        # who hears about problems.
        if installer and installer != locked.installer_user_id:
            locked.admin_user_ids = list(dict.fromkeys([*locked.admin_user_ids, installer]))
        locked.status = Portal.Status.ACTIVE
        locked.language = locked.language or grant.language
        locked.record_error("")
        locked.last_error_at = None
        locked.save()
        problems.resolve(locked, "portal_reauth", "portal")
        outbox.kick_after_commit(locked.pk)
    portal.refresh_from_db()
    problems.note_admin(portal, verified.user_id)
    return True, ""


def queue_setup(portal: Portal) -> None:
    """Bind our event handlers (unbind first: bind twice is an error) and learn the plan.

    Bindings vanish on every app update and reinstall (Bitrix24 REST docs: event.bind), so
    this runs on each install and whenever the app page finds the bindings made by an older
    version.
    """
    already = B24Command.objects.filter(
        portal=portal, owner_key=SETUP_OWNER, state__in=B24Command.OPEN_STATES
    ).exists()
    if already:
        return
    handler_url = f"{settings.APP_BASE_URL}/bitrix/events/"
    # A chain: if one step fails for good the rest fail too, and the last step's handler
    # records the outcome on the portal (so a half-bound portal is visible, and re-tried).
    previous = None
    to_bind = events.events_to_bind()
    for event in to_bind:
        params = {"event": event, "handler": handler_url}
        for method in ("event.unbind", "event.bind"):
            last = method == "event.bind" and event == to_bind[-1]
            previous = outbox.enqueue(
                portal,
                method,
                params,
                owner_key=SETUP_OWNER,
                depends_on=previous,
                handler="bitrixapp.events_bound" if last else "",
            )
    outbox.enqueue(portal, "app.info", owner_key=SETUP_OWNER, handler="bitrixapp.app_info")


def needs_setup(portal: Portal) -> bool:
    return portal.can_send and portal.events_bound_version != settings.APP_VERSION


@outbox.result_handler("bitrixapp.events_bound")
def _events_bound(command: B24Command) -> None:
    portal = Portal.objects.get(pk=command.portal_id)
    if command.state == B24Command.State.DONE:
        portal.events_bound_version = settings.APP_VERSION
    else:
        portal.events_bound_version = ""
        portal.record_error(
            f"binding events failed: {command.error_code} {command.error_description}"
        )
    portal.save()


# LICENSE_FAMILY values of Enterprise plans get the larger bucket (Bitrix24 REST docs:
# app.info, limits.md).
ENTERPRISE_FAMILIES = {"ent", "enterprise"}


@outbox.result_handler("bitrixapp.app_info")
def _app_info(command: B24Command) -> None:
    if command.state != B24Command.State.DONE or not isinstance(command.result, dict):
        return
    family = str(command.result.get("LICENSE_FAMILY") or "").lower()
    plan = Portal.Plan.ENTERPRISE if family in ENTERPRISE_FAMILIES else Portal.Plan.STANDARD
    fields = {"detected_plan": plan}
    if command.result.get("STATUS"):
        fields["app_status"] = str(command.result["STATUS"])[:1]
    Portal.objects.filter(pk=command.portal_id).update(**fields)


def uninstall(portal: Portal, clean: bool) -> None:
    """Stop all outgoing work now; with CLEAN=1 the portal's data is purged by a task."""
    portal.status = Portal.Status.UNINSTALLED
    portal.uninstalled_at = timezone.now()
    portal.access_token = portal.refresh_token = ""
    portal.events_bound_version = ""
    portal.save()
    outbox.cancel_open(portal, "portal uninstalled the app")
    if clean:
        jobs.after_commit("bitrixapp.tasks.purge_portal", portal.pk)
