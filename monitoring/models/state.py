"""The merged state per workspace that staging keeps: identities (customers and their keys),
orders, shipments, refunds, products and stock."""

from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.db.models import Q

from accounts.models import Workspace
from monitoring.models.events import SourceEvent
from monitoring.models.flows import Flow


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


class OrderKey(models.Model):
    """A source's own key for an order (`data.order_key`), pointing at the merged order it names:
    how a shipment, refund or return from the same source finds its order whatever the flow's
    join key. Keys are per source system (two systems' keys may collide); the first order a key
    is seen with keeps it."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    source_system = models.CharField(max_length=60)
    order_key = models.CharField(max_length=255)
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="keys")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "source_system", "order_key"], name="order_key_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.source_system}:{self.order_key}"


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
