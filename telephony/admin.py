"""Admin for PBX connections (credentials never shown), calls with their timeline, PBX events."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from bitrixapp import credential_form, timeline, users
from bitrixapp.admin_scope import PortalScoped, staff_portal
from bitrixapp.inbox_admin import InboundRequestAdmin
from bitrixapp.timeline import as_json, lines, when
from telephony import directory, dry_run, journal, providers
from telephony.config import CONNECTION_SETTINGS
from telephony.models import Call, CallRecording, PbxConnection, PbxEvent, PbxExtension, PbxLine

# ---------------------------------------------------------------- connections


def _registered_providers() -> list:
    """Loads every provider module, so it is only called while building a connection page."""
    return [providers.get(slug) for slug in providers.REGISTRY]


class PbxConnectionForm(credential_form.CredentialsForm):
    """Credentials as one password input per key (added by `credential_form.credential_form`)."""

    provider = forms.ChoiceField(
        label=PbxConnection._meta.get_field("provider").verbose_name,
        choices=providers.choices,
        help_text=_("The company whose PBX sends the calls"),
    )
    api_url = forms.URLField(
        label=PbxConnection._meta.get_field("api_url").verbose_name,
        required=False,
        assume_scheme="https",
        max_length=200,
        help_text=PbxConnection._meta.get_field("api_url").help_text,
        error_messages={"invalid": _("Enter a web address such as https://app.mango-office.ru")},
    )

    class Meta:
        model = PbxConnection
        fields = ("portal", "name", "provider", "is_active", *CONNECTION_SETTINGS)


class PlainWordsFormSet(forms.BaseInlineFormSet):
    """Django says "Please correct the duplicate data for number": name the field as the
    page shows it."""

    def get_unique_error_message(self, unique_check: tuple[str, ...]) -> str:
        names = [name for name in unique_check if name != self.fk.name]  # the parent: implied
        fields = [str(self.model._meta.get_field(name).verbose_name) for name in names]
        return _("Each %(field)s may be listed only once.") % {"field": ", ".join(fields)}


class PbxLineInline(PortalScoped, admin.TabularInline):
    portal_path = "connection__portal"
    model = PbxLine
    formset = PlainWordsFormSet
    fields = ("number", "line_number", "name", "crm_auto_create", "registered_at")
    readonly_fields = ("registered_at",)
    extra = 0


class PbxExtensionInline(PortalScoped, admin.TabularInline):
    portal_path = "connection__portal"
    model = PbxExtension
    formset = PlainWordsFormSet
    fields = ("extension", "user_id", "source")
    readonly_fields = ("source",)
    extra = 0

    def get_formset(self, request: HttpRequest, obj: PbxConnection | None = None, **kwargs: Any):
        formset = super().get_formset(request, obj, **kwargs)
        keep = set(obj.extensions.values_list("user_id", flat=True)) if obj else set()
        fields = formset.form.base_fields
        fields["user_id"] = users.user_field(_portal_id(request, obj), keep, fields["user_id"])
        return formset


def _portal_id(request: HttpRequest, connection: PbxConnection | None) -> int | None:
    """Whose users to offer: the connection's portal, or a portal admin's own on "add"."""
    if connection is not None:
        return connection.portal_id
    portal = staff_portal(request)
    return portal.pk if portal else None


@admin.register(PbxConnection)
class PbxConnectionAdmin(PortalScoped, admin.ModelAdmin):
    portal_path = "portal"
    list_display = ("name", "portal", "provider", "is_active", "last_error_at")
    list_filter = ("provider", "is_active", "portal")
    search_fields = ("name", "portal__domain", "portal__member_id")
    list_select_related = ("portal",)
    readonly_fields = ("webhook_url_display", "last_error", "last_error_at")
    inlines = (PbxLineInline, PbxExtensionInline)
    actions = ("fill_extensions",)

    def get_fieldsets(self, request: HttpRequest, obj: PbxConnection | None = None) -> list:
        credential_inputs = credential_form.credential_fields(_registered_providers())
        fieldsets = [
            (None, {"fields": ("webhook_url_display",)}),
            (None, {"fields": ("portal", "name", "provider", "is_active")}),
            (
                _("PBX access keys"),
                {
                    "fields": credential_inputs,
                    "description": _(
                        "Stored encrypted and never shown. Leave a field empty to keep its "
                        "stored value; tick “remove” to drop an optional one."
                    ),
                },
            ),
            (_("Call handling"), {"fields": tuple(CONNECTION_SETTINGS)}),
        ]
        if obj is not None and obj.last_error:  # nothing to show on "add" or while all is well
            fieldsets.append((_("Last error"), {"fields": ("last_error", "last_error_at")}))
        return fieldsets

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any):
        kwargs["form"] = credential_form.credential_form(PbxConnectionForm, _registered_providers())
        form = super().get_form(request, obj, change, **kwargs)
        if "default_user_id" in form.base_fields:
            keep = {obj.default_user_id} if obj and obj.default_user_id else set()
            form.base_fields["default_user_id"] = users.user_field(
                _portal_id(request, obj), keep, form.base_fields["default_user_id"]
            )
        return form

    @admin.display(description=_("address for the PBX (webhook URL)"))
    def webhook_url_display(self, connection: PbxConnection) -> str:
        if connection.pk is None:
            return _("shown here once the connection is saved")
        return format_html(
            '<code style="font-size:1.25em;user-select:all">{}</code>'
            '<div class="help">{} {}</div>'
            '<p><a class="button" href="{}">{}</a></p>',
            connection.webhook_url,
            providers.webhook_hint(connection.provider),
            _("It identifies this connection; keep it private."),
            reverse("admin:telephony_pbxconnection_dry_run", args=[connection.pk]),
            _("Simulate an incoming call"),
        )

    def save_model(self, request: HttpRequest, obj: PbxConnection, form: Any, change: bool) -> None:
        """A new connection takes its provider's defaults (MTT: 3 s minimum talk) for the
        settings the admin left as the form offered them."""
        if not change:
            for name, value in providers.setting_defaults(obj.provider).items():
                if name not in form.changed_data:
                    setattr(obj, name, value)
        super().save_model(request, obj, form, change)

    def get_urls(self) -> list:
        view = self.admin_site.admin_view(self.dry_run_view)
        return [
            path("<int:pk>/dry-run/", view, name="telephony_pbxconnection_dry_run"),
            *super().get_urls(),
        ]

    def dry_run_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """The routing dry run: the engine's decision for a made-up call, nothing saved."""
        connection = self.get_object(request, str(pk))  # scoped: another portal's is None
        if connection is None or not self.has_view_permission(request, connection):
            raise Http404
        form = DryRunForm(request.POST or None, initial=_dry_run_initial(connection))
        decision = dry_run.simulate(connection, form.question()) if form.is_valid() else None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": connection,
            "title": _("Simulate an incoming call"),
            "form": form,
            "decision": decision,
        }
        return TemplateResponse(request, "admin/telephony/dry_run.html", context)

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

    @admin.action(description=_("Fill extensions from Bitrix24 users"), permissions=["change"])
    def fill_extensions(self, request: HttpRequest, queryset: QuerySet[PbxConnection]) -> None:
        connections = list(queryset.select_related("portal"))
        for connection in connections:
            directory.load_extensions(connection)
        count = len(connections)
        messages.success(
            request,
            ngettext(
                "Reading Bitrix24 users for %(count)d connection; extensions typed here are kept.",
                "Reading Bitrix24 users for %(count)d connections; extensions typed here are kept.",
                count,
            )
            % {"count": count},
        )


