"""What arrived: webhook requests as they came, id-only notifications waiting to be fetched, and
the canonical events.

Work is rows, not messages: every event carries its state, a `next_attempt_at` and a lease, so a
lost Celery message or a killed worker loses nothing.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Workspace
from connectors.models import Connection
from monitoring.models.flows import Flow


class WebhookRequest(models.Model):
    """One webhook request as it came: the body whole (or its first part when too large)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    received_at = models.DateTimeField(default=timezone.now)
    content_type = models.CharField(max_length=200, blank=True)
    headers = models.JSONField(default=dict, blank=True)
    body = models.BinaryField()
    size = models.PositiveBigIntegerField(default=0)
    truncated = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField(default=202)
    accepted = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    invalid = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"webhook request {self.pk} ({self.status_code})"

    @property
    def key(self) -> str:
        return f"webhook:{self.pk}"


class Lease(models.Model):
    """Fields of a row that workers claim: due time, lease holder and expiry."""

    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)

    class Meta:
        abstract = True


class SourceNotification(Lease):
    """An id-only webhook (Brightpearl): stored, answered 202, turned into events by a fetch task."""

    class State(models.TextChoices):
        PENDING = "pending", "Waiting to fetch"
        DONE = "done", "Fetched"
        FAILED = "failed", "Failed"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    request = models.ForeignKey(
        WebhookRequest, on_delete=models.SET_NULL, null=True, related_name="notifications"
    )
    payload = models.JSONField(help_text="What the source named: resource type, ids, event.")
    received_at = models.DateTimeField(default=timezone.now)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    fetched_at = models.DateTimeField(null=True, blank=True)
    events_count = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        indexes = [
            # The fetch sweeper: pending notifications that are due.
            models.Index(
                fields=["next_attempt_at"],
                name="notification_due",
                condition=Q(state="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"notification {self.pk} ({self.state})"


class SourceEventQuerySet(models.QuerySet["SourceEvent"]):
    def ready_to_deliver(self) -> SourceEventQuerySet:
        """Staged events waiting for delivery (planning turns them into operations)."""
        return self.filter(state=SourceEvent.State.READY)

    def due_for_staging(self, now: Any = None) -> SourceEventQuerySet:
        now = now or timezone.now()
        return self.filter(
            state__in=(SourceEvent.State.RECEIVED, SourceEvent.State.HELD),
            next_attempt_at__lte=now,
        ).filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))


class SourceEvent(Lease):
    """One canonical event: its envelope, where it came from, and where it is now."""

    class State(models.TextChoices):
        RECEIVED = "received", "Received (to stage)"
        HELD = "held", "Held"
        READY = "ready", "Staged: ready to deliver"
        DELIVERED = "delivered", "Delivered"
        SKIPPED = "skipped", "Skipped"
        FAILED = "failed", "Failed (in the inbox)"

    class Via(models.TextChoices):
        WEBHOOK = "webhook", "Webhook"
        NOTIFICATION = "notification", "Notification fetch"
        POLL = "poll", "Poll"
        BACKFILL = "backfill", "Backfill"

    class Hold(models.TextChoices):
        NONE = "", "—"
        ORPHAN = "orphan", "Waiting for its order"
        CARRIER_SCAN = "carrier_scan", "Waiting for the carrier's first scan"

    class Lane(models.TextChoices):
        REALTIME = "realtime", "Realtime"
        BULK = "bulk", "Bulk"

    # No index of their own on `workspace` and `flow`: indexes that lead with them cover their
    # lookups (`event_state`, `watch_event_flow_received`), and every index on this table is
    # written again at almost each of an event's five updates (migration 0011).
    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    flow = models.ForeignKey(
        Flow,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="events",
        db_index=False,
    )
    request = models.ForeignKey(
        WebhookRequest, on_delete=models.SET_NULL, null=True, blank=True, related_name="events"
    )
    notification = models.ForeignKey(
        SourceNotification, on_delete=models.SET_NULL, null=True, blank=True, related_name="events"
    )
    via = models.CharField(max_length=12, choices=Via.choices, default=Via.WEBHOOK)
    intake = models.UUIDField(null=True, editable=False, help_text="The batch that stored it.")
    is_backfill = models.BooleanField(default=False)
    # The deduplication key, with the workspace.
    source_system = models.CharField(max_length=60)
    source_account = models.CharField(max_length=120)
    source_event_id = models.CharField(max_length=255)
    event_type = models.CharField(max_length=40)
    entity_type = models.CharField(max_length=20)
    entity_key = models.CharField(max_length=255)
    source_version = models.DateTimeField(
        help_text="source_updated_at, else occurred_at: events of one entity stage in this order."
    )
    envelope = models.JSONField(help_text="The canonical event as received (raw body: request).")
    # A timestamp for each stage.
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(default=timezone.now)
    staged_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(
        null=True, blank=True, help_text="When the last write it waited on went to DotDigital."
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.RECEIVED)
    # READY and its operations are in the outbox (planned): what keeps the planners' index
    # (`event_ready`) down to the events not planned yet (migration 0012).
    in_outbox = models.BooleanField(default=False)
    reason = models.TextField(blank=True)
    hold = models.CharField(max_length=15, choices=Hold.choices, default=Hold.NONE, blank=True)
    hold_deadline = models.DateTimeField(null=True, blank=True)
    failed_kind = models.CharField(max_length=40, blank=True)
    lane = models.CharField(max_length=10, choices=Lane.choices, default=Lane.REALTIME)
    order_ref = models.CharField(
        max_length=255, blank=True, help_text="The join value naming the workspace's order."
    )
    # What staging touched: planning builds operations from these without staging again.
    customer = models.ForeignKey(
        "Customer", on_delete=models.SET_NULL, null=True, blank=True, related_name="events"
    )
    order = models.ForeignKey(
        "Order", on_delete=models.SET_NULL, null=True, blank=True, related_name="events"
    )

    objects = SourceEventQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "source_system", "source_account", "source_event_id"],
                name="source_event_once",
            ),
        ]
        indexes = [
            # The staging claim (one flow and lane's due rows, in their order) and the sweeper.
            models.Index(
                fields=["flow", "lane", "next_attempt_at", "id"],
                name="event_stage_due",
                condition=Q(state__in=["received", "held"]),
            ),
            # Orphans released when their order arrives.
            models.Index(
                fields=["workspace", "order_ref"],
                name="event_orphans",
                condition=Q(state="held"),
            ),
            # Planning: the events ready to plan, per flow, oldest first. Events in the outbox
            # are left out: tens of thousands can wait there at full load, and every claim and
            # "anything left to plan?" check would step over them.
            models.Index(
                fields=["flow", "staged_at"],
                name="event_ready",
                condition=Q(state="ready", in_outbox=False),
            ),
            # Timelines and the audit.
            models.Index(fields=["workspace", "entity_key", "source_version"], name="event_entity"),
            models.Index(fields=["workspace", "state"], name="event_state"),
            # The API's event list: a workspace's events newest first, paged by (received_at,
            # id) (a keyset cursor); a time window is one range of it (0017). None of its
            # columns ever changes, so lease-only updates stay HOT.
            models.Index(
                fields=["workspace", "-received_at", "-id"], name="event_workspace_recent"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.source_event_id}"

    @property
    def key(self) -> str:
        """The opaque event key the inbox stores."""
        return f"event:{self.pk}"

    @property
    def data(self) -> dict[str, Any]:
        data = self.envelope.get("data")
        return data if isinstance(data, dict) else {}
