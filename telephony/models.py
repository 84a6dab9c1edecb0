"""PBX connections of a portal, their line and extension mappings, calls and inbound events."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.urls import reverse
from django.utils import timezone

from bitrixapp.crypto import EncryptedJSONField
from bitrixapp.inbox import InboundRequest
from bitrixapp.models import Portal


class PbxConnection(models.Model):
    """One PBX account of a portal: its own webhook URL, credentials, lines and extensions."""

    portal = models.ForeignKey(Portal, on_delete=models.CASCADE, related_name="pbx_connections")
    name = models.CharField(max_length=100)
    provider = models.CharField(max_length=32)
    credentials = EncryptedJSONField(blank=True, default=dict)
    api_url = models.URLField(blank=True, help_text="Empty: the provider's default API URL")
    webhook_uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    default_user_id = models.PositiveIntegerField(
        null=True, blank=True, help_text="Bitrix24 user who gets unmatched and missed calls"
    )
    show_card = models.BooleanField(default=True)
    crm_create = models.BooleanField(default=True, help_text="Create a lead for unknown numbers")
    missed_call_min_duration_s = models.PositiveIntegerField(
        default=0, help_text="Answered calls shorter than this are logged as missed"
    )
    route_to_responsible = models.BooleanField(
        default=False, help_text="Show known clients' calls to their CRM owner"
    )
    default_line_number = models.CharField(
        max_length=64,
        blank=True,
        help_text="Bitrix24 LINE_NUMBER for calls on numbers not in the lines below "
        "(empty: the number as the PBX reports it)",
    )
    log_internal_calls = models.BooleanField(default=False)
    only_mapped_lines = models.BooleanField(
        default=False, help_text="Log only calls on the lines listed below"
    )
    callback_extension = models.CharField(
        max_length=64,
        blank=True,
        help_text="Extension or group that rings for CRM callback requests when neither the "
        "client's CRM owner nor the default user has an extension",
    )
    is_active = models.BooleanField(default=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
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

    connection = models.ForeignKey(PbxConnection, on_delete=models.CASCADE, related_name="lines")
    number = models.CharField(max_length=64, help_text="as the PBX reports it")
    line_number = models.CharField(max_length=64, help_text="Bitrix24 LINE_NUMBER")
    name = models.CharField(max_length=100, blank=True)
    crm_auto_create = models.BooleanField(default=True)
    registered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connection", "number"], name="pbx_line_unique")
        ]

    def __str__(self) -> str:
        return f"{self.number} → {self.line_number}"


class PbxExtension(models.Model):
    """PBX extension → Bitrix24 user. Rows typed by an admin override ones read from Bitrix24."""

    class Source(models.TextChoices):
        MANUAL = "manual", "set by an admin"
        BITRIX = "bitrix", "from Bitrix24 UF_PHONE_INNER"

    connection = models.ForeignKey(
        PbxConnection, on_delete=models.CASCADE, related_name="extensions"
    )
    extension = models.CharField(max_length=32)
    user_id = models.PositiveIntegerField()
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.MANUAL)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connection", "extension"], name="pbx_ext_unique")
        ]

    def __str__(self) -> str:
        return f"{self.extension} → user {self.user_id}"


class Call(models.Model):
    """One physical call as Bitrix24 sees it; `state` is the call engine's state."""

    class Origin(models.TextChoices):
        PBX = "pbx", "PBX event"
        CLICK_TO_CALL = "click_to_call", "click-to-call"
        CALLBACK = "callback", "CRM callback form"

    portal = models.ForeignKey(Portal, on_delete=models.CASCADE, related_name="calls")
    connection = models.ForeignKey(PbxConnection, on_delete=models.CASCADE, related_name="calls")
    call_key = models.CharField(max_length=255, blank=True, help_text="provider's call id")
    command_id = models.CharField(max_length=64, blank=True, help_text="our originate command")
    origin = models.CharField(max_length=16, choices=Origin.choices, default=Origin.PBX)
    direction = models.CharField(max_length=10, blank=True)
    client_number = models.CharField(max_length=64, blank=True)
    # NULL, not "", when the raw number is not a valid phone number.
    client_number_e164 = models.CharField(max_length=20, null=True, blank=True)  # noqa: DJ001
    line_number = models.CharField(max_length=64, blank=True)
    b24_call_id = models.CharField(max_length=100, blank=True)
    register_command = models.ForeignKey(
        "bitrixapp.B24Command", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    finish_command = models.ForeignKey(
        "bitrixapp.B24Command", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    phase = models.CharField(max_length=10, default="new")
    answered_user_id = models.PositiveIntegerField(null=True, blank=True)
    status_code = models.CharField(max_length=8, blank=True)
    duration = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    state = models.JSONField(default=dict, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
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

    portal = models.ForeignKey(Portal, on_delete=models.CASCADE, related_name="pbx_events")
    connection = models.ForeignKey(PbxConnection, on_delete=models.CASCADE, related_name="events")
    call = models.ForeignKey(
        Call, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    events = models.JSONField(default=list, blank=True, help_text="normalized call events")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connection", "dedupe_key"], name="pbx_event_once")
        ]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="pbx_event_state")]


class CallRecording(models.Model):
    """A recording of a call: downloaded from the PBX by a worker, then attached in Bitrix24."""

    class State(models.TextChoices):
        PENDING = "pending", "waiting for download"
        DOWNLOADED = "downloaded", "downloaded, attaching"
        ATTACHED = "attached", "attached"
        FAILED = "failed", "failed"

    call = models.ForeignKey(Call, on_delete=models.CASCADE, related_name="recordings")
    recording_id = models.CharField(max_length=255)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    filename = models.CharField(max_length=255, blank=True)
    size = models.PositiveIntegerField(null=True, blank=True)
    content = models.BinaryField(null=True, blank=True, editable=False)
    attach_command = models.ForeignKey(
        "bitrixapp.B24Command", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    error = models.TextField(blank=True)
    # When a sweeper may queue the next download try (NULL: not waiting for one).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    attached_at = models.DateTimeField(null=True, blank=True)

    class Meta:
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