class DryRunForm(forms.Form):
    client_number = forms.CharField(
        label=_("client's number"), max_length=64, help_text=_("Who calls, e.g. +7 495 123-45-67")
    )
    dialed_number = forms.CharField(
        label=_("number dialed"),
        max_length=64,
        required=False,
        help_text=_("Your company's number the client calls (one of the lines)"),
    )
    ringing = forms.CharField(
        label=_("extensions that ring"),
        max_length=500,
        required=False,
        help_text=_("Separated by commas or spaces, in the order they ring"),
    )
    answered_by = forms.CharField(
        label=_("answered by extension"),
        max_length=32,
        required=False,
        help_text=_("Leave empty for a call nobody answers"),
    )
    talk_seconds = forms.IntegerField(
        label=_("talk time, seconds"), min_value=0, max_value=86400, initial=60
    )

    def question(self) -> dry_run.Question:
        data = self.cleaned_data
        return dry_run.Question(
            client_number=data["client_number"].strip(),
            dialed_number=data["dialed_number"].strip(),
            ringing=tuple(data["ringing"].replace(",", " ").split()),
            answered_by=data["answered_by"].strip(),
            talk_seconds=data["talk_seconds"],
        )


def _dry_run_initial(connection: PbxConnection) -> dict:
    line = connection.lines.order_by("pk").first()
    extension = connection.extensions.order_by("extension").first()
    return {
        "client_number": "+74951234567",
        "dialed_number": line.number if line else "",
        "ringing": extension.extension if extension else "",
        "talk_seconds": 60,
    }


