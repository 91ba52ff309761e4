"""A split order (sources.md §12.7: Mintsoft's Part/NumberOfParts, each part its own shipment of
the one order) is dispatched at order level only once every part has gone, in any order, whether
the parts are staged in one batch or in several."""

from __future__ import annotations

import pytest

from monitoring.models import Order, Shipment
from tests.monitoring.engine import stage


def part(wms, number: str, n: int, of: int, at: str):
    event = wms.dispatch(number, part=n, at=at)
    event["data"].update({"is_partial": of > 1, "part": n, "parts": of})
    return event


@pytest.fixture
def sold(erp):
    erp.post(erp.order("SO-50", total="42.50"))
    stage()


def test_the_first_part_leaves_the_order_partially_dispatched(sold, wms):
    wms.post(part(wms, "SO-50", 1, 3, "2026-05-02T09:00:00Z"))
    stage()
    assert Order.objects.get().fulfilment == "partially_dispatched"


def test_the_order_is_dispatched_once_its_last_part_has_gone_in_any_order(sold, wms):
    wms.post(part(wms, "SO-50", 3, 3, "2026-05-02T09:00:00Z"))
    stage()
    wms.post(part(wms, "SO-50", 1, 3, "2026-05-02T10:00:00Z"))
    stage()
    assert Order.objects.get().fulfilment == "partially_dispatched"
    wms.post(part(wms, "SO-50", 2, 3, "2026-05-02T11:00:00Z"))
    stage()
    order = Order.objects.get()
    assert order.fulfilment == "dispatched"
    assert Shipment.objects.filter(order=order).count() == 3


def test_parts_staged_in_one_batch_count_each_other(sold, wms):
    wms.post(
        [
            part(wms, "SO-50", 1, 2, "2026-05-02T09:00:00Z"),
            part(wms, "SO-50", 2, 2, "2026-05-02T09:05:00Z"),
        ]
    )
    stage()
    assert Order.objects.get().fulfilment == "dispatched"


def test_a_repeated_part_does_not_stand_in_for_a_missing_one(sold, wms):
    first = part(wms, "SO-50", 1, 2, "2026-05-02T09:00:00Z")
    wms.post(first)
    stage()
    again = part(wms, "SO-50", 1, 2, "2026-05-02T09:30:00Z")  # the same shipment, a newer version
    again["source_event_id"] += "-again"
    wms.post(again)
    stage()
    assert Order.objects.get().fulfilment == "partially_dispatched"
