"""A workspace whose Brightpearl (a fake Brightpearl on 127.0.0.1, from the connector's tests)
flows into DotDigital (the sandbox process), and sales orders to serve from it: shared by the
reconciliation-against-the-source and opt-out round-trip tests. Test modules import the fixtures
by name: `from tests.monitoring.brightpearl_support import *`."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from monitoring.models import Flow
from monitoring.pipeline.flows import install_defaults, mark_backfill_complete
from tests.connectors.sources.fakes.brightpearl import FakeBrightpearl, load
from tests.factories import make_connection, make_workspace
from tests.monitoring.delivery_support import Engine

__all__ = ["bp_time", "fake", "sales_order", "set_price", "shop"]

RECORDED = load("order-get-sales-order.json")["response"][0]


def bp_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+00:00")


def sales_order(order_id: int, email: str, *, created: datetime, price: str = "10.00") -> dict:
    """The recorded sales order as another order: its id, customer, times and (consistent)
    money; tax is 10% inside the price, as in the recording."""
    order: dict[str, Any] = copy.deepcopy(RECORDED)
    order["id"] = order_id
    order["createdOn"] = order["placedOn"] = order["updatedOn"] = bp_time(created)
    for party in ("customer", "delivery", "billing"):
        order["parties"][party]["email"] = email
        if "contactId" in order["parties"][party]:
            order["parties"][party]["contactId"] = order_id + 1000
    set_price(order, price)
    return order


def set_price(order: dict, price: str) -> None:
    gross = Decimal(price)
    net = (gross / Decimal("1.1")).quantize(Decimal("0.0001"))
    tax = (gross - net).quantize(Decimal("0.01"))
    row = order["orderRows"]["1"]
    row["productPrice"]["value"] = f"{gross:.4f}"
    row["rowValue"]["rowNet"]["value"] = f"{net:.4f}"
    row["rowValue"]["rowTax"]["value"] = f"{tax}"
    total = order["totalValue"]
    total["net"] = total["baseNet"] = f"{net.quantize(Decimal('0.01'))}"
    total["taxAmount"] = total["baseTaxAmount"] = f"{tax}"
    total["total"] = total["baseTotal"] = f"{gross:.2f}"


@pytest.fixture
def fake() -> Iterator[FakeBrightpearl]:
    server = FakeBrightpearl()
    server.statuses = load("extra/order-status-get.json")["response"]
    server.start()
    yield server
    server.stop()


@pytest.fixture
def shop(db: Any, dd: Any, fake: FakeBrightpearl, monkeypatch: Any) -> Engine:
    """A workspace whose Brightpearl (fake) flows into DotDigital (the sandbox)."""
    from monitoring.pipeline import deliver

    monkeypatch.setattr(deliver, "BULK_MAX_WAIT", timedelta(0))
    workspace = make_workspace("northwind", currency="USD")
    destination = make_connection(
        workspace,
        "dotdigital",
        name="DotDigital",
        credentials={"api_user": dd.auth[0], "password": dd.auth[1]},
        options={"api_endpoint": dd.url, "discovery_url": dd.url},
    )
    source = make_connection(
        workspace,
        "brightpearl",
        name="Brightpearl",
        options={
            "account_code": "acme",
            "base_url": f"{fake.url}/public-api/acme",
            "oauth_url": fake.url,
            "order_status_map": {"4": "closed"},
        },
        credentials={"app_ref": "syncdesk", "account_token": "private-token"},
    )
    flow = Flow.objects.create(
        workspace=workspace,
        name="Brightpearl → DotDigital",
        source=source,
        destination=destination,
        join_key=Flow.JoinKey.ORDER_NUMBER,
    )
    install_defaults(flow)
    mark_backfill_complete(flow, by="test")
    return Engine(workspace, destination, source, source, flow, flow, {}, dd, Client())
