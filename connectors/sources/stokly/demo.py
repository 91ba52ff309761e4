"""Stokly in `make demo` (monitoring/demo.py plays `RECORDING`): a recorded Stokly API for the poller (Stokly has
no webhooks): the signed grant, the channel's listings, customers, sale orders with their items
(one a kit), a paid invoice and inventory records, money as JSON floats the way Stokly serves it.

The listings are Stokly's real captured page (tests/connectors/sources/payloads/stokly/, its
provenance in connectors/sources/stokly/README.md); the rest is synthetic in the field names of public
client code (sources.md §6), with the demo catalogue's SKUs. Their times are the demo's present
(connectors/sources/replay.py), a few seconds apart.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings

from connectors.sources.base import RecordedApi, RecordedRequest, Recording
from connectors.sources.replay import replay_anchor

ACCOUNT_KEY = "demo-stokly"
CLIENT_ID = "demo-client"
SECRET = "demo-stokly-secret"
CLAUSE = re.compile(r"^\[(?P<field>[^\]]+)\]>=\{(?:@string;)?(?P<value>.*)\}$")


def payloads() -> Path:
    return Path(settings.BASE_DIR) / "tests" / "connectors" / "sources" / "payloads" / "stokly"


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _item(line_id: str, sku: str, total: float, parent: str | None = None) -> dict[str, Any]:
    money = {} if parent else {
        "displayPrice": total, "displayLinePrice": total, "displayLineDiscount": 0,
        "displayLineTax": round(total / 6, 4), "displayLineTotal": total,
    }  # fmt: skip
    return {"lineId": line_id, "parentId": parent, "itemSku": sku, "itemName": sku.title(),
            "quantity": 1, "status": "unprocessed", "fulfilmentType": "delivery", **money}  # fmt: skip


def demo_data(now: datetime) -> dict[str, Any]:
    """The collections the API serves, as of `now`: changed in the seconds before it, in order."""
    listings = json.loads((payloads() / "listings-list-page.json").read_text())["data"]
    t = [now - timedelta(seconds=2 * (8 - i)) for i in range(8)]
    shipping: dict[str, Any] = {
        "name": {"forename": "Sam", "surname": "Demo"}, "option": "Tracked 24", "cost": 3.99,
        "tax": 0.665,
    }  # fmt: skip
    order: dict[str, Any] = {
        "saleOrderId": "so-d1", "niceId": 5001, "sourceReferenceId": "#SHOP5001",
        "channelName": "Shopify", "stage": "order", "itemStatuses": ["unprocessed"],
        "currency": "GBP", "createdAt": _stamp(t[1]),
        "customer": {"customerId": "cu-d1", "email": "sam.stokly@example.com"},
        "shipping": shipping,
        "payments": [{"method": "card", "amount": 56.97}],
    }  # fmt: skip
    guest = {
        **order, "saleOrderId": "so-d2", "niceId": 5002, "sourceReferenceId": "#SHOP5002",
        "createdAt": _stamp(t[2]), "customer": None, "email": "lee.guest@example.com",
        "payments": [{"method": "card", "amount": 11.99}],
        "shipping": {**shipping, "cost": 0, "tax": 0},
    }  # fmt: skip
    return {
        "channel": listings[0]["channelId"],
        "listings": listings,
        "customers": [
            {
                "customerId": "cu-d1",
                "email": "sam.stokly@example.com",
                "status": 0,
                "name": {"forename": "Sam", "surname": "Demo"},
                "updatedAt": _stamp(t[0]),
                "createdAt": _stamp(t[0]),
            },
        ],  # fmt: skip
        "saleorders": [order, guest],
        "items": {
            # 34.99 + 17.99 + 3.99 delivery: floats whose sum is not 56.97 as a float
            "so-d1": [
                _item("l1", "MER-000/RED-S", 34.99),
                _item("l2", "RAI-001/RED-M", 17.99),
                _item("l2a", "RAI-001-HOOD", 0, parent="l2"),  # a kit component
            ],
            "so-d2": [_item("l3", "CAN-004/RED-S", 11.99)],
        },
        "invoices": [
            {
                "invoiceId": "inv-d1",
                "saleOrderId": "so-d1",
                "saleOrderNiceId": 5001,
                "status": "paid",
                "issueDate": _stamp(t[3]),
            },
        ],  # fmt: skip
        "inventory": [
            {
                "itemId": "i-mer",
                "itemSku": "MER-000/RED-S",
                "binId": "b1",
                "locationName": "Leeds",
                "binName": "A1",
                "onHand": 6,
            },
            {
                "itemId": "i-can",
                "itemSku": "CAN-004/RED-S",
                "binId": "b2",
                "locationName": "Leeds",
                "binName": "A2",
                "onHand": 0,
            },
        ],  # fmt: skip
    }


def demo_credentials() -> dict[str, Any]:
    return {"account_key": ACCOUNT_KEY, "client_id": CLIENT_ID, "secret": SECRET}


def demo_options(base_url: str) -> dict[str, Any]:
    channel = demo_data(replay_anchor())["channel"]
    return {"base_url": base_url, "listing_channel_id": channel, "page_size": 50}


def demo_requests() -> list[RecordedRequest]:
    """None: Stokly has no webhooks; the demo polls it."""
    return []


def _selected(rows: list[dict[str, Any]], query: Mapping[str, str]) -> list[dict[str, Any]]:
    """``filter=[field]>={value}`` clauses joined by ``&&``, ``sortField``, ``page`` + ``size``."""
    selected = list(rows)
    for clause in str(query.get("filter") or "").split("&&"):
        match = CLAUSE.match(clause.strip())
        if match:
            selected = [r for r in selected if str(r.get(match["field"]) or "") >= match["value"]]
    sort = str(query.get("sortField") or "")
    if sort:
        selected.sort(key=lambda r: str(r.get(sort) or ""))
    page, size = int(query.get("page") or 0), int(query.get("size") or 100)
    return selected[page * size : (page + 1) * size]


def demo_api(anchor: datetime | None = None) -> RecordedApi:
    """``POST /v1/grant`` (answers a bearer token) and the lists, paged and filtered."""
    data = demo_data(anchor or replay_anchor())
    tokens: set[str] = set()
    lists = {
        "/v0/customers": data["customers"],
        "/v2/saleorders": data["saleorders"],
        "/v0/invoices": data["invoices"],
        "/v1/inventory-records": data["inventory"],
        f"/v0/channels/{data['channel']}/listings": data["listings"],
        "/v0/items": [{"itemId": "i-mer"}],
    }
    for order_id, items in data["items"].items():
        lists[f"/v2/saleorders/{order_id}/items"] = items

    def answer(
        method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str]
    ) -> tuple[int, Any, Mapping[str, str]]:
        if method == "POST" and path == "/v1/grant":
            token = secrets.token_hex(8)
            tokens.add(token)
            expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
            return (
                200,
                {"data": {"authenticationResult": {"accessToken": token, "expiry": expiry}}},
                {},
            )
        if headers.get("authorization", "").removeprefix("Bearer ") not in tokens:
            return 401, {"message": "Invalid admin session"}, {}
        rows = lists.get(path)
        if rows is None:
            return 404, {"message": "Not found"}, {}
        return 200, {"data": _selected(rows, query), "metadata": {"count": len(rows)}}, {}

    return answer


RECORDING = Recording(
    name="Stokly (recorded)",
    join_key="order_number",
    requests=demo_requests,
    credentials=demo_credentials,
    options=demo_options,
    api=demo_api,
    polls=True,
)
