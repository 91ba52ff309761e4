"""Brightpearl in `make demo` (monitoring/demo.py plays `RECORDING`): the webhooks to post to the flow's webhook
(ids only, as Brightpearl sends them) and a recorded Brightpearl API the engine's fetch reads the
records from, within the shared budget (it sends the throttle headers and answers 503 past 200
requests a minute, like Brightpearl).

The payloads are the parsing tests' (tests/connectors/sources/payloads/brightpearl/, their
provenance in connectors/sources/brightpearl/README.md). Two liberties: the recorded goods-out note belongs
to an order nobody recorded, so the demo serves it as order 1's note (else its shipment would wait
as an orphan and expire); and the recorded account trades in US dollars while the demo workspace
keeps pounds, so the sale and its credit are served in GBP (else both would stop as currency
mismatches). Their times, 2020 to 2025 as recorded, are replayed now (connectors/sources/replay.py):
the webhooks and the records through one clock, in their recorded order.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from django.conf import settings

from connectors.sources.base import RecordedApi, RecordedRequest, Recording
from connectors.sources.brightpearl.mapping import MappingError, expand_id_set
from connectors.sources.replay import ReplayClock, replay_anchor

ACCOUNT = "acme"
APP_REF = "syncdesk-demo"
ACCOUNT_TOKEN = "demo-brightpearl-token"
CAP = 200
IN_POUNDS = {"accountingCurrencyCode": "GBP", "orderCurrencyCode": "GBP"}


def payloads() -> Path:
    return Path(settings.BASE_DIR) / "tests" / "connectors" / "sources" / "payloads" / "brightpearl"


def _load(name: str) -> Any:
    return json.loads((payloads() / name).read_text())


def _records(name: str) -> dict[int, dict[str, Any]]:
    response = _load(name)["response"]
    if isinstance(response, Mapping):  # keyed by id (goods-out notes)
        return {int(k): v for k, v in response.items()}
    return {int(r.get("id") or r.get("contactId")): r for r in response}


def _notification(resource: str, ids: str, full_event: str, raised_on: str) -> dict[str, Any]:
    return {
        "accountCode": ACCOUNT,
        "resourceType": resource,
        "id": ids,
        "lifecycleEvent": "modified",
        "fullEvent": full_event,
        "raisedOn": raised_on,
        "brightpearlVersion": "7.12.0",
    }


def _recorded_webhooks() -> list[tuple[str, Any]]:
    """(label, body) of the contact, the product, the sale and its credit, then the goods-out
    note, as recorded."""
    recorded = [
        ("synthetic/webhook-contact-modified.json", "contact modified"),
        ("synthetic/webhook-product-on-hand-modified.json", "product on hand modified"),
        ("synthetic/webhook-order-modified.json", "order modified"),
    ]
    bodies = [(label, _load(name)) for name, label in recorded]
    bodies.append(
        (
            "sales credit created",
            _notification("sales-credit", "2", "sales-credit.created", "2020-04-02T10:00:00Z"),
        )
    )
    bodies.append(
        ("goods-out note shipped", _load("synthetic/webhook-goods-out-note-shipped.json"))
    )
    return bodies


def _clock(anchor: datetime | None) -> ReplayClock:
    """One clock for the webhooks and the records: the API and the replay run apart."""
    documents = [body for _, body in _recorded_webhooks()]
    documents.extend(vars(_recorded_store()).values())
    return ReplayClock(documents, anchor=anchor or replay_anchor())


def demo_requests(anchor: datetime | None = None) -> list[RecordedRequest]:
    """The webhooks, their times moved to `anchor` (default: the demo's present)."""
    clock = _clock(anchor)
    shifted = [(label, clock.shift(body)) for label, body in _recorded_webhooks()]
    return [
        RecordedRequest(body=json.dumps(body).encode(), label=label, at=clock.newest(body))
        for label, body in shifted
    ]


def demo_credentials() -> dict[str, Any]:
    return {"app_ref": APP_REF, "account_token": ACCOUNT_TOKEN}


def demo_options(base_url: str) -> dict[str, Any]:
    return {
        "account_code": ACCOUNT,
        "base_url": f"{base_url}/public-api/{ACCOUNT}",
        # the statuses the recordings show: 1 Draft / Quote, 4 Invoiced
        "order_status_map": {"1": "open", "4": "closed"},
    }


class _Budget:
    """Brightpearl's request cap: `CAP` requests in any 60 seconds, told in its throttle headers."""

    def __init__(self) -> None:
        self.window: list[float] = []
        self.lock = threading.Lock()

    def take(self) -> tuple[bool, dict[str, str]]:
        with self.lock:
            now = time.monotonic()
            self.window[:] = [t for t in self.window if now - t < 60]
            allowed = len(self.window) < CAP
            if allowed:
                self.window.append(now)
            next_ms = int((60 - (now - self.window[0])) * 1000) if self.window else 60000
            return allowed, {
                "Brightpearl-Requests-Remaining": str(max(0, CAP - len(self.window))),
                "Brightpearl-Next-Throttle-Period": str(next_ms),
            }


def _by_ids(store: Mapping[int, Any], id_set: str) -> dict[int, Any]:
    try:
        ids = expand_id_set(unquote(id_set))
    except MappingError:
        return {}
    return {i: store[i] for i in ids if i in store}


@dataclass(frozen=True)
class _Store:
    """The recorded account's records, by id."""

    orders: dict[int, Any]
    notes: dict[int, Any]
    products: dict[int, Any]
    availability: dict[int, Any]
    contacts: dict[int, Any]
    statuses: Any

    def find(self, parts: list[str]) -> Any:
        """What the API path (split at its slashes) answers with; None when it names nothing."""
        if parts[:2] == ["order-service", "order-status"]:
            return self.statuses["response"]
        if parts[:2] == ["order-service", "order"] and len(parts) == 3:
            return list(_by_ids(self.orders, parts[2]).values())
        if parts[:3] == ["warehouse-service", "order", "*"] and len(parts) == 6:
            return {str(k): v for k, v in _by_ids(self.notes, parts[5]).items()}
        if parts[:2] == ["warehouse-service", "product-availability"] and len(parts) == 3:
            return {str(k): v for k, v in _by_ids(self.availability, parts[2]).items()}
        if parts[:2] == ["product-service", "product"] and len(parts) == 3:
            return list(_by_ids(self.products, parts[2]).values())
        if parts[:2] == ["contact-service", "contact"] and len(parts) == 3:
            return list(_by_ids(self.contacts, parts[2]).values())
        return None


def _recorded_store() -> _Store:
    orders = {
        number: {**order, "currency": {**order["currency"], **IN_POUNDS}}
        for number, order in {
            **_records("order-get-sales-order.json"),
            **_records("synthetic/order-get-sales-credit-paid.json"),
        }.items()
    }
    return _Store(
        orders=orders,
        notes={k: {**v, "orderId": 1} for k, v in _records("goods-out-note-get.json").items()},
        products=_records("extra/product-get.json"),
        availability={
            int(k): v for k, v in _load("product-availability-get.json")["response"].items()
        },
        contacts=_records("contact-get.json"),
        statuses=_load("extra/order-status-get.json"),
    )


def demo_api(anchor: datetime | None = None) -> RecordedApi:
    """The recorded account, its times moved to `anchor` (default: the demo's present)."""
    clock = _clock(anchor)
    store = _Store(**{name: clock.shift(value) for name, value in vars(_recorded_store()).items()})
    over_cap = _load("error-503-request-cap.json")
    budget = _Budget()

    def answer(
        method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str]
    ) -> tuple[int, Any, Mapping[str, str]]:
        prefix = f"/public-api/{ACCOUNT}/"
        if not path.startswith(prefix):
            return 404, {"response": "No such account"}, {}
        allowed, limits = budget.take()
        if not allowed:
            return 503, over_cap, limits
        if (
            headers.get("brightpearl-app-ref") != APP_REF
            or headers.get("brightpearl-account-token") != ACCOUNT_TOKEN
        ):
            return 401, {"response": "Not authorised"}, limits
        found = store.find(path[len(prefix) :].strip("/").split("/"))
        if found is None:
            return 404, {"errors": [{"code": "CMNC-404", "message": "Not found"}]}, limits
        return 200, {"response": found}, limits

    return answer


RECORDING = Recording(
    name="Brightpearl (recorded)",
    join_key="order_number",
    requests=demo_requests,
    credentials=demo_credentials,
    options=demo_options,
    api=demo_api,
)
