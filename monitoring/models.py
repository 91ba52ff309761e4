"""The sync engine's rows: flows and their configuration, what arrived (requests, notifications,
events), and the merged state per workspace (identities, orders, refunds, products, stock).

Work is rows, not messages: every event carries its state, a `next_attempt_at` and a lease, so a
lost Celery message or a killed worker loses nothing (docs/architecture.md, "Engine").
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import models
from django.db.models import Q
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.utils import timezone

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
        """Staged events waiting for delivery (part 2 turns them into operations)."""
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
    # What staging touched: part 2 builds operations from these without staging again.
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
            # The staging claim (one flow's due rows, in its order) and the sweeper.
            models.Index(
                fields=["flow", "next_attempt_at", "id"],
                name="event_stage_due",
                condition=Q(state__in=["received", "held"]),
            ),
            # Orphans released when their order arrives.
            models.Index(
                fields=["workspace", "order_ref"],
                name="event_orphans",
                condition=Q(state="held"),
            ),
            # Part 2: the events ready to plan, per flow, oldest first (not those already in the
            # outbox: at full load tens of thousands wait there, and the planners' claims and
            # their "anything left to plan?" checks stepped over all of them).
            models.Index(
                fields=["flow", "staged_at"],
                name="event_ready",
                condition=Q(state="ready", in_outbox=False),
            ),
            # Timelines and the audit.
            models.Index(fields=["workspace", "entity_key", "source_version"], name="event_entity"),
            models.Index(fields=["workspace", "state"], name="event_state"),
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


class Customer(models.Model):
    """The identity map: one person per normalised email, with the source ids and the DotDigital
    contact id they are known by, and the aggregates recomputed from their orders."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    email = models.CharField(max_length=254, blank=True, help_text="Trimmed, NFC, lower case.")
    email_raw = models.CharField(max_length=300, blank=True)
    previous_emails = models.JSONField(default=list, blank=True)
    phone = models.CharField(max_length=40, blank=True)
    first_name = models.CharField(max_length=120, blank=True)
    last_name = models.CharField(max_length=120, blank=True)
    is_guest = models.BooleanField(default=True)
    dotdigital_contact_id = models.CharField(max_length=40, blank=True)
    source_version = models.DateTimeField(null=True, blank=True)
    # Aggregates: recomputed from the orders and refunds, never incremented.
    order_count = models.PositiveIntegerField(default=0)
    lifetime_value = models.DecimalField(default=Decimal("0"), max_digits=18, decimal_places=4)
    last_order_at = models.DateTimeField(null=True, blank=True)
    last_dispatch_at = models.DateTimeField(null=True, blank=True)
    refunded = models.BooleanField(default=False)
    aggregates_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "email"],
                name="customer_email_once",
                condition=~Q(email=""),
            ),
        ]

    def __str__(self) -> str:
        return self.email or f"customer {self.pk}"

    @property
    def aggregates(self) -> dict[str, Any]:
        return {
            "ORDER_COUNT": self.order_count,
            "LTV": self.lifetime_value,
            "LAST_ORDER_DATE": self.last_order_at,
            "LAST_DISPATCH_DATE": self.last_dispatch_at,
            "REFUNDED": self.refunded,
        }


class CustomerKey(models.Model):
    """A source's own customer id, pointing at the identity it belongs to."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    source_system = models.CharField(max_length=60)
    source_customer_id = models.CharField(max_length=200)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="keys")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "source_system", "source_customer_id"],
                name="customer_key_once",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.source_system}:{self.source_customer_id}"


class Order(models.Model):
    """One order of the workspace, merged from every flow that sees it (joined on its number or
    channel reference): the ERP brings the money, the WMS the dispatch."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    order_number = models.CharField(max_length=120, blank=True)
    channel_order_ref = models.CharField(max_length=120, blank=True)
    source_keys = models.JSONField(default=list, blank=True, help_text="order_key of each source")
    customer = models.ForeignKey(
        Customer, on_delete=models.SET_NULL, null=True, blank=True, related_name="orders"
    )
    email = models.CharField(max_length=254, blank=True)
    is_guest = models.BooleanField(default=False)
    has_body = models.BooleanField(
        default=False, help_text="An order.created/updated arrived (not only a dispatch)."
    )
    revision = models.DateTimeField(null=True, blank=True, help_text="Version of the body held")
    carries_money = models.BooleanField(
        default=True,
        help_text="False while the body held is a copy of the channel's figures (a warehouse's "
        "order: data.carries_money false): it counts for nothing in LTV, and a money-carrying "
        "body (the ERP's) replaces it; a copy never replaces a money-carrying body.",
    )
    status_version = models.DateTimeField(null=True, blank=True)
    placed_at = models.DateTimeField(null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    tax_inclusive = models.BooleanField(default=True)
    lines = models.JSONField(default=list, blank=True)
    subtotal = models.DecimalField(null=True, blank=True, max_digits=18, decimal_places=4)
    discount = models.DecimalField(null=True, blank=True, max_digits=18, decimal_places=4)
    shipping = models.DecimalField(null=True, blank=True, max_digits=18, decimal_places=4)
    tax = models.DecimalField(null=True, blank=True, max_digits=18, decimal_places=4)
    grand_total = models.DecimalField(null=True, blank=True, max_digits=18, decimal_places=4)
    lifecycle = models.CharField(max_length=20, blank=True)
    fulfilment = models.CharField(max_length=30, blank=True)
    financial = models.CharField(max_length=30, blank=True)
    first_dispatched_at = models.DateTimeField(null=True, blank=True)
    last_dispatched_at = models.DateTimeField(null=True, blank=True)
    refunded_total = models.DecimalField(default=Decimal("0"), max_digits=18, decimal_places=4)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "order_number"],
                name="order_number_once",
                condition=~Q(order_number=""),
            ),
        ]
        indexes = [
            models.Index(fields=["workspace", "channel_order_ref"], name="order_channel_ref"),
        ]

    def __str__(self) -> str:
        return self.order_number or self.channel_order_ref or f"order {self.pk}"


