"""Admin for SMS accounts (credentials never shown), senders with their Bitrix24 registration,
messages with their status history, the inbound requests, and a campaign summary."""

from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.contrib import admin
from django.db import transaction
from django.db.models import Count, QuerySet, Sum
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from bitrixapp import credential_form, timeline
from bitrixapp.admin_scope import PortalScoped
from bitrixapp.inbox_admin import InboundRequestAdmin
from bitrixapp.timeline import when
from sms import providers, senders
from sms.config import ACCOUNT_SETTINGS
from sms.models import (
    SmsAccount,
    SmsDeliveryReport,
    SmsHandlerCall,
    SmsMessage,
    SmsSender,
    SmsStatus,
    SmsStatusChange,
)


def _registered_providers() -> list:
    return [providers.get(slug) for slug in providers.REGISTRY]


class SmsAccountForm(credential_form.CredentialsForm):
    provider = forms.ChoiceField(label=_("provider"), choices=providers.choices)

    class Meta:
        model = SmsAccount
        fields = ("portal", "name", "provider", *ACCOUNT_SETTINGS)


@admin.register(SmsAccount)
class SmsAccountAdmin(PortalScoped, admin.ModelAdmin):
    portal_path = "portal"
    list_display = ("name", "portal", "provider", "rate_per_second", "is_active", "last_error_at")
    list_filter = ("provider", "is_active", "portal")
    search_fields = ("name", "portal__domain", "portal__member_id")
    list_select_related = ("portal",)
    readonly_fields = ("dlr_url_display", "last_error", "last_error_at")

    def get_fieldsets(self, request: HttpRequest, obj: SmsAccount | None = None) -> list:
        return [
            (None, {"fields": ("dlr_url_display",)}),
            (None, {"fields": ("portal", "name", "provider")}),
            (
                _("Credentials"),
                {
                    "fields": credential_form.credential_fields(_registered_providers()),
                    "description": _(
                        "Stored encrypted and never shown. Leave a field empty to keep its "
                        "stored value."
                    ),
                },
            ),
            (_("Sending"), {"fields": tuple(ACCOUNT_SETTINGS)}),
            (_("Last error"), {"fields": ("last_error", "last_error_at")}),
        ]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any):
        kwargs["form"] = credential_form.credential_form(SmsAccountForm, _registered_providers())
        return super().get_form(request, obj, change, **kwargs)

    @admin.display(description=_("delivery report URL"))
    def dlr_url_display(self, account: SmsAccount) -> str:
        if account.pk is None:
            return _("shown here once the account is saved")
        return format_html(
            '<code style="font-size:1.25em;user-select:all">{}</code><div class="help">{}</div>',
            account.dlr_url,
            _(
                "Give this URL to MTS as the delivery report (callback) address. Every message "
                "also carries it. It identifies this account; keep it private."
            ),
        )

    def save_model(self, request: HttpRequest, obj: SmsAccount, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change and "is_active" in form.changed_data:
            for sender in obj.senders.select_related("portal", "account"):
                senders.sync(sender)


class SmsSenderForm(forms.ModelForm):
    class Meta:
        model = SmsSender
        fields = ("account", "code", "name", "alpha_name", "kind", "consent_field", "is_active")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        account, code = cleaned.get("account"), cleaned.get("code")
        if account is not None and code:
            # The portal is taken from the account, so the model's unique (portal, code)
            # constraint is not checked by the form itself.
            taken = SmsSender.objects.filter(portal_id=account.portal_id, code=code)
            if taken.exclude(pk=self.instance.pk).exists():
                self.add_error("code", _("Another sender of this portal has this code."))
        kind = cleaned.get("kind")
        if kind == SmsSender.Kind.MARKETING and not cleaned.get("consent_field"):
            self.add_error("consent_field", _("Marketing senders need a consent field."))
        return cleaned


@admin.register(SmsSender)
class SmsSenderAdmin(PortalScoped, admin.ModelAdmin):
    portal_path = "portal"
    form = SmsSenderForm
    list_display = ("name", "code", "alpha_name", "kind", "account", "is_active", "registration")
    list_filter = ("kind", "is_active", "account")
    search_fields = ("name", "code", "alpha_name")
    list_select_related = ("account",)
    fields = (
        "account",
        "code",
        "name",
        "alpha_name",
        "kind",
        "consent_field",
        "is_active",
        "handler_url_display",
        "registered_code",
        "registered_at",
        "registration_error",
    )
    readonly_fields = (
        "handler_url_display",
        "registered_code",
        "registered_at",
        "registration_error",
    )

    @admin.display(description=_("in Bitrix24"))
    def registration(self, sender: SmsSender) -> str:
        if sender.registration_error:
            return _("error: %(error)s") % {"error": sender.registration_error[:80]}
        if sender.registered_at:
            return _("registered %(at)s") % {"at": when(sender.registered_at)}
        return _("not registered yet")

    @admin.display(description=_("handler URL"))
    def handler_url_display(self, sender: SmsSender) -> str:
        return sender.handler_url if sender.pk else _("shown here once the sender is saved")

    def save_model(self, request: HttpRequest, obj: SmsSender, form: Any, change: bool) -> None:
        obj.portal_id = obj.account.portal_id
        super().save_model(request, obj, form, change)
        senders.sync(obj)

    def delete_model(self, request: HttpRequest, obj: SmsSender) -> None:
        senders.forget(obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[SmsSender]) -> None:
        with transaction.atomic():
            for sender in queryset.select_related("portal"):
                self.delete_model(request, sender)


class StatusHistoryInline(PortalScoped, admin.TabularInline):
    portal_path = "message__portal"
    model = SmsStatusChange
    fields = ("at", "status", "source", "reason")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(SmsMessage)
class SmsMessageAdmin(PortalScoped, admin.ModelAdmin):
    portal_path = "portal"
    portal_permissions = ("view",)  # messages come from Bitrix24: a record, not settings
    list_display = (
        "created_at",
        "sender",
        "recipient_e164",
        "status",
        "segments",
        "encoding",
        "reason",
    )
    list_filter = ("status", "sender", "account", "encoding", "module_id")
    search_fields = ("recipient", "recipient_e164", "b24_message_id", "provider_message_id")
    list_select_related = ("sender",)
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in SmsMessage._meta.fields] + ["commands_table"]
    inlines = (StatusHistoryInline,)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # messages come from Bitrix24 only

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("Bitrix24 commands"))
    def commands_table(self, message: SmsMessage) -> str:
        return timeline.render(timeline.command_entries(message.portal_id, message.owner_key))

    def get_urls(self) -> list:
        view = self.admin_site.admin_view(self.campaign_view)
        return [path("campaign/", view, name="sms_smsmessage_campaign"), *super().get_urls()]

    def campaign_view(self, request: HttpRequest) -> HttpResponse:
        """Counts per status and segments per sender for a time range (?since=&until=)."""
        until = _moment(request.GET.get("until")) or timezone.now()
        since = _moment(request.GET.get("since")) or until - timedelta(days=1)
        context = {
            **self.admin_site.each_context(request),
            "title": _("SMS campaign summary"),
            "since": since,
            "until": until,
            "rows": campaign_summary(self.get_queryset(request), since, until),
            "statuses": SmsStatus.choices,
        }
        return TemplateResponse(request, "sms/campaign.html", context)


