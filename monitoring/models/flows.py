"""What a workspace configures: flows (one source feeding one DotDigital account, with its rules),
their schedules, field mappings and SKU aliases, and the workers' heartbeats."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django_celery_beat.models import PeriodicTask

from accounts.models import Workspace
from connectors.models import Connection


class WorkerHeartbeat(models.Model):
    """The last time a worker consuming a queue ran a task: /healthz shows if a lane has no worker."""

    queue = models.CharField(max_length=40, unique=True)
    hostname = models.CharField(max_length=200)
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.queue} @ {self.hostname}"


DEFAULT_DISPATCHED_LIST = "Syncdesk - Dispatched today"
DEFAULT_RECENT_BUYERS_LIST = "Syncdesk - Recent buyers (30 days)"


class Flow(models.Model):
    """One source connection feeding one DotDigital connection, with its rules."""

    class GuestPolicy(models.TextChoices):
        MERGE = "merge", "Merge guests into contacts by email"
        EXCLUDE = "exclude", "Exclude guest orders"

    class JoinKey(models.TextChoices):
        ORDER_NUMBER = "order_number", "Order number"
        CHANNEL_ORDER_REF = "channel_order_ref", "Channel order reference"

    class Backfill(models.TextChoices):
        NOT_STARTED = "not_started", "Not started"
        RUNNING = "running", "Running"
        COMPLETE = "complete", "Complete"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="flows")
    name = models.CharField(max_length=120)
    source = models.ForeignKey(Connection, on_delete=models.PROTECT, related_name="source_flows")
    destination = models.ForeignKey(
        Connection,
        on_delete=models.PROTECT,
        related_name="destination_flows",
        null=True,
        blank=True,
        help_text="The DotDigital connection this flow delivers to.",
    )
    event_types = models.JSONField(
        default=list, blank=True, help_text="Canonical event types this flow takes; empty = all."
    )
    is_active = models.BooleanField(default=True)
    guest_policy = models.CharField(
        max_length=10, choices=GuestPolicy.choices, default=GuestPolicy.MERGE
    )
    join_key = models.CharField(
        max_length=20,
        choices=JoinKey.choices,
        default=JoinKey.ORDER_NUMBER,
        help_text="How this flow's events name the workspace's order they belong to.",
    )
    hold_orphans = models.BooleanField(
        default=True, help_text="Hold shipments, refunds and returns until their order arrives."
    )
    orphan_hold_seconds = models.PositiveIntegerField(default=6 * 3600)
    hold_dispatch_for_scan = models.BooleanField(
        default=False, help_text="Hold dispatch triggers until the carrier's first scan."
    )
    scan_hold_seconds = models.PositiveIntegerField(default=4 * 3600)
    lag_threshold_seconds = models.PositiveIntegerField(default=15 * 60)
    masters_products = models.BooleanField(
        default=False, help_text="This flow's product events are the workspace's catalogue."
    )
    sku_case_sensitive = models.BooleanField(default=False)
    sku_cleaning = models.TextField(
        blank=True,
        help_text="Cleaning rules applied to this flow's SKUs before aliases and the catalogue "
        "check, one per line (monitoring.pipeline.transforms.parse_sku_rules).",
    )
    # Lists programs enrol from (docs/architecture.md, "Configuration": lists and programs).
    dispatched_list = models.CharField(
        max_length=120,
        blank=True,
        default=DEFAULT_DISPATCHED_LIST,
        help_text="DotDigital list of contacts whose order was just dispatched (left when the "
        "order is refunded); empty: none.",
    )
    dispatched_keep_hours = models.PositiveIntegerField(
        default=24, help_text="How long a contact stays on it after the latest dispatch."
    )
    recent_buyers_list = models.CharField(
        max_length=120,
        blank=True,
        default=DEFAULT_RECENT_BUYERS_LIST,
        help_text="DotDigital list of recent buyers (to exclude them from promotions); empty: none.",
    )
    recent_buyer_days = models.PositiveIntegerField(
        default=30, help_text="The recent-buyer exclusion period: days after the last order."
    )
    back_in_stock_list = models.CharField(
        max_length=120,
        blank=True,
        help_text="The DotDigital list a back-in-stock program enrols from. Recorded only: no "
        "source sends who asked to be told, so Syncdesk writes no members to it.",
    )
    payload_retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Days this flow's payloads are kept; empty: PAYLOAD_RETENTION_DAYS.",
    )
    backfill_state = models.CharField(
        max_length=12, choices=Backfill.choices, default=Backfill.NOT_STARTED
    )
    backfill_completed_at = models.DateTimeField(null=True, blank=True)
    backfill_completed_by = models.CharField(max_length=150, blank=True)
    backfill_counts = models.JSONField(default=dict, blank=True)
    catalogue_loaded_at = models.DateTimeField(
        null=True, blank=True, help_text="Set after the first full product snapshot."
    )
    catalogue_count = models.PositiveIntegerField(default=0)
    poll_cursor = models.TextField(blank=True)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def key(self) -> str:
        """The opaque flow key the inbox stores."""
        return f"flow:{self.pk}"

    @property
    def sends_aggregates(self) -> bool:
        """No aggregate field goes to DotDigital before the backfill is complete."""
        return self.backfill_state == self.Backfill.COMPLETE

    def takes(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


class Schedule(models.Model):
    """A periodic job of a workspace (and flow): mirrored into django-celery-beat by
    `monitoring.pipeline.flows.mirror_schedule`, so later issues register their jobs here."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="schedules")
    flow = models.ForeignKey(
        Flow, on_delete=models.CASCADE, related_name="schedules", null=True, blank=True
    )
    name = models.CharField(max_length=120)
    task = models.CharField(max_length=200, help_text="Celery task name, e.g. monitoring.poll_flow")
    args = models.JSONField(default=list, blank=True)
    every_seconds = models.PositiveIntegerField(null=True, blank=True)
    crontab = models.CharField(
        max_length=100, blank=True, help_text="'minute hour day-of-month month day-of-week'"
    )
    queue = models.CharField(max_length=20, default="bulk")
    enabled = models.BooleanField(default=True)
    periodic_task_id = models.IntegerField(null=True, blank=True, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="schedule_name_once"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def beat_name(self) -> str:
        return f"syncdesk:{self.workspace_id}:{self.name}"


class FieldMapping(models.Model):
    """One DotDigital data field (or insight field) written from the merged state."""

    class Type(models.TextChoices):
        STRING = "string", "Text"
        NUMERIC = "numeric", "Number"
        DATE = "date", "Date"
        BOOLEAN = "boolean", "Yes/No"

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="field_mappings")
    target = models.CharField(max_length=60, help_text="DotDigital data field, e.g. LTV")
    source_path = models.CharField(max_length=120, help_text="Path in the merged state")
    type = models.CharField(max_length=10, choices=Type.choices, default=Type.STRING)
    is_aggregate = models.BooleanField(
        default=False, help_text="Computed over the customer's orders: held until backfill."
    )
    transform = models.CharField(max_length=60, blank=True)
    enabled = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["flow", "target"], name="mapping_target_once"),
        ]

    def __str__(self) -> str:
        return f"{self.source_path} → {self.target}"


class SkuAlias(models.Model):
    """Another spelling of a catalogue SKU (matched after cleaning)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="sku_aliases")
    flow = models.ForeignKey(
        Flow,
        on_delete=models.CASCADE,
        related_name="sku_aliases",
        null=True,
        blank=True,
        help_text="Empty: every flow of the workspace.",
    )
    alias_key = models.CharField(max_length=200, help_text="The cleaned SKU as the source sends it")
    sku = models.CharField(max_length=200, help_text="The catalogue SKU it means")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "flow", "alias_key"], name="alias_once"),
        ]

    def __str__(self) -> str:
        return f"{self.alias_key} → {self.sku}"


@receiver(post_delete, sender=Schedule, dispatch_uid="monitoring.schedule_leaves_beat")
def _schedule_leaves_beat(sender: type[Schedule], instance: Schedule, **kwargs: Any) -> None:
    """A schedule deleted any way (`remove_schedule`, the Django admin, its flow's or workspace's
    cascade) takes its beat entry with it, so beat never runs a job for a flow that is gone. A
    signal, against our habit, because a cascade calls no code of ours."""
    PeriodicTask.objects.filter(name=instance.beat_name).delete()