class Shipment(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    shipment_key = models.CharField(max_length=255)
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="shipments")
    dispatched_at = models.DateTimeField()
    tracking_numbers = models.JSONField(default=list, blank=True)
    carrier = models.JSONField(default=dict, blank=True)
    lines = models.JSONField(default=list, blank=True)
    first_scan_at = models.DateTimeField(null=True, blank=True)
    scan_status = models.CharField(max_length=30, blank=True)
    source_version = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "shipment_key"], name="shipment_once"),
        ]

    def __str__(self) -> str:
        return self.shipment_key


class Refund(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    refund_key = models.CharField(max_length=255)
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="refunds")
    amount = models.DecimalField(max_digits=18, decimal_places=4)
    currency = models.CharField(max_length=3)
    refunded_at = models.DateTimeField()
    source_version = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "refund_key"], name="refund_once"),
        ]

    def __str__(self) -> str:
        return self.refund_key


class Product(models.Model):
    """The workspace's catalogue, from the flow that masters products."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    flow = models.ForeignKey(Flow, on_delete=models.SET_NULL, null=True, related_name="+")
    sku = models.CharField(max_length=200, help_text="Trimmed and NFC; sku_raw is in the event.")
    sku_key = models.CharField(max_length=200, help_text="Lower-cased, for case-insensitive flows")
    product_key = models.CharField(max_length=255)
    name = models.CharField(max_length=300, blank=True)
    status = models.CharField(max_length=20, default="active")
    price = models.DecimalField(null=True, blank=True, max_digits=18, decimal_places=4)
    currency = models.CharField(max_length=3, blank=True)
    source_version = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "sku"], name="product_sku_once"),
        ]
        indexes = [models.Index(fields=["workspace", "sku_key"], name="product_sku_key")]

    def __str__(self) -> str:
        return self.sku


class StockLevel(models.Model):
    """Stock of one SKU at one location: the latest snapshot plus the deltas after it."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    sku = models.CharField(max_length=200)
    location_key = models.CharField(max_length=120)
    on_hand = models.IntegerField(null=True, blank=True)
    allocated = models.IntegerField(null=True, blank=True)
    saleable = models.IntegerField(null=True, blank=True)
    quarantined = models.IntegerField(null=True, blank=True)
    incoming = models.IntegerField(null=True, blank=True)
    derived = models.JSONField(default=list, blank=True)
    snapshot = models.JSONField(default=dict, blank=True, help_text="The latest snapshot's values")
    snapshot_as_of = models.DateTimeField(null=True, blank=True)
    as_of = models.DateTimeField(null=True, blank=True)
    previous_saleable = models.IntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "sku", "location_key"], name="stock_level_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.sku} at {self.location_key}"


class StockDelta(models.Model):
    """A delta applied to a stock level: one row per event, so it applies exactly once."""

    level = models.ForeignKey(StockLevel, on_delete=models.CASCADE, related_name="deltas")
    event = models.OneToOneField(SourceEvent, on_delete=models.CASCADE, related_name="+")
    as_of = models.DateTimeField()
    quantities = models.JSONField()

    def __str__(self) -> str:
        return f"delta of {self.level_id} as of {self.as_of}"


@receiver(post_delete, sender=Schedule, dispatch_uid="monitoring.schedule_leaves_beat")
def _schedule_leaves_beat(sender: type[Schedule], instance: Schedule, **kwargs: Any) -> None:
    """A schedule deleted any way (`remove_schedule`, the Django admin, its flow's or workspace's
    cascade) takes its beat entry with it, so beat never runs a job for a flow that is gone. A
    signal, against our habit, because a cascade calls no code of ours."""
    from django_celery_beat.models import PeriodicTask

    PeriodicTask.objects.filter(name=instance.beat_name).delete()


from monitoring.outbox import *  # noqa: E402,F401,F403
from monitoring.watch_models import *  # noqa: E402,F401,F403
