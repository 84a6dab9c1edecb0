"""PBX connections of a portal, their line and extension mappings, calls and inbound events."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from bitrixapp.crypto import EncryptedJSONField
from bitrixapp.inbox import InboundRequest
from bitrixapp.models import Portal


class PbxConnection(models.Model):
    """One PBX account of a portal: its own webhook URL, credentials, lines and extensions."""

    portal = models.ForeignKey(
        Portal,
        on_delete=models.CASCADE,
        related_name="pbx_connections",
        verbose_name=_("Bitrix24 portal"),
    )
    name = models.CharField(
        _("name"), max_length=100, help_text=_("Any name to tell your PBX accounts apart")
    )
    provider = models.CharField(_("PBX provider"), max_length=32)
    credentials = EncryptedJSONField(_("credentials"), blank=True, default=dict)
    api_url = models.URLField(
        _("PBX API address"), blank=True, help_text=_("Leave empty to use the provider's address")
    )
    webhook_uuid = models.UUIDField(
        _("webhook key"), default=uuid.uuid4, unique=True, editable=False
    )
    default_user_id = models.PositiveIntegerField(
        _("default employee"),
        null=True,
        blank=True,
        help_text=_(
            "Gets calls to extensions nobody is mapped to, and owns missed calls in Bitrix24"
        ),
    )
    show_card = models.BooleanField(
        _("show the call card"),
        default=True,
        help_text=_("Open the call card in Bitrix24 for the employees whose phone rings"),
    )
    crm_create = models.BooleanField(
        _("create a lead for unknown numbers"),
        default=True,
        help_text=_("A call from a number not in the CRM creates a lead"),
    )
    missed_call_min_duration_s = models.PositiveIntegerField(
        _("shortest real conversation, seconds"),
        default=0,
        help_text=_("Answered calls shorter than this are logged as missed (0: never)"),
    )
    route_to_responsible = models.BooleanField(
        _("show known clients' calls to their CRM owner"),
        default=False,
        help_text=_(
            "Bitrix24 is asked who owns the client's number; that employee also gets the card"
        ),
    )
    log_internal_calls = models.BooleanField(
        _("log calls between employees"),
        default=False,
        help_text=_("Calls from one extension to another are not logged unless ticked"),
    )
    default_line_number = models.CharField(
        _("line for other numbers"),
        max_length=64,
        blank=True,
        help_text=_(
            "Bitrix24 line for calls on numbers not in the lines below (empty: the number as "
            "the PBX reports it)"
        ),
    )
    only_mapped_lines = models.BooleanField(
        _("only the lines listed below"),
        default=False,
        help_text=_("Log only calls on the lines listed below; ignore calls on other numbers"),
    )
    callback_extension = models.CharField(
        _("extension for CRM callbacks"),
        max_length=64,
        blank=True,
        help_text=_(
            "Extension or group that rings for CRM callback requests when neither the "
            "client's CRM owner nor the default employee has an extension"
        ),
    )
    is_active = models.BooleanField(
        _("active"), default=True, help_text=_("Untick to ignore this PBX's events")
    )
    last_error = models.TextField(_("last error"), blank=True)
    last_error_at = models.DateTimeField(_("last error at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("PBX connection")
        verbose_name_plural = _("PBX connections")
        constraints = [models.UniqueConstraint(fields=["portal", "name"], name="pbx_name_unique")]

    def __str__(self) -> str:
        return f"{self.name} ({self.provider})"

    @property
    def webhook_url(self) -> str:
        return f"{settings.APP_BASE_URL}/telephony/hooks/{self.webhook_uuid}/"

    @property
    def admin_path(self) -> str:
        """Where an admin fixes this connection (its mappings, credentials): problem links."""
        return reverse("admin:telephony_pbxconnection_change", args=[self.pk])

    def line_name(self, line_number: str) -> str:
        """The name people know a line by, for messages; the number when it has none."""
        line = self.lines.filter(Q(line_number=line_number) | Q(number=line_number)).first()
        return (line.name or line.line_number) if line else (line_number or self.name)

    def record_error(self, message: str) -> None:
        PbxConnection.objects.filter(pk=self.pk).update(
            last_error=message[:2000], last_error_at=timezone.now()
        )


class PbxLine(models.Model):
    """A number the PBX reports, and the Bitrix24 external line it is logged on."""

    connection = models.ForeignKey(
        PbxConnection,
        on_delete=models.CASCADE,
        related_name="lines",
        verbose_name=_("PBX connection"),
    )
    number = models.CharField(
        _("PBX number"), max_length=64, help_text=_("The number as the PBX reports it")
    )
    line_number = models.CharField(
        _("Bitrix24 line"),
        max_length=64,
        help_text=_("The line's ID in Bitrix24 (calls are logged on it); usually the same number"),
    )
    name = models.CharField(
        _("name"), max_length=100, blank=True, help_text=_("Shown in Bitrix24's line list")
    )
    crm_auto_create = models.BooleanField(
        _("create leads"),
        default=True,
        help_text=_("Bitrix24 creates a lead for unknown numbers calling this line"),
    )
    registered_at = models.DateTimeField(
        _("registered in Bitrix24"),
        null=True,
        blank=True,
        help_text=_("Empty: Bitrix24 has not accepted the line yet (saving registers it)"),
    )

    class Meta:
        verbose_name = _("line")
        verbose_name_plural = _("lines")
        constraints = [
            models.UniqueConstraint(fields=["connection", "number"], name="pbx_line_unique")
        ]

    def __str__(self) -> str:
        return f"{self.number} → {self.line_number}"


class PbxExtension(models.Model):
    """PBX extension → Bitrix24 user. Rows typed by an admin override ones read from Bitrix24."""

    class Source(models.TextChoices):
        MANUAL = "manual", _("set by an admin")
        BITRIX = "bitrix", _("from the employee's internal number in Bitrix24")

    connection = models.ForeignKey(
        PbxConnection,
        on_delete=models.CASCADE,
        related_name="extensions",
        verbose_name=_("PBX connection"),
    )
    extension = models.CharField(
        _("extension"), max_length=32, help_text=_("The internal number in the PBX")
    )
    user_id = models.PositiveIntegerField(
        _("employee"), help_text=_("The Bitrix24 user whose card opens when it rings")
    )
    source = models.CharField(
        _("set by"),
        max_length=8,
        choices=Source.choices,
        default=Source.MANUAL,
        help_text=_("A number typed here wins over the one read from Bitrix24"),
    )

    class Meta:
        verbose_name = _("extension")
        verbose_name_plural = _("extensions")
        constraints = [
            models.UniqueConstraint(fields=["connection", "extension"], name="pbx_ext_unique")
        ]

    def __str__(self) -> str:
        return f"{self.extension} → user {self.user_id}"


class Call(models.Model):
    """One physical call as Bitrix24 sees it; `state` is the call engine's state."""

    class Origin(models.TextChoices):
        PBX = "pbx", _("PBX event")
        CLICK_TO_CALL = "click_to_call", _("click-to-call")
        CALLBACK = "callback", _("CRM callback form")

    portal = models.ForeignKey(
        Portal, on_delete=models.CASCADE, related_name="calls", verbose_name=_("Bitrix24 portal")
    )
    connection = models.ForeignKey(
        PbxConnection,
        on_delete=models.CASCADE,
        related_name="calls",
        verbose_name=_("PBX connection"),
    )
    call_key = models.CharField(
        _("PBX call ID"), max_length=255, blank=True, help_text=_("The provider's ID of the call")
    )
    command_id = models.CharField(
        _("click-to-call command"),
        max_length=64,
        blank=True,
        help_text=_("Our request to the PBX to place the call"),
    )
    origin = models.CharField(
        _("started by"), max_length=16, choices=Origin.choices, default=Origin.PBX
    )
    direction = models.CharField(_("direction"), max_length=10, blank=True)
    client_number = models.CharField(_("client's number"), max_length=64, blank=True)
    # NULL, not "", when the raw number is not a valid phone number.
    client_number_e164 = models.CharField(  # noqa: DJ001
        _("client's number, international"), max_length=20, null=True, blank=True
    )
    line_number = models.CharField(_("Bitrix24 line"), max_length=64, blank=True)
    b24_call_id = models.CharField(_("Bitrix24 call ID"), max_length=100, blank=True)
    register_command = models.ForeignKey(
        "bitrixapp.B24Command",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("register request"),
    )
    finish_command = models.ForeignKey(
        "bitrixapp.B24Command",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("finish request"),
    )
    phase = models.CharField(_("phase"), max_length=10, default="new")
    answered_user_id = models.PositiveIntegerField(_("answered by"), null=True, blank=True)
    status_code = models.CharField(_("result code"), max_length=8, blank=True)
    duration = models.PositiveIntegerField(_("talk time, seconds"), null=True, blank=True)
    started_at = models.DateTimeField(_("started"), null=True, blank=True)
    ended_at = models.DateTimeField(_("ended"), null=True, blank=True)
    state = models.JSONField(_("call engine state"), default=dict, blank=True)
    last_error = models.TextField(_("problem"), blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("call")
        verbose_name_plural = _("calls")
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "call_key"], condition=~Q(call_key=""), name="call_key_unique"
            ),
            models.UniqueConstraint(
                fields=["connection", "command_id"],
                condition=~Q(command_id=""),
                name="call_command_unique",
            ),
        ]
        indexes = [models.Index(fields=["portal", "-created_at"], name="call_recent")]

    def __str__(self) -> str:
        return f"call {self.call_key or self.command_id} ({self.phase})"

    @property
    def owner_key(self) -> str:
        return f"call:{self.pk}"

    @property
    def command_context(self) -> dict[str, int]:
        """What the call's Bitrix24 commands carry to find the call again (B24Command.context)."""
        return {"call": self.pk}


