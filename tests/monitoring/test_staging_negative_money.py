"""Negative money on an order is finance's exception, with the figures, and changes nothing in
DotDigital; a document the source marks as a credit note or return (`data.document_type`) is a
refund against the order it names in `links`; a zero-value order (a free replacement) is an
order. Posted to a demo ERP flow's public webhook, read back from the DotDigital sandbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from exceptions_inbox.models import Occurrence
from monitoring.models import Order, Refund, SourceEvent
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import ERP, Engine, event, iso

pytestmark = pytest.mark.django_db(transaction=True)

State = SourceEvent.State


def money(amount: str) -> dict[str, str]:
    return {"amount": amount, "currency": "GBP"}


def document(
    number: str,
    email: str,
    *,
    quantity: int,
    unit: str,
    at: datetime,
    total: str | None = None,
    document_type: str | None = None,
    links: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An ERP order document of one line: `quantity` × `unit`."""
    line_total = str(Decimal(unit) * quantity)
    data: dict[str, Any] = {
        "order_key": f"demo-erp:erp-main:order:{number}",
        "order_number": number,
        "placed_at": iso(at),
        "currency": "GBP",
        "status": {"lifecycle": "open", "fulfilment": "unfulfilled", "financial": "paid"},
        "lines": [
            {
                "line_key": "1",
                "sku": "HAT-1",
                "quantity": quantity,
                "unit_price": money(unit),
                "line_total": money(line_total),
            }
        ],
        "totals": {"grand_total": money(total or line_total)},
    }
    if document_type:
        data["document_type"] = document_type
    return event(
        ERP,
        "order.created",
        f"order:{number}",
        f"order:{number}:created",
        data,
        at=at,
        email=email,
        customer_id="C1",
        links=links,
    )


def event_of(posted: dict[str, Any]) -> SourceEvent:
    return SourceEvent.objects.get(source_event_id=posted["source_event_id"])


def test_a_negative_order_opens_finances_exception_with_its_figures_and_sends_nothing(
    engine: Engine,
):
    now = datetime.now(UTC).replace(microsecond=0)
    negative = document("NW1", "neg@example.com", quantity=-2, unit="10.00", at=now)
    answer = engine.post("erp", [negative])
    assert answer["results"][0]["status"] == "accepted"
    engine.pump()

    failed = event_of(negative)
    assert failed.state == State.FAILED and failed.failed_kind == "negative_order"
    occurrence = Occurrence.objects.get(group__kind="negative_order")
    assert occurrence.group.team_slug == "finance"
    assert occurrence.order_number == "NW1"
    assert "line 1 (HAT-1) -2 × 10.00 GBP = -20.00 GBP" in occurrence.message
    assert "grand total -20.00 GBP" in occurrence.message
    assert occurrence.detail["grand_total"] == "-20.00"
    assert occurrence.detail["lines"] == [
        {
            "line_key": "1",
            "sku": "HAT-1",
            "quantity": "-2",
            "unit_price": "10.00",
            "line_total": "-20.00",
        }
    ]
    # Nothing of it reached DotDigital, and no order was kept.
    assert engine.contact("neg@example.com") is None
    assert engine.records("neg@example.com") == {}
    assert not Order.objects.exists()


def test_a_negative_total_on_a_known_customer_changes_nothing_in_dotdigital(engine: Engine):
    now = datetime.now(UTC).replace(microsecond=0)
    engine.post("erp", [document("NW2", "kim@example.com", quantity=3, unit="10.00", at=now)])
    engine.pump()
    before = engine.contact("kim@example.com")
    assert before is not None and before["dataFields"]["ORDER_COUNT"] == 1

    # Positive quantities, a negative total: still no order.
    negative = document(
        "NW3", "kim@example.com", quantity=1, unit="-5.00", at=now + timedelta(minutes=1)
    )
    engine.post("erp", [negative])
    engine.pump()

    assert event_of(negative).failed_kind == "negative_order"
    assert "grand total -5.00 GBP" in Occurrence.objects.get(group__kind="negative_order").message
    after = engine.contact("kim@example.com")
    assert after is not None
    assert after["dataFields"]["ORDER_COUNT"] == 1
    assert Decimal(str(after["dataFields"]["LTV"])) == Decimal("30.00")
    assert set(engine.records("kim@example.com")) == {"NW2"}


@pytest.mark.parametrize(
    ("document_type", "links"),
    [
        ("credit_note", {"order_key": "demo-erp:erp-main:order:NW4"}),
        ("return", {"order_number": "NW4"}),
    ],
)
def test_a_document_marked_a_credit_note_or_return_is_staged_as_a_refund_against_its_order(
    engine: Engine, document_type: str, links: dict[str, Any]
):
    now = datetime.now(UTC).replace(microsecond=0)
    engine.post("erp", [document("NW4", "lou@example.com", quantity=4, unit="30.00", at=now)])
    engine.pump()
    credit = document(
        "CN-4",
        "lou@example.com",
        quantity=-1,
        unit="30.00",
        at=now + timedelta(minutes=1),
        document_type=document_type,
        links=links,
    )
    engine.post("erp", [credit])
    engine.pump()

    staged = event_of(credit)
    assert staged.state == State.DELIVERED, staged.reason
    assert staged.order is not None and staged.order.order_number == "NW4"
    refund = Refund.objects.get()
    assert (refund.refund_key, refund.amount, refund.currency) == (
        "demo-erp:erp-main:order:CN-4",
        Decimal("30.00"),
        "GBP",
    )
    assert not Occurrence.objects.exists()
    contact = engine.contact("lou@example.com")
    assert contact is not None
    assert contact["dataFields"]["ORDER_COUNT"] == 1
    assert Decimal(str(contact["dataFields"]["LTV"])) == Decimal("90.00")
    assert contact["dataFields"]["REFUNDED"] is True
    records = engine.records("lou@example.com")
    assert set(records) == {"NW4"} and records["NW4"]["Refunded"] is True


def test_a_zero_value_order_a_free_replacement_is_an_order(engine: Engine):
    now = datetime.now(UTC).replace(microsecond=0)
    free = document("NW5", "max@example.com", quantity=1, unit="0.00", at=now)
    engine.post("erp", [free])
    engine.pump()

    assert event_of(free).state == State.DELIVERED
    assert not Occurrence.objects.exists()
    contact = engine.contact("max@example.com")
    assert contact is not None
    assert contact["dataFields"]["ORDER_COUNT"] == 1
    assert Decimal(str(contact["dataFields"]["LTV"])) == Decimal("0")
    assert engine.records("max@example.com")["NW5"]["GrandTotal"] == 0
