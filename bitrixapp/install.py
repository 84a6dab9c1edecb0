"""Installing, re-authorizing and uninstalling a portal.

Two install shapes arrive at /bitrix/install/ (reference §3.2): the install page opened in the
Bitrix24 frame (AUTH_ID, REFRESH_ID, member_id, query DOMAIN/PROTOCOL; it then calls
BX24.installFinish()), and the server-to-server ONAPPINSTALL form (auth[...]). Both end in
`install()`, which stores the portal and queues the one-time setup through the outbox.
"""

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from bitrixapp import outbox, rest
from bitrixapp.models import B24Command, Portal

EVENTS_TO_BIND = ("ONEXTERNALCALLSTART", "ONEXTERNALCALLBACKSTART", "ONAPPUNINSTALL")
SETUP_OWNER = "setup"
_DOMAIN = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?$")


class InstallRefused(ValueError):
    def __init__(self, detail: str, field: str | None = None):
        super().__init__(detail)
        self.field = field


@dataclass
class Grant:
    """Everything an install or app-page POST tells us about the portal and its tokens."""

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


def _need(value: str, name: str) -> str:
    if not value:
        raise InstallRefused(f"{name} is required", name)
    return value


def _int(value: Any, name: str, default: int | None) -> int | None:
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise InstallRefused(f"{name} must be an integer", name) from exc


def _endpoint(url: str, name: str) -> str:
    try:
        return rest.checked_endpoint(url)
    except rest.EndpointRefused as exc:
        raise InstallRefused(str(exc), name) from exc


def grant_from_frame(query: dict[str, str], form: dict[str, Any]) -> Grant:
    """The install/app page POST: tokens in the body, the portal's address in the query."""
    domain = _need(str(query.get("DOMAIN") or ""), "DOMAIN")
    if not _DOMAIN.match(domain):
        raise InstallRefused("DOMAIN is not a host name", "DOMAIN")
    protocol = str(query.get("PROTOCOL") or "1")
    # The frame POST carries no client_endpoint: derive it until a token response supplies one.
    scheme = {"1": "https", "0": "http"}.get(protocol)
    if scheme is None:
        raise InstallRefused("PROTOCOL must be 0 or 1", "PROTOCOL")
    return Grant(
        member_id=_need(str(form.get("member_id") or ""), "member_id"),
        domain=domain,
        client_endpoint=_endpoint(f"{scheme}://{domain}/rest/", "PROTOCOL"),
        access_token=_need(str(form.get("AUTH_ID") or ""), "AUTH_ID"),
        refresh_token=_need(str(form.get("REFRESH_ID") or ""), "REFRESH_ID"),
        expires_in=_int(form.get("AUTH_EXPIRES"), "AUTH_EXPIRES", 3600) or 3600,
        server_endpoint=str(form.get("SERVER_ENDPOINT") or ""),
        application_token=str(form.get("APPLICATION_TOKEN") or ""),
        scope=str(form.get("APPLICATION_SCOPE") or ""),
        app_status=str(form.get("status") or "")[:1],
    )


def grant_from_event(form: dict[str, Any]) -> Grant:
    """The ONAPPINSTALL form: everything under auth[...]."""
    auth = form.get("auth")
    if not isinstance(auth, dict):
        raise InstallRefused("auth[...] fields are required", "auth")
    return Grant(
        member_id=_need(str(auth.get("member_id") or ""), "auth[member_id]"),
        domain=_need(str(auth.get("domain") or ""), "auth[domain]"),
        client_endpoint=_endpoint(
            _need(str(auth.get("client_endpoint") or ""), "auth[client_endpoint]"),
            "auth[client_endpoint]",
        ),
        access_token=_need(str(auth.get("access_token") or ""), "auth[access_token]"),
        refresh_token=_need(str(auth.get("refresh_token") or ""), "auth[refresh_token]"),
        expires_in=_int(auth.get("expires_in"), "auth[expires_in]", 3600) or 3600,
        server_endpoint=str(auth.get("server_endpoint") or ""),
        application_token=_need(
            str(auth.get("application_token") or ""), "auth[application_token]"
        ),
        scope=str(auth.get("scope") or ""),
        app_status=str(auth.get("status") or "")[:1],
        user_id=_int(auth.get("user_id"), "auth[user_id]", None),
    )


def install(grant: Grant) -> Portal:
    """Create or revive the portal with fresh tokens and queue its setup (idempotent)."""
    with transaction.atomic():
        # The frame POST and ONAPPINSTALL often arrive together: get_or_create absorbs the race
        # on the unique member_id, the row lock orders the two updates.
        portal, created = Portal.objects.select_for_update().get_or_create(
            member_id=grant.member_id,
            defaults={"domain": grant.domain, "client_endpoint": grant.client_endpoint},
        )
        if created or portal.status != Portal.Status.ACTIVE:
            portal.installed_at = timezone.now()
        _apply_grant(portal, grant)
        portal.status = Portal.Status.ACTIVE
        portal.uninstalled_at = None
        portal.save()
        queue_setup(portal)
        # Commands parked while the portal needed re-auth go now, not at the next sweep.
        outbox.kick_after_commit(portal.pk)
    return portal


def _apply_grant(portal: Portal, grant: Grant) -> None:
    portal.domain = grant.domain
    portal.client_endpoint = grant.client_endpoint
    portal.server_endpoint = grant.server_endpoint or portal.server_endpoint
    portal.access_token = grant.access_token
    portal.refresh_token = grant.refresh_token
    portal.token_expires_at = timezone.now() + timedelta(seconds=grant.expires_in)
    portal.scope = grant.scope or portal.scope
    portal.app_status = grant.app_status or portal.app_status
    portal.installer_user_id = grant.user_id or portal.installer_user_id
    if grant.application_token:
        portal.application_token = grant.application_token


def revive(portal: Portal, grant: Grant) -> bool:
    """An app-page open with fresh tokens brings a portal that needs re-auth back to work."""
    if portal.status != Portal.Status.NEEDS_REAUTH:
        return False
    with transaction.atomic():
        _apply_grant(portal, grant)
        portal.status = Portal.Status.ACTIVE
        portal.record_error("")
        portal.last_error_at = None
        portal.save()
        outbox.kick_after_commit(portal.pk)
    return True


def queue_setup(portal: Portal) -> None:
    """Bind our event handlers (unbind first: bind twice is an error) and learn the plan.

    Bindings vanish on every app update and reinstall (reference §1.10), so this runs on each
    install and whenever the app page finds the bindings made by an older version.
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
    for event in EVENTS_TO_BIND:
        params = {"event": event, "handler": handler_url}
        for method in ("event.unbind", "event.bind"):
            last = method == "event.bind" and event == EVENTS_TO_BIND[-1]
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


# LICENSE_FAMILY values of Enterprise plans get the larger bucket (reference §3.3, §4.1).
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
        from bitrixapp import tasks

        transaction.on_commit(lambda: tasks.purge_portal.delay(portal.pk), robust=True)