class PbxEvent(InboundRequest):
    """A PBX webhook as received (`source` is the path the PBX appended), kept once it is
    authenticated: for processing, diagnosis and "process again"."""

    portal = models.ForeignKey(
        Portal,
        on_delete=models.CASCADE,
        related_name="pbx_events",
        verbose_name=_("Bitrix24 portal"),
    )
    connection = models.ForeignKey(
        PbxConnection,
        on_delete=models.CASCADE,
        related_name="events",
        verbose_name=_("PBX connection"),
    )
    call = models.ForeignKey(
        Call,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="events",
        verbose_name=_("call"),
    )
    events = models.JSONField(
        _("call events"), default=list, blank=True, help_text=_("What the PBX said, in our words")
    )

    class Meta:
        verbose_name = _("PBX event")
        verbose_name_plural = _("PBX events")
        constraints = [
            models.UniqueConstraint(fields=["connection", "dedupe_key"], name="pbx_event_once")
        ]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="pbx_event_state")]


class CallRecording(models.Model):
    """A recording of a call: downloaded from the PBX by a worker, then attached in Bitrix24."""

    class State(models.TextChoices):
        PENDING = "pending", _("waiting for download")
        DOWNLOADED = "downloaded", _("downloaded, attaching")
        ATTACHED = "attached", _("attached")
        FAILED = "failed", _("failed")

    call = models.ForeignKey(
        Call, on_delete=models.CASCADE, related_name="recordings", verbose_name=_("call")
    )
    recording_id = models.CharField(_("PBX recording ID"), max_length=255)
    state = models.CharField(
        _("state"), max_length=10, choices=State.choices, default=State.PENDING
    )
    attempts = models.PositiveIntegerField(_("download attempts"), default=0)
    filename = models.CharField(_("file name"), max_length=255, blank=True)
    size = models.PositiveIntegerField(_("size, bytes"), null=True, blank=True)
    content = models.BinaryField(_("audio"), null=True, blank=True, editable=False)
    attach_command = models.ForeignKey(
        "bitrixapp.B24Command",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("attach request"),
    )
    error = models.TextField(_("error"), blank=True)
    # When a sweeper may queue the next download try (NULL: not waiting for one).
    next_attempt_at = models.DateTimeField(_("next attempt"), null=True, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)
    attached_at = models.DateTimeField(_("attached"), null=True, blank=True)

    class Meta:
        verbose_name = _("call recording")
        verbose_name_plural = _("call recordings")
        constraints = [
            models.UniqueConstraint(fields=["call", "recording_id"], name="recording_once")
        ]

    def __str__(self) -> str:
        return f"recording {self.recording_id} ({self.state})"


@receiver([post_save, post_delete], sender=PbxLine)
@receiver([post_save, post_delete], sender=PbxExtension)
def _mapping_changed(instance: PbxLine | PbxExtension, **_: object) -> None:
    """A line or extension changed: move the connection's updated_at, the version under which
    workers cache its settings (telephony.pipeline.policy_of)."""
    PbxConnection.objects.filter(pk=instance.connection_id).update(updated_at=timezone.now())
