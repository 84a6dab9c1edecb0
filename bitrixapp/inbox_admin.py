"""The admin every inbox table shares: filters by state and source, the stored request as it
came (secrets masked), attempts and the last error, and "process again"."""

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from bitrixapp import inbox
from bitrixapp.admin_scope import PortalScoped

INBOX_FIELDS = (
    "source",
    "state",
    "attempts",
    "error",
    "received_at",
    "next_attempt_at",
    "processed_at",
    "dedupe_key",
    "request_headers",
    "request_body",
)


class InboundRequestAdmin(PortalScoped, admin.ModelAdmin):
    """Read-only: rows come from the outside only. Subclasses add their own columns in front
    (`extra_fields`) and may extend `list_display`/`list_filter`; they declare `portal_path`
    (bitrixapp.admin_scope)."""

    portal_permissions = ("view", "change")  # change: "process again"

    extra_fields: tuple[str, ...] = ()
    list_filter: tuple[str, ...] = ("state", "source")
    search_fields = ("source", "dedupe_key", "error")
    date_hierarchy = "received_at"
    actions = ("reprocess",)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return (*self.extra_fields, *INBOX_FIELDS)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return self.get_fields(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description=_("request headers"))
    def request_headers(self, row: inbox.InboundRequest) -> str:
        lines = [f"{name}: {value}" for name, value in sorted(row.headers.items())]
        if row.query:
            lines.insert(0, f"query: ?{row.query}")
        return format_html('<pre style="white-space:pre-wrap">{}</pre>', "\n".join(lines))

    @admin.display(description=_("request body (secrets masked)"))
    def request_body(self, row: inbox.InboundRequest) -> str:
        return format_html(
            '<pre style="white-space:pre-wrap">{}</pre><div class="help">{}</div>',
            row.body,
            row.content_type,
        )

    @admin.action(
        description=_("Process again (reads the stored request anew)"), permissions=["change"]
    )
    def reprocess(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = inbox.reprocess(queryset)
        message = ngettext(
            "%(count)d request queued again.", "%(count)d requests queued again.", count
        )
        messages.success(request, message % {"count": count})
