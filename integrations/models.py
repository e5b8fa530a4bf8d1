"""API tokens (only a SHA-256 of the secret is stored; the secret is shown once), webhooks and their deliveries."""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone


class ApiToken(models.Model):
    class Scope(models.TextChoices):
        READ = "read", "Read-only"
        WRITE = "write", "Read-write"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=80, help_text="What the token is for, e.g. the script or machine using it.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False, help_text="SHA-256 of the secret (hex).")
    prefix = models.CharField(max_length=12, editable=False, help_text="The secret's first characters, to recognise it.")
    scope = models.CharField(max_length=5, choices=Scope.choices, default=Scope.READ)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()

    @property
    def is_active(self) -> bool:
        return not self.is_revoked and not self.is_expired

    @property
    def read_only(self) -> bool:
        return self.scope == self.Scope.READ

    @property
    def throttle_ident(self) -> str:
        """What the per-token rate limit counts by (a digest, never the secret)."""
        return self.key_hash[:32]


class Event(models.TextChoices):
    READING_READY = "reading.ready", "A scan's automated reading is ready"
    SCAN_VERIFIED = "scan.verified", "A scan is verified (final label)"
    VOLUME_VERIFIED = "volume.verified", "A volume (one eye's acquisition) is verified (final label)"
    REPORT_SIGNED = "report.signed", "An examination report is signed"


def _all_events() -> list[str]:
    return list(Event.values)


class Webhook(models.Model):
    """An endpoint that an admin registers to be told of events (signed POSTs)."""

    name = models.CharField(max_length=80)
    url = models.URLField(max_length=500, help_text="http(s) URL that receives the POSTs.")
    secret = models.CharField(
        max_length=128, help_text="Shared secret: each body is signed with HMAC-SHA256 (header X-OCT-Signature)."
    )
    events = models.JSONField(default=_all_events, help_text=f"Any of: {', '.join(Event.values)}.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        unknown = [e for e in (self.events or []) if e not in Event.values]
        if not isinstance(self.events, list) or unknown:
            raise ValidationError({"events": f"A list of: {', '.join(Event.values)}."})


class Delivery(models.Model):
    """One event sent to one webhook: its body, every attempt and the outcome."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed (gave up)"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=32, choices=Event.choices)
    event_key = models.CharField(max_length=120, help_text="What happened, once: e.g. reading.ready:prediction:12.")
    body = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    history = models.JSONField(default=list, help_text="Each attempt: time, HTTP status or error.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "deliveries"
        constraints = [models.UniqueConstraint(fields=["webhook", "event_key"], name="delivery_once_per_event")]

    def __str__(self) -> str:
        return f"{self.event} -> {self.webhook} ({self.status})"
