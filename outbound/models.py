"""Outbound webhooks: a workspace's subscriptions, one delivery row per event and receiver, and one
attempt row per POST (Saleor's EventPayload → EventDelivery → EventDeliveryAttempt, flattened:
the body lives on the delivery, since each delivery is for one receiver)."""

from __future__ import annotations

import secrets
import uuid
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.fields import EncryptedJSONField
from accounts.models import Workspace


def new_signing_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


class Event(models.TextChoices):
    """What a receiver can subscribe to; the value is the `type` of the POSTed body."""

    GROUP_OPENED = "group.opened", "Exception group opened"
    GROUP_REGRESSED = "group.regressed", "Exception group regressed"
    GROUP_ASSIGNED = "group.assigned", "Exception group assigned"
    GROUP_RESOLVED = "group.resolved", "Exception group resolved"
    ALERT_TRIGGERED = "alert.triggered", "Alert triggered"
    ALERT_ACKNOWLEDGED = "alert.acknowledged", "Alert acknowledged"
    ALERT_RECOVERED = "alert.recovered", "Alert recovered"


TEST_EVENT = "webhook.test"


class Subscription(models.Model):
    """A URL that receives the workspace's chosen events, each POST signed with its secret."""

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="webhook_subscriptions"
    )
    name = models.CharField(max_length=100)
    url = models.URLField(
        max_length=500, help_text="Receives a signed POST per event (http or https)."
    )
    events = models.JSONField(default=list, help_text="The event types it receives.")
    # {"signing_secret": "whsec_…"}: encrypted at rest like connection credentials, never logged.
    secret = EncryptedJSONField(default=dict)
    state = models.CharField(max_length=10, choices=State.choices, default=State.ACTIVE)
    paused_reason = models.CharField(max_length=300, blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(
        default=0, help_text="Failed attempts in a row, across deliveries; a success resets it."
    )
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["name", "pk"]

    def __str__(self) -> str:
        return self.name

    @property
    def signing_secret(self) -> str:
        secret: dict[str, Any] = self.secret or {}
        return str(secret.get("signing_secret", ""))

    @property
    def host(self) -> str:
        """The receiver's host: what members see (a URL may carry its own token)."""
        return urlsplit(self.url).hostname or ""

    @property
    def is_active(self) -> bool:
        return self.state == self.State.ACTIVE

    def event_labels(self) -> list[str]:
        labels = dict(Event.choices)
        return [str(labels.get(e, e)) for e in self.events]


class Delivery(models.Model):
    """One event for one receiver: the exact body signed and sent, and where its sending stands."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="deliveries"
    )
    event_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    event = models.CharField(max_length=40)
    body = models.TextField(help_text="The JSON body, byte for byte what is signed and sent.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    created = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-pk"]
        verbose_name_plural = "deliveries"
        indexes = [
            # The sender's claim: pending rows by when they are due.
            models.Index(
                fields=["next_attempt_at"],
                name="webhook_delivery_due",
                condition=Q(state="pending"),
            ),
            # The subscription page's delivery log, newest first.
            models.Index(fields=["subscription", "-created"], name="webhook_delivery_log"),
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.subscription_id} ({self.state})"

    @property
    def is_test(self) -> bool:
        return self.event == TEST_EVENT


class Attempt(models.Model):
    """One POST of a delivery and what the receiver answered (or why there was no answer)."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_rows")
    at = models.DateTimeField(default=timezone.now)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=300, blank=True)
    response_excerpt = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["at", "pk"]

    def __str__(self) -> str:
        return f"attempt of {self.delivery_id} at {self.at:%H:%M:%S}"

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300
