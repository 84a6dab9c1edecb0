"""Admin for operators: portals (never showing token values), the command log, events."""

import json

from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_POST

from bitrixapp import install, outbox, users
from bitrixapp.admin_scope import OPERATORS_ONLY, PortalScoped, scoped
from bitrixapp.inbox_admin import InboundRequestAdmin
from bitrixapp.models import B24Command, BitrixEvent, BitrixUser, Portal

# The admin is the portal admins' settings: it says what it is, not "Django administration".
admin.site.site_header = _("Telephony & SMS bridge: settings")
admin.site.site_title = _("Telephony & SMS bridge")
admin.site.index_title = _("Settings")


@admin.register(Portal)
class PortalAdmin(PortalScoped, admin.ModelAdmin):
    portal_path = ""  # the portal itself
    portal_permissions = ("view",)
    list_display = ("domain", "member_id", "status", "parked", "plan", "app_status")
    list_filter = ("status", "detected_plan", "plan_override")
    search_fields = ("domain", "member_id")
    # Secrets are left out of the form entirely; only whether they are set is shown.
    fields = (
        "member_id",
        "domain",
        "client_endpoint",
        "server_endpoint",
        "status",
        "parked",
        "app_status",
        "detected_plan",
        "plan_override",
        "scope",
        "installer_user_id",
        "tokens",
        "token_expires_at",
        "events_bound_version",
        "paused_methods",
        "last_error",
        "last_error_at",
        "installed_at",
        "uninstalled_at",
        "updated_at",
    )
    readonly_fields = tuple(f for f in fields if f != "plan_override")
    actions = ("rerun_setup",)

    @admin.display(description=_("on hold"))
    def parked(self, portal: Portal) -> str:
        """Why and since when nothing is sent to the portal (outbox.park, token refresh):
        its commands wait for a re-install or an app-page open, then fail after the retry
        horizon."""
        if portal.status != Portal.Status.NEEDS_REAUTH:
            return ""
        since = f"{portal.last_error_at:%Y-%m-%d %H:%M} UTC" if portal.last_error_at else "?"
        return _("since %(since)s: %(why)s") % {
            "since": since,
            "why": portal.last_error or _("needs re-authorization"),
        }

    @admin.display(description=_("tokens"))
    def tokens(self, portal: Portal) -> str:
        return ", ".join(
            f"{Portal._meta.get_field(name).verbose_name}: "
            f"{_('set') if getattr(portal, name) else _('missing')}"
            for name in ("access_token", "refresh_token", "application_token")
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # portals come from Bitrix24 installs only

    @admin.action(description=_("Re-bind events and re-read the plan"))
    def rerun_setup(self, request: HttpRequest, queryset: QuerySet[Portal]) -> None:
        for portal in queryset.filter(status=Portal.Status.ACTIVE):
            install.queue_setup(portal)
        messages.success(request, _("Setup queued."))


@admin.register(B24Command)
class B24CommandAdmin(PortalScoped, admin.ModelAdmin):
    portal_path = "portal"
    portal_permissions = ("view",)
    list_display = (
        "id",
        "portal",
        "method",
        "owner_key",
        "state",
        "attempts",
        "http_status",
        "error_code",
        "created_at",
        "finished_at",
    )
    list_filter = ("state", "method", "portal", "error_code")
    search_fields = ("owner_key", "method", "error_description")
    list_select_related = ("portal",)
    date_hierarchy = "created_at"
    exclude = ("params", "result")
    readonly_fields = [
        f.name for f in B24Command._meta.fields if f.name not in ("params", "result")
    ]
    readonly_fields += ["request_json", "response_json"]
    actions = ("retry_now",)

    @admin.display(description=_("request parameters"))
    def request_json(self, command: B24Command) -> str:
        return format_html(
            "<pre>{}</pre>", json.dumps(command.params, indent=2, ensure_ascii=False)
        )

    @admin.display(description=_("Bitrix24's answer"))
    def response_json(self, command: B24Command) -> str:
        return format_html(
            "<pre>{}</pre>", json.dumps(command.result, indent=2, ensure_ascii=False)
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description=_("Send again now (failed or waiting requests)"))
    def retry_now(self, request: HttpRequest, queryset: QuerySet[B24Command]) -> None:
        retry = queryset.filter(state__in=(B24Command.State.FAILED, B24Command.State.PENDING))
        portals = set(retry.values_list("portal_id", flat=True))
        count = retry.update(
            state=B24Command.State.PENDING, next_attempt_at=timezone.now(), finished_at=None
        )
        for portal_id in portals:
            outbox.kick(portal_id)
        message = ngettext(
            "%(count)d request queued again.", "%(count)d requests queued again.", count
        )
        messages.success(request, message % {"count": count})


@admin.register(BitrixEvent)
class BitrixEventAdmin(InboundRequestAdmin):
    portal_path = "portal"
    list_display = ("id", "portal", "source", "state", "attempts", "received_at", "processed_at")
    list_filter = ("state", "source", "portal")
    list_select_related = ("portal",)
    extra_fields = ("portal",)


@admin.register(BitrixUser)
class BitrixUserAdmin(PortalScoped, admin.ModelAdmin):
    """The synced user list; "Refresh from Bitrix24" (a button above the list) reads it anew."""

    portal_path = "portal"
    portal_permissions = ("view",)
    list_display = ("name", "user_id", "extension", "email", "is_active", "synced_at", "portal")
    list_filter = ("is_active", "portal")
    search_fields = ("name", "email", "extension", "=user_id")
    readonly_fields = ("portal", "user_id", "name", "email", "extension", "is_active", "synced_at")
    change_list_template = "admin/bitrixapp/bitrixuser/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the list comes from Bitrix24

    def get_urls(self) -> list:
        view = self.admin_site.admin_view(require_POST(self.refresh_view))
        return [path("refresh/", view, name="bitrixapp_bitrixuser_refresh"), *super().get_urls()]

    def refresh_view(self, request: HttpRequest) -> HttpResponseRedirect:
        """Read the users of every portal the login may see (a portal admin: their own)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        portals = scoped(Portal.objects.filter(status=Portal.Status.ACTIVE), "", request)
        for portal in portals:
            users.sync(portal)
        messages.success(
            request, _("Reading the user list from Bitrix24; reload this page in a moment.")
        )
        return HttpResponseRedirect(reverse("admin:bitrixapp_bitrixuser_changelist"))


# The logins themselves are the operator's business only.
admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class OperatorUserAdmin(PortalScoped, UserAdmin):
    portal_path = OPERATORS_ONLY


@admin.register(Group)
class OperatorGroupAdmin(PortalScoped, GroupAdmin):
    portal_path = OPERATORS_ONLY
