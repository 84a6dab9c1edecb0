"""The platform layer's tables: portals (tenants), the Bitrix24 command outbox, inbound events."""

import time
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.translation import gettext_lazy as _

from bitrixapp.crypto import EncryptedTextField
from bitrixapp.inbox import InboundRequest, parse_body


class Portal(models.Model):
    """One Bitrix24 portal that installed the app. Keyed by member_id: domains can change."""

    class Status(models.TextChoices):
        ACTIVE = "active", _("active")
        NEEDS_REAUTH = "needs_reauth", _("needs re-authorization")
        UNINSTALLED = "uninstalled", _("uninstalled")

    class Plan(models.TextChoices):
        STANDARD = "standard", _("standard (2 requests/s, burst 50)")
        ENTERPRISE = "enterprise", _("enterprise (5 requests/s, burst 250)")

    member_id = models.CharField(_("portal ID (member_id)"), max_length=64, unique=True)
    domain = models.CharField(_("address"), max_length=255)
    client_endpoint = models.URLField(_("REST address"), max_length=255)
    server_endpoint = models.URLField(_("authorization server"), max_length=255, blank=True)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.ACTIVE
    )
    app_status = models.CharField(
        _("licence status"),
        max_length=1,
        blank=True,
        help_text=_("As Bitrix24 reports it: L local, F free, D demo, T trial, P paid"),
    )
    detected_plan = models.CharField(
        _("Bitrix24 plan"), max_length=16, choices=Plan.choices, blank=True
    )
    plan_override = models.CharField(
        _("plan set by the operator"),
        max_length=16,
        choices=Plan.choices,
        blank=True,
        help_text=_("Leave empty to use the plan read from Bitrix24"),
    )
    application_token = EncryptedTextField(_("application token"), blank=True)
    access_token = EncryptedTextField(_("access token"), blank=True)
    refresh_token = EncryptedTextField(_("refresh token"), blank=True)
    token_expires_at = models.DateTimeField(_("access token expires"), null=True, blank=True)
    scope = models.CharField(_("permissions granted"), max_length=500, blank=True)
    installer_user_id = models.IntegerField(_("installed by (user ID)"), null=True, blank=True)
    # Users seen to be portal admins (besides the installer): they hear about problems.
    admin_user_ids = models.JSONField(_("admins (user IDs)"), default=list, blank=True)
    # The portal's language as Bitrix24 reports it (LANGUAGE_ID, LANG): messages to its users.
    language = models.CharField(_("language"), max_length=8, blank=True)
    events_bound_version = models.CharField(_("event handlers version"), max_length=32, blank=True)
    # method -> unix time until which Bitrix24 refuses it (OPERATION_TIME_LIMIT)
    paused_methods = models.JSONField(_("paused methods"), default=dict, blank=True)
    last_error = models.TextField(_("last error"), blank=True)
    last_error_at = models.DateTimeField(_("last error at"), null=True, blank=True)
    installed_at = models.DateTimeField(_("installed"), default=timezone.now)
    uninstalled_at = models.DateTimeField(_("uninstalled"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("Bitrix24 portal")
        verbose_name_plural = _("Bitrix24 portals")

    def __str__(self) -> str:
        return self.domain or self.member_id

    @property
    def plan(self) -> str:
        return self.plan_override or self.detected_plan or self.Plan.STANDARD

    @property
    def rest_base(self) -> str:
        return (
            self.client_endpoint
            if self.client_endpoint.endswith("/")
            else self.client_endpoint + "/"
        )

    @property
    def can_send(self) -> bool:
        return self.status == self.Status.ACTIVE

    def method_paused_until(self, method: str) -> float:
        return float(self.paused_methods.get(method.lower(), 0))

    def active_pauses(self) -> dict[str, float]:
        now = time.time()
        return {m: until for m, until in self.paused_methods.items() if until > now}

    def record_error(self, message: str) -> None:
        self.last_error = message[:2000]
        self.last_error_at = timezone.now()

    @staticmethod
    def endpoint_host(url: str) -> str:
        return urlsplit(url).netloc

    # Its tokens, each a Fernet decrypt when a row is loaded: the paths every call event or
    # inbound request takes load only those they use (`Portal.secrets_except`).
    SECRETS = ("application_token", "access_token", "refresh_token")

    @classmethod
    def secrets_except(cls, *used: str) -> tuple[str, ...]:
        """The token fields to leave deferred on a path that uses only `used`."""
        return tuple(name for name in cls.SECRETS if name not in used)


class B24Command(models.Model):
    """One Bitrix24 REST call the app wants made: the outbox row the dispatcher sends.

    Commands with the same `owner_key` (e.g. "call:42") go out strictly in id order; a command
    may take values from an earlier one's result through `depends_on` + `$ref` params.
    """

    class State(models.TextChoices):
        PENDING = "pending", _("waiting to be sent")
        SENDING = "sending", _("sending")
        DONE = "done", _("done")
        FAILED = "failed", _("failed")
        CANCELLED = "cancelled", _("cancelled")

    OPEN_STATES = (State.PENDING, State.SENDING)

    portal = models.ForeignKey(
        Portal, on_delete=models.CASCADE, related_name="commands", verbose_name=_("Bitrix24 portal")
    )
    method = models.CharField(_("REST method"), max_length=100)
    params = models.JSONField(_("parameters"), default=dict, blank=True)
    owner_key = models.CharField(
        _("sent for"),
        max_length=100,
        blank=True,
        db_index=True,
        help_text=_("The record it belongs to, e.g. call:42; sent in order per record"),
    )
    depends_on = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="dependents",
        verbose_name=_("waits for"),
    )
    handler = models.CharField(
        _("result handler"), max_length=100, blank=True, help_text=_("What reads the answer")
    )
    # What the result handler needs to find its objects again, e.g. {"call": 42}.
    context = models.JSONField(_("context"), default=dict, blank=True)
    state = models.CharField(
        _("state"), max_length=10, choices=State.choices, default=State.PENDING
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt"), default=timezone.now)
    lease_until = models.DateTimeField(_("being sent until"), null=True, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    first_sent_at = models.DateTimeField(_("first sent"), null=True, blank=True)
    sent_at = models.DateTimeField(_("sent"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    batch_id = models.CharField(
        _("batch"), max_length=32, blank=True, help_text=_("Set when sent inside a batch")
    )
    http_status = models.PositiveSmallIntegerField(_("HTTP status"), null=True, blank=True)
    duration_ms = models.PositiveIntegerField(_("took, ms"), null=True, blank=True)
    result = models.JSONField(_("answer"), null=True, blank=True)
    error_code = models.CharField(_("error code"), max_length=100, blank=True)
    error_description = models.TextField(_("error description"), blank=True)

    class Meta:
        verbose_name = _("Bitrix24 request")
        verbose_name_plural = _("Bitrix24 requests")
        indexes = [
            models.Index(fields=["portal", "state", "next_attempt_at", "id"], name="cmd_ready"),
            models.Index(fields=["state", "lease_until"], name="cmd_lease"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.method} ({self.state})"

    @property
    def is_open(self) -> bool:
        return self.state in self.OPEN_STATES


class BitrixEvent(InboundRequest):
    """An event POST from Bitrix24 (`source` is the event name), stored before anything acts
    on it. The body is kept with the OAuth tokens and the application token masked."""

    # Form fields (bracket form) that are masked in the stored body.
    SECRET_FIELDS = ("auth[access_token]", "auth[refresh_token]", "auth[application_token]")

    portal = models.ForeignKey(
        Portal, on_delete=models.CASCADE, related_name="events", verbose_name=_("Bitrix24 portal")
    )

    class Meta:
        verbose_name = _("Bitrix24 event")
        verbose_name_plural = _("Bitrix24 events")
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="event_state")]

    @cached_property
    def payload(self) -> dict[str, Any]:
        """The stored body as a nested dict (bracketed form fields or JSON)."""
        return parse_body(self.body, self.content_type)


class PortalStaff(models.Model):
    """A Django login that belongs to one portal: a Bitrix24 admin of that portal who opened
    the Django admin from the app page. It sees and edits only that portal's objects
    (bitrixapp.admin_scope). Superusers (the operator) have no such link and see everything."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="portal_staff"
    )
    portal = models.ForeignKey(Portal, on_delete=models.CASCADE, related_name="staff")
    bitrix_user_id = models.PositiveIntegerField(_("Bitrix24 user ID"))
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("portal admin login")
        verbose_name_plural = _("portal admin logins")
        constraints = [
            models.UniqueConstraint(fields=["portal", "bitrix_user_id"], name="portal_staff_once")
        ]

    def __str__(self) -> str:
        return f"{self.portal} · user {self.bitrix_user_id}"


class AdminLoginLink(models.Model):
    """A one-time, short-lived link from the app page into the Django admin, for one portal
    admin. Only a hash of its secret is stored; it is spent on first use."""

    portal = models.ForeignKey(Portal, on_delete=models.CASCADE, related_name="login_links")
    bitrix_user_id = models.PositiveIntegerField()
    display_name = models.CharField(max_length=200, blank=True)
    secret_hash = models.CharField(max_length=64, unique=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"admin link #{self.pk} for {self.portal_id}/{self.bitrix_user_id}"


class BitrixUser(models.Model):
    """A Bitrix24 user of a portal as `user.get` last described them: what admins pick by
    name when mapping extensions and choosing the default user."""

    portal = models.ForeignKey(
        Portal,
        on_delete=models.CASCADE,
        related_name="bitrix_users",
        verbose_name=_("Bitrix24 portal"),
    )
    user_id = models.PositiveIntegerField(_("Bitrix24 user ID"))
    name = models.CharField(_("name"), max_length=200, blank=True)
    email = models.CharField(_("email"), max_length=200, blank=True)
    extension = models.CharField(
        _("internal number"), max_length=32, blank=True, help_text=_("UF_PHONE_INNER in Bitrix24")
    )
    is_active = models.BooleanField(_("active"), default=True)
    synced_at = models.DateTimeField(_("read from Bitrix24"), default=timezone.now)

    class Meta:
        verbose_name = _("Bitrix24 user")
        verbose_name_plural = _("Bitrix24 users")
        ordering = ("name", "user_id")
        constraints = [
            models.UniqueConstraint(fields=["portal", "user_id"], name="bitrix_user_once")
        ]

    def __str__(self) -> str:
        return f"{self.name or _('user')} (#{self.user_id})"


class Problem(models.Model):
    """Something on a portal that fails and that a person has to fix (bitrixapp.problems).

    One open row per (portal, kind, subject): every occurrence counts on it; admins hear about
    it at most once a day; recovery closes it. A closed problem that comes back is a new row."""

    portal = models.ForeignKey(Portal, on_delete=models.CASCADE, related_name="problems")
    kind = models.CharField(max_length=40)
    subject = models.CharField(
        max_length=200, help_text="what the problem is about, e.g. 'connection:3'"
    )
    params = models.JSONField(default=dict, blank=True, help_text="what the messages mention")
    fix_url = models.CharField(max_length=500, blank=True)
    count = models.PositiveIntegerField(default=1)
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    notified_at = models.DateTimeField(null=True, blank=True)
    is_open = models.BooleanField(default=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["portal", "kind", "subject"],
                condition=models.Q(is_open=True),
                name="problem_open_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.subject} ({'open' if self.is_open else 'closed'})"
