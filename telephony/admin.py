"""Admin for PBX connections (credentials never shown), calls with their timeline, PBX events."""

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from bitrixapp.models import B24Command
from telephony import directory, providers
from telephony.models import Call, CallRecording, PbxConnection, PbxEvent, PbxExtension, PbxLine

CREDENTIAL_PREFIX = "credential_"
JSON_SHOWN_CHARS = 4000  # longer params/results are cut in the timeline (full text: command page)

CONNECTION_SETTINGS = (
    "api_url",
    "default_user_id",
    "show_card",
    "crm_create",
    "missed_call_min_duration_s",
    "route_to_responsible",
    "log_internal_calls",
    "only_mapped_lines",
    "callback_extension",
)


def _credential_keys() -> dict[str, list[str]]:
    """Each credential key of the registered providers → the names of the providers needing it.
    Loads every provider module, so it is only called while building a connection form."""
    keys: dict[str, list[str]] = {}
    for slug in providers.REGISTRY:
        provider = providers.get(slug)
        for key in provider.credential_keys:
            keys.setdefault(key, []).append(provider.name)
    return keys


def _json(value: Any) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return text if len(text) <= JSON_SHOWN_CHARS else text[:JSON_SHOWN_CHARS] + "\n…"


def _when(moment: datetime | None) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if moment else ""


def _lines(*texts: str) -> SafeString:
    return format_html_join(mark_safe("<br>"), "{}", ((t,) for t in texts if t))


def _table(head: Iterable[str], rows: Iterable[tuple], row_format: str) -> SafeString:
    return format_html(
        '<table class="telephony-table"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>',
        format_html_join("", "<th>{}</th>", ((h,) for h in head)),
        format_html_join("", row_format, rows),
    )


# ---------------------------------------------------------------- connections


class PbxConnectionForm(forms.ModelForm):
    """Credentials as one password input per key: never rendered, empty keeps the stored value.
    The inputs are added per request by `connection_form()` (they depend on the registry)."""

    provider = forms.ChoiceField(choices=providers.choices)
    api_url = forms.URLField(
        required=False,
        assume_scheme="https",
        max_length=200,
        help_text=PbxConnection._meta.get_field("api_url").help_text,
    )
    credential_fields: dict[str, list[str]] = {}  # credential key → providers needing it

    class Meta:
        model = PbxConnection
        fields = ("portal", "name", "provider", "is_active", *CONNECTION_SETTINGS)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        stored = self.instance.credentials or {}
        for key, names in self.credential_fields.items():
            state = "stored; leave empty to keep it" if stored.get(key) else "not set"
            self.fields[CREDENTIAL_PREFIX + key].help_text = f"{', '.join(names)}: {state}"

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        credentials = dict(self.instance.credentials or {})
        for key in self.credential_fields:
            if cleaned.get(CREDENTIAL_PREFIX + key):
                credentials[key] = cleaned[CREDENTIAL_PREFIX + key]
        slug = cleaned.get("provider")
        if slug:
            provider = providers.get(slug)
            for key in provider.credential_keys:
                if not credentials.get(key):
                    self.add_error(CREDENTIAL_PREFIX + key, f"required by {provider.name}")
        self.credentials_to_store = credentials
        return cleaned

    def save(self, commit: bool = True) -> PbxConnection:
        self.instance.credentials = self.credentials_to_store
        return super().save(commit)


def connection_form() -> type[PbxConnectionForm]:
    keys = _credential_keys()
    inputs = {
        CREDENTIAL_PREFIX + key: forms.CharField(
            label=key,
            required=False,
            widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        )
        for key in keys
    }
    return type("PbxConnectionForm", (PbxConnectionForm,), {**inputs, "credential_fields": keys})


class PbxLineInline(admin.TabularInline):
    model = PbxLine
    fields = ("number", "line_number", "name", "crm_auto_create", "registered_at")
    readonly_fields = ("registered_at",)
    extra = 0


class PbxExtensionInline(admin.TabularInline):
    model = PbxExtension
    fields = ("extension", "user_id", "source")
    readonly_fields = ("source",)
    extra = 0


