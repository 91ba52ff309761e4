"""The triage inbox: groups of occurrences by fingerprint, owned by a team, with their history.

Keys into the engine are opaque strings (a flow key and label, a subject key, the blocked event's
key, business keys for search), so this app depends on `accounts` alone.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.db import models

from accounts.models import Team, Workspace
from exceptions_inbox.kinds import Kind, get_kind


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
            # The one-state tabs (For review, Snoozed, Resolved, Ignored): newest activity first,
            # with the id as tie-breaker so pages are stable and read straight off the index.
            models.Index(fields=["workspace", "state", "-last_seen", "-id"], name="group_tab"),
            # The Open tab (open + acknowledged) and the agency's inbox across workspaces.
            models.Index(
                fields=["workspace", "-last_seen", "-id"],
                name="group_active",
                condition=models.Q(state__in=["open", "acknowledged"]),
            ),
            models.Index(
                fields=["-last_seen", "-id"],
                name="group_active_all",
                condition=models.Q(state__in=["open", "acknowledged"]),
            ),
            # Mine: a person's unclosed groups.
            models.Index(
                fields=["assignee", "-last_seen"],
                name="group_assignee",
                condition=models.Q(state__in=["open", "acknowledged", "snoozed"]),
            ),
            # My team and the team filter; the daily digest.
            models.Index(fields=["workspace", "team", "state", "-last_seen"], name="group_team"),
            # The kind and flow filters: on a one-state tab, and on the Open tab (read in order
            # and stopped after a page, instead of sorting every match).
            models.Index(fields=["workspace", "kind", "state", "-last_seen"], name="group_kind"),
            models.Index(
                fields=["workspace", "kind", "-last_seen", "-id"],
                name="group_kind_active",
                condition=models.Q(state__in=["open", "acknowledged"]),
            ),
            models.Index(
                fields=["workspace", "team", "-last_seen", "-id"],
                name="group_team_active",
                condition=models.Q(state__in=["open", "acknowledged"]),
            ),
            models.Index(fields=["workspace", "flow_key", "-last_seen"], name="group_flow"),
            # Search by the subject's business keys (occurrences carry their own indexes).
            models.Index(fields=["workspace", "email"], name="group_email"),
            models.Index(fields=["workspace", "order_number"], name="group_order"),
            models.Index(fields=["workspace", "sku"], name="group_sku"),
            # Snooze sweeper: snoozed groups whose time is up.
            models.Index(
                fields=["snoozed_until"],
                name="group_snooze_due",
                condition=models.Q(state="snoozed"),
            ),
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def is_closed(self) -> bool:
        return self.state in (self.State.RESOLVED, self.State.IGNORED)

    @property
    def kind_info(self) -> Kind:
        return get_kind(self.kind)

    @property
    def team_slug(self) -> str | None:
        return self.team.slug if self.team_id and self.team else None


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
            # The group page: its occurrences, latest first.
            models.Index(fields=["group", "-last_seen", "-id"], name="occ_group_recent"),
            # Retry, resolve and ignore: a group's blocking occurrences.
            models.Index(fields=["group", "state"], name="occ_group_state"),
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
        indexes = [
            # The group page's timeline.
            models.Index(fields=["group", "created"], name="activity_timeline"),
        ]

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


class AssignmentNotice(models.Model):
    """Outbox row: tell a person a group was assigned to them. `send_assignment_notices` mails each
    person once for all their unsent rows, so a bulk assignment of thirty groups is one mail."""

    group = models.ForeignKey(ExceptionGroup, on_delete=models.CASCADE, related_name="+")
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    assigned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True, help_text="Empty until mailed.")

    class Meta:
        indexes = [
            # The sender's sweep: unsent rows only.
            models.Index(
                fields=["assignee", "created"],
                name="notice_unsent",
                condition=models.Q(sent_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.group_id} to {self.assignee_id}"


class TeamDigest(models.Model):
    """One row per team per day: the daily digest is claimed by creating it, so it goes once."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    sent_at = models.DateTimeField(null=True, blank=True)
    recipients = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "day"], name="digest_once_a_day")]

    def __str__(self) -> str:
        return f"{self.team} {self.day}"


class KnownFlow(models.Model):
    """The flows groups have been opened for, kept as they appear, so the inbox's flow filter
    lists them without scanning every group."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    flow_key = models.CharField(max_length=80)
    flow_label = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "flow_key"], name="known_flow_once")
        ]

    def __str__(self) -> str:
        return self.flow_label or self.flow_key