def _moment(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else timezone.make_aware(moment)


def campaign_summary(messages: QuerySet[SmsMessage], since: datetime, until: datetime) -> list:
    """Per sender: messages and segments per status in [since, until)."""
    grouped = (
        messages.filter(created_at__gte=since, created_at__lt=until)
        .values("sender__name", "status")
        .annotate(count=Count("pk"), segments=Sum("segments"))
        .order_by("sender__name", "status")
    )
    table: dict[str, dict[str, Any]] = {}
    for row in grouped:
        entry = table.setdefault(
            row["sender__name"], {"sender": row["sender__name"], "by_status": {}, "total": 0}
        )
        entry["by_status"][row["status"]] = (row["count"], row["segments"] or 0)
        entry["total"] += row["count"]
    for entry in table.values():
        entry["cells"] = [entry["by_status"].get(status, (0, 0)) for status, _ in SmsStatus.choices]
        entry["segments"] = sum(segments for _, segments in entry["by_status"].values())
    return list(table.values())


@admin.register(SmsHandlerCall)
class SmsHandlerCallAdmin(InboundRequestAdmin):
    portal_path = "portal"
    list_display = ("id", "sender", "dedupe_key", "state", "message", "received_at")
    list_filter = ("state", "sender")
    list_select_related = ("sender", "message")
    extra_fields = ("sender", "message")


@admin.register(SmsDeliveryReport)
class SmsDeliveryReportAdmin(InboundRequestAdmin):
    portal_path = "portal"
    list_display = ("id", "account", "state", "received_at", "processed_at")
    list_filter = ("state", "account")
    list_select_related = ("account",)
    extra_fields = ("account",)
