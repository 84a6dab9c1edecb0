"""SMS gateway accounts of a portal, their Bitrix24 senders, messages and inbound requests."""

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from bitrixapp.crypto import EncryptedJSONField
from bitrixapp.inbox import InboundRequest
from bitrixapp.models import Portal

# MTS registers alpha names of up to 11 Latin letters, digits and a few signs (GSM-7).
alpha_name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9 .\-_!&]{0,10}$",
    _("Up to 11 Latin letters, digits, spaces and . - _ ! &, starting with a letter or digit"),
)
# Bitrix24 accepts these characters in a sender CODE (messageservice.sender.add).
sender_code_validator = RegexValidator(
    r"^[a-zA-Z0-9._-]+$", _("Latin letters, digits, dot, dash and underscore only")
)

TTL_MIN_S, TTL_MAX_S = 300, 259200  # MTS Communicator's range for SMS


class SmsAccount(models.Model):
    """One SMS gateway contract of a portal: credentials, delivery-report URL, sending rate."""

    portal = models.ForeignKey(
        Portal, on_delete=models.CASCADE, related_name="sms_accounts", verbose_name=_("portal")
    )
    name = models.CharField(_("name"), max_length=100)
    provider = models.CharField(_("provider"), max_length=32, default="mts_by")
    credentials = EncryptedJSONField(_("credentials"), blank=True, default=dict)
    api_url = models.URLField(
        _("API URL"), blank=True, help_text=_("Empty: the provider's default API URL")
    )
    webhook_uuid = models.UUIDField(
        _("webhook key"), default=uuid.uuid4, unique=True, editable=False
    )
    default_region = models.CharField(
        _("default region"),
        max_length=2,
        default="BY",
        help_text=_("Country whose national spelling is assumed (80291234567, 29 1234567)"),
    )
    allowed_regions = models.CharField(
        _("allowed regions"),
        max_length=200,
        default="BY",
        blank=True,
        help_text=_("Countries messages may go to, comma-separated ISO codes; empty: any"),
    )
    rate_per_second = models.PositiveIntegerField(
        _("messages per second"),
        default=20,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text=_("The contract's limit; all workers together never send faster"),
    )
    ttl_s = models.PositiveIntegerField(
        _("lifetime (seconds)"),
        default=86400,
        validators=[MinValueValidator(TTL_MIN_S), MaxValueValidator(TTL_MAX_S)],
        help_text=_("How long the gateway keeps trying to deliver (300 to 259200)"),
    )
    is_active = models.BooleanField(_("active"), default=True)
    last_error = models.TextField(_("last error"), blank=True)
    last_error_at = models.DateTimeField(_("last error at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("SMS account")
        verbose_name_plural = _("SMS accounts")
        constraints = [models.UniqueConstraint(fields=["portal", "name"], name="sms_account_name")]

    def __str__(self) -> str:
        return f"{self.name} ({self.provider})"

    @property
    def dlr_url(self) -> str:
        return f"{settings.APP_BASE_URL}/sms/dlr/{self.webhook_uuid}/"

    @property
    def regions(self) -> list[str]:
        return [code.strip().upper() for code in self.allowed_regions.split(",") if code.strip()]

    def record_error(self, message: str) -> None:
        SmsAccount.objects.filter(pk=self.pk).update(
            last_error=message[:2000], last_error_at=timezone.now()
        )


class SmsSender(models.Model):
    """A Bitrix24 SMS provider (messageservice sender CODE) that sends through an account."""

    class Kind(models.TextChoices):
        TRANSACTIONAL = "transactional", _("transactional (notifications, replies)")
        MARKETING = "marketing", _("marketing (needs the contact's consent)")

    portal = models.ForeignKey(
        Portal, on_delete=models.CASCADE, related_name="sms_senders", verbose_name=_("portal")
    )
    account = models.ForeignKey(
        SmsAccount, on_delete=models.CASCADE, related_name="senders", verbose_name=_("SMS account")
    )
    code = models.CharField(
        _("code in Bitrix24"),
        max_length=50,
        validators=[sender_code_validator],
        help_text=_("Bitrix24 provider CODE, unique in the portal"),
    )
    name = models.CharField(
        _("display name"), max_length=100, help_text=_("What users see in Bitrix24")
    )
    alpha_name = models.CharField(
        _("alpha name"),
        max_length=11,
        validators=[alpha_name_validator],
        help_text=_("Sender name registered with MTS, up to 11 Latin characters"),
    )
    kind = models.CharField(
        _("kind"), max_length=16, choices=Kind.choices, default=Kind.TRANSACTIONAL
    )
    consent_field = models.CharField(
        _("consent field"),
        max_length=100,
        blank=True,
        help_text=_("Contact field (e.g. UF_CRM_SMS_CONSENT) that must be yes for marketing"),
    )
    webhook_uuid = models.UUIDField(
        _("webhook key"), default=uuid.uuid4, unique=True, editable=False
    )
    is_active = models.BooleanField(_("active"), default=True)
    registered_code = models.CharField(
        _("registered as"), max_length=50, blank=True, help_text=_("CODE as Bitrix24 knows it")
    )
    registered_at = models.DateTimeField(_("registered at"), null=True, blank=True)
    registration_error = models.TextField(_("registration error"), blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("SMS sender")
        verbose_name_plural = _("SMS senders")
        constraints = [models.UniqueConstraint(fields=["portal", "code"], name="sms_sender_code")]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"

    @property
    def handler_url(self) -> str:
        return f"{settings.APP_BASE_URL}/sms/send/{self.webhook_uuid}/"

    @property
    def admin_path(self) -> str:
        """Where an admin fixes this sender (its name, its account): problem links."""
        return reverse("admin:sms_smssender_change", args=[self.pk])

    @property
    def is_marketing(self) -> bool:
        return self.kind == self.Kind.MARKETING


class SmsStatus(models.TextChoices):
    """Bitrix24's message statuses (messageservice.message.status.update), ours too."""

    QUEUED = "queued", _("queued")
    SENT = "sent", _("sent (accepted by the gateway)")
    DELIVERED = "delivered", _("delivered")
    UNDELIVERED = "undelivered", _("undelivered")
    FAILED = "failed", _("failed")


class SmsMessage(models.Model):
    """One message Bitrix24 handed to a sender, and what became of it."""

    class Encoding(models.TextChoices):
        GSM7 = "gsm7", "GSM-7"
        UCS2 = "ucs2", "UCS-2"

    portal = models.ForeignKey(
        Portal, on_delete=models.CASCADE, related_name="sms_messages", verbose_name=_("portal")
    )
    account = models.ForeignKey(
        SmsAccount, on_delete=models.CASCADE, related_name="messages", verbose_name=_("SMS account")
    )
    sender = models.ForeignKey(
        SmsSender, on_delete=models.CASCADE, related_name="messages", verbose_name=_("sender")
    )
    b24_message_id = models.CharField(_("Bitrix24 message id"), max_length=64)
    module_id = models.CharField(_("sent from"), max_length=32, blank=True)
    recipient = models.CharField(_("recipient as given"), max_length=64, blank=True)
    # NULL, not "", when the recipient is not a usable number.
    recipient_e164 = models.CharField(  # noqa: DJ001
        _("recipient (E.164)"), max_length=20, null=True, blank=True
    )
    contact_id = models.PositiveIntegerField(_("CRM contact"), null=True, blank=True)
    text = models.TextField(_("text"), blank=True)
    encoding = models.CharField(_("encoding"), max_length=4, choices=Encoding.choices)
    segments = models.PositiveSmallIntegerField(_("segments"), default=1)
    provider_message_id = models.CharField(_("gateway message id"), max_length=64, blank=True)
    status = models.CharField(
        _("status"), max_length=12, choices=SmsStatus.choices, default=SmsStatus.QUEUED
    )
    reason = models.TextField(_("reason"), blank=True)
    attempts = models.PositiveIntegerField(_("send attempts"), default=0)
    # When the next send try is due (a sweeper re-queues overdue ones); NULL: not waiting.
    next_attempt_at = models.DateTimeField(_("next send try"), null=True, blank=True)
    created_at = models.DateTimeField(_("received"), default=timezone.now)
    sent_at = models.DateTimeField(_("accepted by the gateway"), null=True, blank=True)
    final_at = models.DateTimeField(_("final status at"), null=True, blank=True)
    last_polled_at = models.DateTimeField(_("status last asked"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("SMS message")
        verbose_name_plural = _("SMS messages")
        constraints = [
            models.UniqueConstraint(fields=["sender", "b24_message_id"], name="sms_message_once")
        ]
        indexes = [
            models.Index(fields=["portal", "-created_at"], name="sms_recent"),
            models.Index(fields=["status", "sent_at"], name="sms_open"),
            models.Index(fields=["account", "provider_message_id"], name="sms_provider_id"),
        ]

    def __str__(self) -> str:
        return (
            f"SMS {self.b24_message_id} to {self.recipient_e164 or self.recipient} ({self.status})"
        )

    @property
    def owner_key(self) -> str:
        return f"sms:{self.pk}"

    @property
    def extra_id(self) -> str:
        """Our id as the gateway's `extra_id`: reports and polls find the message by it."""
        return f"b24sms-{self.pk}"


class SmsStatusChange(models.Model):
    """The status history of a message: every change, where it came from and why."""

    class Source(models.TextChoices):
        HANDLER = "handler", _("checked on receipt")
        GATEWAY = "gateway", _("gateway answer")
        REPORT = "report", _("delivery report")
        POLL = "poll", _("status poll")
        TIMEOUT = "timeout", _("no report within the lifetime")

    message = models.ForeignKey(SmsMessage, on_delete=models.CASCADE, related_name="history")
    status = models.CharField(_("status"), max_length=12, choices=SmsStatus.choices)
    source = models.CharField(_("source"), max_length=8, choices=Source.choices)
    reason = models.TextField(_("reason"), blank=True)
    at = models.DateTimeField(_("at"), default=timezone.now)

    class Meta:
        verbose_name = _("status change")
        verbose_name_plural = _("status history")
        ordering = ("at", "pk")

    def __str__(self) -> str:
        return f"{self.status} ({self.source})"


class SmsHandlerCall(InboundRequest):
    """Bitrix24's call of a sender's HANDLER URL (one message to send), as received."""

    SECRET_FIELDS = ("auth[access_token]", "auth[refresh_token]", "auth[application_token]")

    portal = models.ForeignKey(
        Portal, on_delete=models.CASCADE, related_name="+", verbose_name=_("portal")
    )
    sender = models.ForeignKey(
        SmsSender, on_delete=models.CASCADE, related_name="handler_calls", verbose_name=_("sender")
    )
    message = models.ForeignKey(
        SmsMessage,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("message"),
    )

    class Meta:
        verbose_name = _("SMS handler call")
        verbose_name_plural = _("SMS handler calls")
        constraints = [
            models.UniqueConstraint(fields=["sender", "dedupe_key"], name="sms_handler_once")
        ]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="sms_handler_state")]


class SmsDeliveryReport(InboundRequest):
    """A delivery report the gateway pushed to an account's DLR URL, as received."""

    portal = models.ForeignKey(
        Portal, on_delete=models.CASCADE, related_name="+", verbose_name=_("portal")
    )
    account = models.ForeignKey(
        SmsAccount, on_delete=models.CASCADE, related_name="reports", verbose_name=_("SMS account")
    )

    class Meta:
        verbose_name = _("delivery report")
        verbose_name_plural = _("delivery reports")
        constraints = [
            models.UniqueConstraint(fields=["account", "dedupe_key"], name="sms_report_once")
        ]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="sms_report_state")]