@admin.register(PbxConnection)
class PbxConnectionAdmin(admin.ModelAdmin):
    list_display = ("name", "portal", "provider", "is_active", "last_error_at")
    list_filter = ("provider", "is_active", "portal")
    search_fields = ("name", "portal__domain", "portal__member_id")
    list_select_related = ("portal",)
    readonly_fields = ("webhook_url_display", "last_error", "last_error_at")
    inlines = (PbxLineInline, PbxExtensionInline)
    actions = ("fill_extensions",)

    def get_fieldsets(self, request: HttpRequest, obj: PbxConnection | None = None) -> list:
        credential_inputs = tuple(CREDENTIAL_PREFIX + key for key in _credential_keys())
        return [
            (None, {"fields": ("webhook_url_display",)}),
            (None, {"fields": ("portal", "name", "provider", "is_active")}),
            (
                "Credentials",
                {
                    "fields": credential_inputs,
                    "description": "Stored encrypted and never shown. "
                    "Leave a field empty to keep its stored value.",
                },
            ),
            ("Call handling", {"fields": CONNECTION_SETTINGS}),
            ("Last error", {"fields": ("last_error", "last_error_at")}),
        ]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any):
        kwargs["form"] = connection_form()
        return super().get_form(request, obj, change, **kwargs)

    @admin.display(description="webhook URL")
    def webhook_url_display(self, connection: PbxConnection) -> str:
        if connection.pk is None:
            return "shown here once the connection is saved"
        return format_html(
            '<code style="font-size:1.25em;user-select:all">{}</code>'
            '<div class="help">Enter this URL in the PBX as the address of the external system '
            "it notifies (Mango Office: Integrations → API connector, the external system's "
            "address). It identifies this connection; keep it private.</div>",
            connection.webhook_url,
        )

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        savers = {PbxLine: self._save_lines, PbxExtension: self._save_extensions}
        saver = savers.get(formset.model)
        if saver is None:
            super().save_formset(request, form, formset, change)
        else:
            saver(form.instance, formset)

    @staticmethod
    def _save_lines(connection: PbxConnection, formset: Any) -> None:
        """New and changed lines are (re-)registered in Bitrix24; a deleted line, or the old
        LINE_NUMBER of a changed one, is removed there unless another line still maps to it."""
        old_numbers = {f.instance.pk: f.initial.get("line_number") for f in formset.initial_forms}
        lines = formset.save(commit=False)
        retired = set()
        for line in formset.deleted_objects:
            retired.add(old_numbers.get(line.pk) or line.line_number)
            line.delete()
        for line in lines:
            old = old_numbers.get(line.pk) if line.pk else None
            line.save()
            directory.register_line(line)
            if old and old != line.line_number:
                retired.add(old)
        for line_number in sorted(retired):
            directory.remove_line(connection, line_number)

    @staticmethod
    def _save_extensions(connection: PbxConnection, formset: Any) -> None:
        rows = formset.save(commit=False)
        for row in formset.deleted_objects:
            row.delete()
        for row in rows:  # typed by an admin: wins over what Bitrix24 says from now on
            row.source = PbxExtension.Source.MANUAL
            row.save()

    def delete_model(self, request: HttpRequest, obj: PbxConnection) -> None:
        line_numbers = set(obj.lines.values_list("line_number", flat=True))
        super().delete_model(request, obj)
        for line_number in sorted(line_numbers):
            directory.remove_line(obj, line_number)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[PbxConnection]) -> None:
        with transaction.atomic():
            for connection in queryset.select_related("portal"):
                self.delete_model(request, connection)

    @admin.action(description="Fill extensions from Bitrix24 users", permissions=["change"])
    def fill_extensions(self, request: HttpRequest, queryset: QuerySet[PbxConnection]) -> None:
        connections = list(queryset.select_related("portal"))
        for connection in connections:
            directory.load_extensions(connection)
        messages.success(
            request,
            f"Reading Bitrix24 users for {len(connections)} connection(s); "
            "extensions typed here are kept.",
        )


# ---------------------------------------------------------------- calls


def _event_row(event: PbxEvent) -> tuple:
    link = reverse("admin:telephony_pbxevent_change", args=[event.pk])
    return (
        _when(event.received_at),
        format_html('<a href="{}">PBX event #{}</a><br>{}', link, event.pk, event.path),
        _lines(event.state, f"processed {_when(event.processed_at)}" if event.processed_at else ""),
        format_html("<pre>{}</pre>{}", _json(event.events), event.error),
    )


