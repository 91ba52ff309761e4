"""Customer aggregates (orders, spend, last order and dispatch, refunds), recomputed once per
batch for the customers it touched, never incremented.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone

from monitoring.models import (
    Customer,
    Order,
)
from monitoring.pipeline.rows import bulk_set


def recompute_aggregates(customer_ids: Iterable[int], now: datetime | None = None) -> None:
    """ORDER_COUNT, LTV (Σ grand totals − Σ refunds), LAST_ORDER_DATE, LAST_DISPATCH_DATE and
    REFUNDED, from the orders held: the same answer however often an event is retried. Cancelled
    orders, and dispatch-only orders whose money never came, count for nothing."""
    ids = sorted(set(customer_ids))
    if not ids:
        return
    now = now or timezone.now()
    sums: dict[int, dict[str, Any]] = {
        pk: {"n": 0, "ltv": Decimal(0), "last": None, "dispatch": None, "refunded": False}
        for pk in ids
    }
    # Lock the customers (in pk order) before reading their orders: two batches touching one
    # customer (an order and a refund, an ERP and a WMS event) stage in parallel, and each would
    # otherwise write aggregates summed from a snapshot missing the other's uncommitted orders —
    # the last commit wins with a stale LTV. With the lock the second
    # batch waits, and its order query (a new snapshot under READ COMMITTED) sees the first's.
    customers = list(Customer.objects.select_for_update().filter(pk__in=ids).order_by("pk"))
    rows = Order.objects.filter(customer_id__in=ids).values_list(
        "customer_id",
        "has_body",
        "carries_money",
        "lifecycle",
        "grand_total",
        "refunded_total",
        "placed_at",
        "last_dispatched_at",
    )
    latest: dict[int, Any] = {}
    for customer_id, has_body, paid, lifecycle, grand, refunded, placed, dispatched in rows:
        agg = sums[customer_id]
        if dispatched and (agg["dispatch"] is None or dispatched > agg["dispatch"]):
            agg["dispatch"] = dispatched
        if not has_body or lifecycle == "cancelled":
            continue
        agg["n"] += 1
        if paid:  # a warehouse's copy of the channel's figures is no money received
            agg["ltv"] += (grand or Decimal(0)) - (refunded or Decimal(0))
        if placed and (agg["last"] is None or placed > agg["last"]):
            agg["last"] = placed
            latest[customer_id] = refunded
    for customer in customers:
        agg = sums[customer.pk]
        customer.order_count = agg["n"]
        customer.lifetime_value = agg["ltv"]
        customer.last_order_at = agg["last"]
        customer.last_dispatch_at = agg["dispatch"]
        customer.refunded = bool(latest.get(customer.pk))
        customer.aggregates_at = now
    bulk_set(
        customers,
        (
            "order_count",
            "lifetime_value",
            "last_order_at",
            "last_dispatch_at",
            "refunded",
            "aggregates_at",
        ),
    )
