"""Orders blocked by an unknown SKU, posted to the real engine's public webhook (the `engine` and
`dd` fixtures of tests/monitoring/delivery_support.py), and the sandbox's view of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from monitoring.pipeline.flows import mark_catalogue_loaded
from tests.monitoring.delivery_support import ERP, Engine, event, iso

UNKNOWN = "AB-12/RED"  # how the ERP spells it
CATALOGUE = ["AB-12-RED", "AB-12-BLUE", "KETTLE-2L"]
CUSTOMERS = [f"buyer{n}@example.com" for n in range(8)]


def money(amount: str) -> dict[str, str]:
    return {"amount": amount, "currency": "GBP"}


def product(sku: str) -> dict[str, Any]:
    return event(
        ERP,
        "product.updated",
        f"product:{sku}",
        f"product:{sku}:v1",
        {"sku": sku, "product_key": f"demo-erp:erp-main:product:{sku}", "status": "active"},
    )


def order(number: str, email: str, *, at: datetime, sku: str = UNKNOWN) -> dict[str, Any]:
    line = {
        "line_key": f"{number}-1",
        "sku": sku,
        "sku_raw": sku,
        "name": "Wool Beanie, red",
        "quantity": 1,
        "unit_price": money("20.00"),
        "line_subtotal": money("20.00"),
        "line_discount": money("0.00"),
        "line_total": money("20.00"),
    }
    return event(
        ERP,
        "order.created",
        f"order:{number}",
        f"order:{number}:created",
        {
            "order_key": f"demo-erp:erp-main:order:{number}",
            "order_number": number,
            "channel_order_ref": number,
            "placed_at": iso(at),
            "currency": "GBP",
            "status": {"lifecycle": "open", "fulfilment": "unfulfilled", "financial": "paid"},
            "lines": [line],
            "tax_inclusive": True,
            "shipping": {"method": "Tracked 48", "amount": money("0.00")},
            "totals": {
                "subtotal": money("20.00"),
                "discount": money("0.00"),
                "shipping": money("0.00"),
                "tax": money("0.00"),
                "grand_total": money("20.00"),
                "tax_inclusive": True,
            },
        },
        at=at,
        email=email,
        customer_id=email.split("@")[0],
        source_ref=number,
    )


def load_catalogue(engine: Engine) -> None:
    """The ERP's product snapshot, staged and marked loaded: SKU checks start."""
    engine.post("erp", [product(sku) for sku in CATALOGUE])
    engine.pump()
    mark_catalogue_loaded(engine.erp_flow)


def post_orders(engine: Engine, count: int, *, first: int = 1000, sku: str = UNKNOWN) -> list[str]:
    """`count` orders of the unknown SKU over the customers, posted and pumped. Their numbers."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    numbers = [f"NW{first + n}" for n in range(count)]
    engine.post(
        "erp",
        [
            order(number, CUSTOMERS[n % len(CUSTOMERS)], at=start + timedelta(minutes=n), sku=sku)
            for n, number in enumerate(numbers)
        ],
    )
    engine.pump()
    return numbers


def orders_in_sandbox(engine: Engine) -> dict[str, dict[str, Any]]:
    """Every order record the sandbox holds for the customers, read through its API."""
    found: dict[str, dict[str, Any]] = {}
    for email in CUSTOMERS:
        found.update(engine.records(email, "Orders"))
    return found