def _command_row(command: B24Command) -> tuple:
    link = reverse("admin:bitrixapp_b24command_change", args=[command.pk])
    error = " ".join(filter(None, (command.error_code, command.error_description)))
    return (
        _when(command.created_at),
        format_html('<a href="{}">Bitrix24 #{}</a><br>{}', link, command.pk, command.method),
        _lines(
            command.state,
            f"HTTP {command.http_status}" if command.http_status else "",
            f"sent {_when(command.sent_at)}" if command.sent_at else "",
            f"finished {_when(command.finished_at)}" if command.finished_at else "",
        ),
        format_html(
            "<pre>{}</pre>{}<pre>{}</pre>",
            _json(command.params),
            error,
            _json(command.result) if command.result is not None else "",
        ),
    )


def timeline(call: Call) -> list[tuple]:
    """The call's PBX events and Bitrix24 commands as table rows, in time order."""
    events = [(e.received_at, 0, e.pk, _event_row(e)) for e in call.events.order_by("pk")]
    commands = B24Command.objects.filter(portal_id=call.portal_id, owner_key=call.owner_key)
    rows = events + [(c.created_at, 1, c.pk, _command_row(c)) for c in commands.order_by("pk")]
    return [row for *_, row in sorted(rows, key=lambda r: r[:3])]


@admin.register(Call)
class CallAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "connection",
        "direction",
        "client_number",
        "phase",
        "answered_user_id",
        "status_code",
        "duration",
        "b24_call_id",
    )
    list_filter = ("connection", "phase", "direction", "status_code")
    search_fields = ("client_number", "call_key", "b24_call_id")
    list_select_related = ("connection",)
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Call._meta.fields] + ["timeline_table", "recordings_table"]
    fieldsets = [
        (None, {"fields": [f.name for f in Call._meta.fields if f.name != "id"]}),
        ("Timeline", {"fields": ("timeline_table",)}),
        ("Recordings", {"fields": ("recordings_table",)}),
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # calls come from the PBX and click-to-call only

    def has_change_permission(self, request: HttpRequest, obj: Call | None = None) -> bool:
        return False  # the page is the call's record: read-only

    @admin.display(description="PBX events and Bitrix24 commands")
    def timeline_table(self, call: Call) -> str:
        return _table(
            ("time", "what", "state", "detail"),
            timeline(call),
            "<tr>" + "<td>{}</td>" * 4 + "</tr>",
        )

    @admin.display(description="recordings")
    def recordings_table(self, call: Call) -> str:
        # The audio itself (`content`) is never loaded here.
        recordings = CallRecording.objects.filter(call=call).defer("content").order_by("pk")
        return _table(
            ("recording", "state", "attempts", "file", "bytes", "error", "created", "attached"),
            (_recording_row(r) for r in recordings),
            "<tr>" + "<td>{}</td>" * 8 + "</tr>",
        )


def _recording_row(r: CallRecording) -> tuple:
    return (
        r.recording_id,
        r.get_state_display(),
        r.attempts,
        r.filename,
        "" if r.size is None else r.size,
        r.error,
        _when(r.created_at),
        _when(r.attached_at),
    )


# ---------------------------------------------------------------- events


@admin.register(PbxEvent)
class PbxEventAdmin(admin.ModelAdmin):
    list_display = ("id", "connection", "path", "state", "call", "received_at", "processed_at")
    list_filter = ("state", "path", "connection")
    search_fields = ("dedupe_key",)
    list_select_related = ("connection", "call")
    date_hierarchy = "received_at"
    fields = (
        "connection",
        "call",
        "path",
        "state",
        "error",
        "received_at",
        "processed_at",
        "dedupe_key",
        "normalized_events",
        "request_body",
    )
    readonly_fields = fields
    actions = ("reprocess",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # events come from the PBX only

    @admin.display(description="normalized events")
    def normalized_events(self, event: PbxEvent) -> str:
        return format_html("<pre>{}</pre>", _json(event.events))

    @admin.display(description="request body (credentials masked)")
    def request_body(self, event: PbxEvent) -> str:
        return format_html(
            '<pre style="white-space:pre-wrap">{}</pre>', event.body
        )  # stored redacted

    @admin.action(description="Process again", permissions=["change"])
    def reprocess(self, request: HttpRequest, queryset: QuerySet[PbxEvent]) -> None:
        from telephony import pipeline

        events = list(queryset)
        for event in events:
            pipeline.reprocess(event)
        messages.success(request, f"{len(events)} event(s) queued again.")