# ---------------------------------------------------------------- calls


def _event_entry(event: PbxEvent) -> timeline.Entry:
    link = reverse("admin:telephony_pbxevent_change", args=[event.pk])
    cells = (
        when(event.received_at),
        format_html('<a href="{}">PBX event #{}</a><br>{}', link, event.pk, event.source),
        lines(event.state, f"processed {when(event.processed_at)}" if event.processed_at else ""),
        format_html("<pre>{}</pre>{}", as_json(event.events), event.error),
    )
    return timeline.Entry(event.received_at, timeline.INBOUND, event.pk, cells)


def call_timeline(call: Call) -> list[timeline.Entry]:
    """The call's PBX events and the Bitrix24 commands they caused."""
    events = [_event_entry(e) for e in call.events.order_by("pk")]
    return events + timeline.command_entries(call.portal_id, call.owner_key)


@admin.register(Call)
class CallAdmin(PortalScoped, admin.ModelAdmin):
    portal_path = "portal"
    portal_permissions = ("view",)
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
    readonly_fields = [f.name for f in Call._meta.fields] + [
        "journal_table",
        "timeline_table",
        "recordings_table",
    ]
    fieldsets = [
        (_("Call journal"), {"fields": ("journal_table",)}),
        (None, {"fields": [f.name for f in Call._meta.fields if f.name not in ("id", "state")]}),
        (_("Recordings"), {"fields": ("recordings_table",)}),
        (
            _("Technical details"),
            {"fields": ("timeline_table", "state"), "classes": ("collapse",)},
        ),
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # calls come from the PBX and click-to-call only

    def has_change_permission(self, request: HttpRequest, obj: Call | None = None) -> bool:
        return False  # the page is the call's record: read-only

    @admin.display(description=_("PBX events and Bitrix24 commands"))
    def timeline_table(self, call: Call) -> str:
        return timeline.render(call_timeline(call))

    @admin.display(description=_("what happened, in order"))
    def journal_table(self, call: Call) -> str:
        return journal.render(journal.of_call(call))

    @admin.display(description=_("recordings"))
    def recordings_table(self, call: Call) -> str:
        # The audio itself (`content`) is never loaded here.
        recordings = CallRecording.objects.filter(call=call).defer("content").order_by("pk")
        return timeline.table(
            (
                _("recording"),
                _("state"),
                _("attempts"),
                _("file"),
                _("bytes"),
                _("error"),
                _("created"),
                _("attached"),
            ),
            (_recording_row(r) for r in recordings),
        )


def _recording_row(r: CallRecording) -> tuple:
    return (
        r.recording_id,
        r.get_state_display(),
        r.attempts,
        r.filename,
        "" if r.size is None else r.size,
        r.error,
        when(r.created_at),
        when(r.attached_at),
    )


# ---------------------------------------------------------------- events


@admin.register(PbxEvent)
class PbxEventAdmin(InboundRequestAdmin):
    portal_path = "portal"
    list_display = ("id", "connection", "source", "state", "call", "received_at", "processed_at")
    list_filter = ("state", "source", "connection")
    list_select_related = ("connection", "call")
    extra_fields = ("connection", "call", "normalized_events")

    @admin.display(description=_("call events"))
    def normalized_events(self, event: PbxEvent) -> str:
        return format_html("<pre>{}</pre>", as_json(event.events))
