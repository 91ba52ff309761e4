"""Patchworks in `make demo` (monitoring/demo.py plays `RECORDING`): what a Patchworks process flow relaying a WMS
posts to the flow's webhook. Push-only: no API to serve.

Two requests, both to the flow's token URL: canonical events (a customer and the order
``#LMUK62388``) wrapped in Patchworks' start-flow envelope (the body stringified in ``payload``),
then Patchworks' documented start-flow example verbatim (tests/connectors/sources/payloads/
patchworks/, its provenance in connectors/sources/patchworks/README.md): the despatch of that order, which
joins it. The example's SKU is not in the demo catalogue, so the order opens a ``sku_mapping_gap``
in the inbox (an alias added there releases it). No opt-out webhook is set: the demo has no
Patchworks to write opt-outs to.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings

from connectors.sources.base import RecordedRequest, Recording
from connectors.sources.replay import replay_anchor

SYSTEM, ACCOUNT = "peoplevox", "wh1"  # the system the relaying flow reads from
ORDER = "#LMUK62388"  # the order of Patchworks' documented despatch example
EMAIL = "lm.patchworks@example.com"


def payloads() -> Path:
    return Path(settings.BASE_DIR) / "tests" / "connectors" / "sources" / "payloads" / "patchworks"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _event(event_type: str, entity: str, native_id: str, at: datetime, data: dict[str, Any],
           **extra: Any) -> dict[str, Any]:  # fmt: skip
    kind, _, source_id = entity.partition(":")
    return {
        "schema": "sync.event/v1",
        "event_type": event_type,
        "source": {"system": SYSTEM, "account": ACCOUNT, "channel": "web-uk", "via": None},
        "source_event_id": f"{SYSTEM}:{native_id}",
        "source_event_id_kind": "native",
        "occurred_at": _iso(at),
        "occurred_at_quality": "exact",
        "entity": {"type": kind, "key": f"{SYSTEM}:{ACCOUNT}:{entity}", "source_id": source_id,
                   "source_ref": extra.pop("source_ref", None)},
        "links": extra.pop("links", {}),
        "identity": {"email": EMAIL, "email_raw": EMAIL, "source_customer_id": "LM1",
                     "is_guest": False, "quality": "email"},
        "data": data,
    }  # fmt: skip


def _money(amount: str) -> dict[str, str]:
    return {"amount": amount, "currency": "GBP"}


def demo_events(now: datetime) -> list[dict[str, Any]]:
    """The customer and the order of the documented despatch (3 × SKU 42108803101)."""
    placed = now - timedelta(seconds=2)
    order_key = f"{SYSTEM}:{ACCOUNT}:order:{ORDER}"
    return [
        _event("customer.upserted", "customer:LM1", "customer:LM1:1", placed,
               {"customer_key": f"{SYSTEM}:{ACCOUNT}:customer:LM1", "source_updated_at": _iso(placed),
                "first_name": "Lou", "last_name": "Marsh"}),
        _event("order.created", f"order:{ORDER}", f"order:{ORDER}:created", placed,
               {"order_key": order_key, "order_number": ORDER, "channel_order_ref": ORDER,
                "placed_at": _iso(placed), "currency": "GBP", "tax_inclusive": True, "is_guest": False,
                "status": {"lifecycle": "open", "fulfilment": "unfulfilled", "financial": "paid"},
                "lines": [{"line_key": "17070133346600", "sku": "42108803101", "sku_raw": "42108803101",
                           "name": "Trail socks", "quantity": 3, "unit_price": _money("8.00"),
                           "line_total": _money("24.00")}],
                "totals": {"subtotal": _money("24.00"), "shipping": _money("3.95"),
                           "grand_total": _money("27.95"), "tax_inclusive": True}},
               source_ref=ORDER, links={"order_number": ORDER}),
    ]  # fmt: skip


def demo_credentials() -> dict[str, Any]:
    return {}


def demo_options(base_url: str) -> dict[str, Any]:
    # The despatch example names no system: it is attributed to the relayed WMS, so it joins.
    return {"source_system": SYSTEM, "source_account": ACCOUNT}


def demo_requests(anchor: datetime | None = None) -> list[RecordedRequest]:
    """The start-flow payload placed at `anchor` (default: the demo's present), then the
    documented example, which carries no time."""
    events = demo_events(anchor or replay_anchor())
    return [
        RecordedRequest(
            body=json.dumps({"payload": json.dumps({"events": events})}).encode(),
            label=f"start-flow payload: the customer and order {ORDER}",
        ),
        RecordedRequest(
            body=(payloads() / "start-flow-request-standard-payload.json").read_bytes(),
            label=f"Patchworks' documented start-flow example: the despatch of {ORDER}",
        ),
    ]


RECORDING = Recording(
    name="Patchworks (recorded)",
    join_key="order_number",
    requests=demo_requests,
    credentials=demo_credentials,
    options=demo_options,
)
