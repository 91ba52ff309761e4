"""A warehouse's order (`data.carries_money: false`, as Mintsoft's) is a copy of the channel's
figures: it joins the ERP's order without replacing its number, lines or money, the ERP's sale
replaces a copy that came first (whatever their versions), and a copy counts for nothing in LTV."""

from __future__ import annotations

from decimal import Decimal

from monitoring.models import Customer, Order, SourceEvent
from tests.monitoring.engine import stage


def copy_of(wms, number: str, total: str, version: str):
    event = wms.order(number, total=total, version=version)
    event["data"]["carries_money"] = False
    event["data"]["lines"][0]["sku"] = "WMS-SKU-1"
    return event


def test_a_warehouse_copy_joins_the_erps_order_and_leaves_its_money_alone(erp, wms):
    erp.post(erp.order("SO-9", total="42.50", version="2026-05-01T10:00:00Z"))
    stage()
    wms.post(copy_of(wms, "SO-9", "99.00", "2026-05-01T12:00:00Z"))  # newer, different figures
    stage()
    order = Order.objects.get()
    assert order.grand_total == Decimal("42.50") and order.carries_money
    assert order.lines[0]["sku"] == "TEE-RED-M"
    assert order.source_keys == ["brightpearl:order:SO-9", "mintsoft:order:SO-9"]
    copy = SourceEvent.objects.get(source_system="mintsoft")
    assert copy.state == SourceEvent.State.READY and copy.order == order
    assert Customer.objects.get().lifetime_value == Decimal("42.50")


def test_the_erps_sale_replaces_a_copy_that_came_first_even_when_older(erp, wms):
    wms.post(copy_of(wms, "SO-9", "99.00", "2026-05-01T12:00:00Z"))
    stage()
    order = Order.objects.get()
    assert not order.carries_money
    assert Customer.objects.get().lifetime_value == Decimal(0)  # a copy is no money received
    assert Customer.objects.get().order_count == 1
    erp.post(erp.order("SO-9", total="42.50", version="2026-05-01T10:00:00Z"))
    stage()
    order = Order.objects.get()
    assert order.grand_total == Decimal("42.50") and order.carries_money
    assert SourceEvent.objects.get(source_system="brightpearl").state == SourceEvent.State.READY
    assert Customer.objects.get().lifetime_value == Decimal("42.50")


def test_a_newer_copy_of_a_copy_still_replaces_it(wms):
    wms.post(copy_of(wms, "SO-9", "10.00", "2026-05-01T10:00:00Z"))
    stage()
    newer = copy_of(wms, "SO-9", "12.00", "2026-05-01T11:00:00Z")
    newer["source_event_id"] += "-2"
    wms.post(newer)
    stage()
    assert Order.objects.get().grand_total == Decimal("12.00")
