"""The triage inbox: groups of occurrences by fingerprint, owned by a team, with their history.

Keys into the engine are opaque strings (a flow key and label, a subject key, the blocked event's
key, business keys for search), so this app depends on `accounts` alone.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.db import models

from accounts.models import Team, Workspace


def fingerprint(kind: str, flow_key: str, subject_key: str) -> str:
    return hashlib.sha256(f"{kind}\x1f{flow_key}\x1f{subject_key}".encode()).hexdigest()


class ExceptionGroup(models.Model):
    class State(models.TextChoices):
        OPEN = "open", "Open"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        SNOOZED = "snoozed", "Snoozed"
        RESOLVED = "resolved", "Resolved"
        IGNORED = "ignored", "Ignored"

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="exception_groups"
    )
    kind = models.CharField(max_length=40)
    fingerprint = models.CharField(max_length=64)
    flow_key = models.CharField(max_length=80, blank=True, help_text="Opaque, e.g. 'flow:7'.")
    flow_label = models.CharField(max_length=200, blank=True)
    subject_key = models.CharField(
        max_length=255, blank=True, help_text="Opaque, e.g. 'sku:AB-12'."
    )
    subject_label = models.CharField(max_length=255, blank=True)
    title = models.CharField(max_length=300)
    # Business keys of the subject, for search (the occurrences carry their own too).
    order_number = models.CharField(max_length=100, blank=True)
    sku = models.CharField(max_length=100, blank=True)
    email = models.CharField(max_length=254, blank=True)
    team = models.ForeignKey(Team, on_delete=models.SET_NULL, null=True, related_name="+")
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    state = models.CharField(max_length=15, choices=State.choices, default=State.OPEN)
    snoozed_until = models.DateTimeField(null=True, blank=True)
    snooze_until_count = models.PositiveIntegerField(
        null=True, blank=True, help_text="Snoozed until the occurrence count reaches this."
    )
    is_regression = models.BooleanField(default=False)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    occurrence_count = models.PositiveIntegerField(default=0)
    open_count = models.PositiveIntegerField(default=0, help_text="Occurrences still blocking.")
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "fingerprint"], name="group_fingerprint_once"
            )
        ]
        indexes = [
            # The inbox tabs: a workspace's groups in a state, newest activity first.
            models.Index(fields=["workspace", "state", "-last_seen"], name="group_tab"),
            # "My team" and filters by kind.
            models.Index(fields=["workspace", "team", "state"], name="group_team"),
            models.Index(fields=["workspace", "kind", "state"], name="group_kind"),
            # Snooze sweeper: snoozed groups whose time is up.
            models.Index(fields=["state", "snoozed_until"], name="group_snooze_due"),
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def is_closed(self) -> bool:
        return self.state in (self.State.RESOLVED, self.State.IGNORED)


class Occurrence(models.Model):
    """One blocked event in a group (at most one row per event per group)."""

    class State(models.TextChoices):
        OPEN = "open", "Blocking"
        CLEARED = "cleared", "Got through"
        SKIPPED = "skipped", "Skipped"

    group = models.ForeignKey(ExceptionGroup, on_delete=models.CASCADE, related_name="occurrences")
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    event_key = models.CharField(max_length=100, help_text="Opaque key of the blocked event.")
    stage = models.CharField(max_length=40, help_text="Where the event stopped, e.g. 'stage'.")
    message = models.TextField()
    detail = models.JSONField(default=dict, blank=True)
    source_event_id = models.CharField(max_length=200, blank=True)
    order_number = models.CharField(max_length=100, blank=True)
    sku = models.CharField(max_length=100, blank=True)
    email = models.CharField(max_length=254, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN)
    times_seen = models.PositiveIntegerField(default=1)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["group", "event_key"], name="occurrence_once_per_event")
        ]
        indexes = [
            # clear_occurrences(): an event's open occurrences.
            models.Index(fields=["workspace", "event_key", "state"], name="occ_event"),
            # Search by business key.
            models.Index(fields=["workspace", "email"], name="occ_email"),
            models.Index(fields=["workspace", "order_number"], name="occ_order"),
            models.Index(fields=["workspace", "sku"], name="occ_sku"),
            models.Index(fields=["workspace", "source_event_id"], name="occ_source_event"),
        ]

    def __str__(self) -> str:
        return f"{self.event_key} in {self.group_id}"


class Activity(models.Model):
    """One row of a group's history: every state change, assignment, comment and retry."""

    class Kind(models.TextChoices):
        CREATED = "created", "Opened"
        REGRESSED = "regressed", "Reopened as a regression"
        ASSIGNED = "assigned", "Assigned"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        SNOOZED = "snoozed", "Snoozed"
        UNSNOOZED = "unsnoozed", "Snooze ended"
        RESOLVED = "resolved", "Resolved"
        AUTO_RESOLVED = "auto_resolved", "Resolved: every event got through"
        IGNORED = "ignored", "Ignored"
        REOPENED = "reopened", "Reopened"
        COMMENTED = "commented", "Comment"
        RETRIED = "retried", "Retried"
        FIXED = "fixed", "Fixed"
        ROUTED = "routed", "Routed to a team"

    group = models.ForeignKey(ExceptionGroup, on_delete=models.CASCADE, related_name="activities")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Empty when Syncdesk itself acted.",
    )
    note = models.TextField(blank=True)
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created", "pk"]
        verbose_name_plural = "activities"

    def __str__(self) -> str:
        return f"{self.get_kind_display()} on {self.group_id}"


class RoutingRule(models.Model):
    """Which team owns a kind of exception, for every flow or one flow (flow_key)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="routing_rules")
    kind = models.CharField(max_length=40)
    flow_key = models.CharField(max_length=80, blank=True, help_text="Empty: every flow.")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="routing_rules")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "kind", "flow_key"], name="routing_once_per_kind_and_flow"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} ({self.flow_key or 'every flow'}) → {self.team.name}"
