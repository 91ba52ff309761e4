"""Staging's two paths end in the same state: the fast path (the batch's rows read up front,
written together at its end) against the safe path (a savepoint per event, every lookup a query),
on the same seeded mixed loads posted to the webhook of two workspaces."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from accounts.models import Workspace
from exceptions_inbox.models import Occurrence
from monitoring.models import (
    Customer,
    CustomerKey,
    Order,
    OrderKey,
    Product,
    Refund,
    Shipment,
    SourceEvent,
    StockDelta,
    StockLevel,
)
from monitoring.pipeline.flows import mark_catalogue_loaded
from monitoring.pipeline.staging import batch as staging_batch
from monitoring.pipeline.staging import run as staging
from tests.monitoring.engine import Source

EMAILS = ["jo@example.com", " Jo@Example.COM ", "sam@example.com", "ann@example.com", None]
SKUS = ["TEE-RED-M", "tee-red-m", "MUG-1", "CAP-2"]
HELD = ["saleable", None, "allocated", "saleable", "quarantined"]  # what a snapshot sends


def mixed_load(erp: Source, wms: Source, seed: int, size: int = 160) -> list[dict[str, Any]]:
    """New and updated orders (some in another currency, not adding up, without email, guest,
    negative), status changes, dispatches (some orphans), carrier scans, refunds (some beyond the
    order's total, some corrected), dispatches and refunds naming their order by its key only,
    credit notes, products, stock snapshots (saleable given, derived, or on-hand only) and deltas,
    customer upserts."""
    rng = random.Random(seed)
    snapshots = 0
    kinds = ["order", "update", "status", "dispatch", "scan", "refund", "product", "stock", "cust"]
    kinds += ["keyed", "negative", "credit"]
    weights = [6, 3, 2, 4, 1, 3, 2, 4, 2, 3, 2, 2]
    events = []
    for i in range(size):
        kind = rng.choices(kinds, weights)[0]
        sid = f"load{seed}:{i}"
        number = f"SO-{rng.randrange(12)}"
        at = f"2026-05-01T{rng.randrange(1, 23):02d}:{rng.randrange(60):02d}:00Z"
        if kind in ("order", "update"):
            total = rng.choice(["10.00", "25.50", "99.99"])
            line_total = total if rng.random() > 0.05 else "1.00"
            events.append(
                erp.order(
                    number,
                    email=rng.choice(EMAILS),
                    total=total,
                    lines=[
                        {
                            "line_key": "1",
                            "sku": rng.choice(SKUS),
                            "quantity": 1,
                            "line_total": {"amount": line_total, "currency": "GBP"},
                        }
                    ],
                    currency="EUR" if rng.random() < 0.05 else "GBP",
                    guest=rng.random() < 0.3,
                    version=at,
                    event_type="order.created" if kind == "order" else "order.updated",
                    source_event_id=sid,
                )
            )
        elif kind == "status":
            events.append(
                erp.event(
                    "order.status_changed",
                    {
                        "order_key": f"erp:order:{number}",
                        "to": {"lifecycle": rng.choice(["open", "cancelled", "closed"])},
                        "source_status_raw": "x",
                    },
                    at=at,
                    entity=("order", f"erp:order:{number}"),
                    links={"order_number": number},
                    source_event_id=sid,
                )
            )
        elif kind == "dispatch":
            part = rng.choice([1, 2])
            events.append(
                wms.dispatch(
                    number, at=at, part=part, tracking=[f"T{number}-{part}"], source_event_id=sid
                )
            )
        elif kind == "scan":
            events.append(
                wms.event(
                    "shipment.carrier_scanned",
                    {
                        "tracking_number": f"T{number}-1",
                        "scan_status": "collected",
                        "scanned_at": at,
                    },
                    at=at,
                    entity=("shipment", f"wms:scan:{i}"),
                    source_event_id=sid,
                )
            )
        elif kind == "refund":
            amount = rng.choice(["1.00", "5.00", "20.00", "60.00"])
            key = f"R-{rng.randrange(8)}"
            events.append(erp.refund(number, key, amount, at=at, source_event_id=sid))
        elif kind in ("keyed", "negative", "credit"):
            events.append(by_key_or_negative(erp, kind, number, at, sid, rng))
        elif kind == "product":
            sku = rng.choice(SKUS[:3])
            events.append(
                erp.event(
                    "product.updated",
                    {"sku": sku, "product_key": f"erp:product:{sku}", "status": "active"},
                    at=at,
                    entity=("product", f"erp:product:{sku}"),
                    source_event_id=sid,
                )
            )
        elif kind == "stock":
            sku, location = rng.choice(SKUS[:2]), rng.choice(["WH1", "WH2"])
            mode = rng.choice(["snapshot", "delta", "delta"])
            quantities = (
                {"on_hand": rng.randrange(5), "saleable": rng.randrange(5)}
                if mode == "snapshot"
                else {"on_hand": rng.choice([-1, 1, 2]), "saleable": rng.choice([-2, -1, 1])}
            )
            if mode == "snapshot":
                # Saleable from the source, unknown, or derived from what is held back, in turn.
                held = HELD[snapshots % len(HELD)]
                snapshots += 1
                if held != "saleable":
                    del quantities["saleable"]
                if held in ("allocated", "quarantined"):
                    quantities[held] = rng.randrange(4)
            events.append(
                wms.event(
                    "stock.changed",
                    {
                        "sku": sku,
                        "location": {"key": location},
                        "mode": mode,
                        "as_of": at,
                        "quantities": quantities,
                    },
                    at=at,
                    entity=("stock", f"wms:stock:{sku}:{location}"),
                    source_event_id=sid,
                )
            )
        else:
            k = rng.randrange(4)
            email = rng.choice(EMAILS[:4])
            events.append(
                erp.event(
                    "customer.upserted",
                    {
                        "customer_key": f"C-{k}",
                        "source_updated_at": at,
                        "first_name": rng.choice(["Jo", "Sam"]),
                    },
                    at=at,
                    entity=("customer", f"erp:customer:C-{k}"),
                    identity={"email": email, "source_customer_id": f"C-{k}"},
                    source_event_id=sid,
                )
            )
        if rng.random() < 0.08:  # the source sends it again
            events.append(events[-1])
    return events


def by_key_or_negative(
    erp: Source, kind: str, number: str, at: str, sid: str, rng: random.Random
) -> dict[str, Any]:
    """A dispatch or refund naming its order by the ERP's order key only (in data or links), a
    negative order, or a credit note naming its order in links."""
    key = f"erp:order:{number}"
    if kind == "keyed":
        event = (
            erp.dispatch(number, at=at, part=3, source_event_id=sid)
            if rng.random() < 0.5
            else erp.refund(number, f"RK-{rng.randrange(4)}", "2.00", at=at, source_event_id=sid)
        )
        event["links"] = {"order_key": key} if rng.random() < 0.5 else {}
        return event
    amount = rng.choice(["-5.00", "-20.00"])
    line = {"line_key": "1", "sku": "MUG-1", "quantity": -1}
    line["line_total"] = {"amount": amount, "currency": "GBP"}
    event = erp.order(
        f"CN-{rng.randrange(4)}" if kind == "credit" else number,
        total=amount,
        lines=[line],
        version=at,
        source_event_id=sid,
    )
    if kind == "credit":
        event["data"]["document_type"] = rng.choice(["credit_note", "return"])
        event["links"] = {"order_key": key} if rng.random() < 0.5 else {"order_number": number}
    return event


def state_of(workspace: Workspace) -> dict[str, Any]:
    """Everything staging wrote for the workspace, without its ids."""
    events = SourceEvent.objects.filter(workspace=workspace)
    sid = dict(events.values_list("pk", "source_event_id"))
    email = dict(Customer.objects.filter(workspace=workspace).values_list("pk", "email"))
    number = dict(Order.objects.filter(workspace=workspace).values_list("pk", "order_number"))

    def rows(qs: Any, *fields: str, **refs: dict[int, Any]) -> list[tuple[Any, ...]]:
        out = []
        for row in qs.values(*fields, *refs):
            out.append(
                tuple(row[f] for f in fields)
                + tuple(mapping.get(row[name]) for name, mapping in refs.items())
            )
        return sorted(out, key=repr)

    order_fields = [
        f.name
        for f in Order._meta.concrete_fields
        if f.name not in ("id", "workspace", "customer", "updated")
    ]
    return {
        "events": rows(
            events,
            "source_event_id",
            "state",
            "reason",
            "hold",
            "hold_deadline",
            "next_attempt_at",
            "staged_at",
            "failed_kind",
            "lane",
            "order_ref",
            order=number,
            customer=email,
        ),
        "customers": rows(
            Customer.objects.filter(workspace=workspace),
            "email",
            "email_raw",
            "previous_emails",
            "phone",
            "first_name",
            "last_name",
            "is_guest",
            "source_version",
            "order_count",
            "lifetime_value",
            "last_order_at",
            "last_dispatch_at",
            "refunded",
        ),
        "keys": rows(
            CustomerKey.objects.filter(workspace=workspace),
            "source_system",
            "source_customer_id",
            customer=email,
        ),
        "order_keys": rows(
            OrderKey.objects.filter(workspace=workspace), "source_system", "order_key", order=number
        ),
        "orders": rows(Order.objects.filter(workspace=workspace), *order_fields, customer=email),
        "shipments": rows(
            Shipment.objects.filter(workspace=workspace),
            "shipment_key",
            "dispatched_at",
            "tracking_numbers",
            "carrier",
            "lines",
            "first_scan_at",
            "scan_status",
            "source_version",
            order=number,
        ),
        "refunds": rows(
            Refund.objects.filter(workspace=workspace),
            "refund_key",
            "amount",
            "currency",
            "refunded_at",
            "source_version",
            order=number,
        ),
        "products": rows(
            Product.objects.filter(workspace=workspace),
            "sku",
            "sku_key",
            "product_key",
            "name",
            "status",
            "price",
            "currency",
            "source_version",
        ),
        "stock": rows(
            StockLevel.objects.filter(workspace=workspace),
            *[
                f.name
                for f in StockLevel._meta.concrete_fields
                if f.name not in ("id", "workspace")
            ],
        ),
        "deltas": rows(
            StockDelta.objects.filter(level__workspace=workspace),
            "level__sku",
            "level__location_key",
            "as_of",
            "quantities",
            event=sid,
        ),
        "occurrences": rows(
            Occurrence.objects.filter(group__workspace=workspace),
            "group__kind",
            "state",
            "message",
            "order_number",
            "sku",
            "email",
            event_key={f"event:{pk}": s for pk, s in sid.items()},
        ),
    }


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_the_fast_and_the_safe_path_stage_a_mixed_load_to_the_same_state(world, seed, monkeypatch):
    rng = random.Random(seed)
    pairs = []
    for workspace in (world.workspace, world.other):
        erp = Source(workspace, "erp", masters_products=True)
        wms = Source(workspace, "wms", hold_dispatch_for_scan=seed % 2 == 0)
        pairs.append((erp, wms))
    events = mixed_load(*pairs[0], seed)
    paths: list[bool] = []
    stage_all = staging._stage_all

    def spy(
        events: list[SourceEvent], batch: staging_batch.Batch, *, fast: bool, **kw: Any
    ) -> None:
        stage_all(events, batch, fast=fast, **kw)
        paths.append(fast)  # a batch that ended on this path

    def no_fast_path(events: list[SourceEvent]) -> staging_batch.StateCache:
        raise staging_batch.Abort

    monkeypatch.setattr(staging, "_stage_all", spy)
    with time_machine.travel(datetime(2026, 5, 2, 9, tzinfo=UTC), tick=False) as clock:
        for erp, _ in pairs:
            mark_catalogue_loaded(erp.flow)
        start = 0
        while start < len(events):
            chunk = events[start : start + rng.randrange(1, 40)]
            start += len(chunk)
            batch_size = rng.randrange(1, 60)
            for (erp, wms), safe in zip(pairs, (False, True), strict=True):
                with monkeypatch.context() as patch:
                    if safe:
                        patch.setattr(staging, "read_state", no_fast_path)
                    by_flow: dict[Any, list[dict[str, Any]]] = {}
                    for event in chunk:
                        by_flow.setdefault(erp if event["source"]["system"] == "erp" else wms, [])
                        by_flow[erp if event["source"]["system"] == "erp" else wms].append(event)
                    for source, posted in by_flow.items():
                        answer = source.post(posted).json()
                        assert {r["status"] for r in answer["results"]} <= {"accepted", "duplicate"}
                    for flow in (erp.flow, wms.flow, erp.flow, wms.flow):
                        staging.run_staging(flow_id=flow.pk, batch_size=batch_size)
            clock.shift(timedelta(seconds=rng.randrange(5, 90)))
        clock.shift(timedelta(hours=7))  # past every hold's deadline
        # Then a worker's retry of staging itself (a lease lost mid-batch): a third of the
        # events, whatever they ended as, are staged again.
        again = {e["source_event_id"] for e in events if rng.random() < 0.33}
        for round_ in range(2):
            for (erp, wms), safe in zip(pairs, (False, True), strict=True):
                with monkeypatch.context() as patch:
                    if safe:
                        patch.setattr(staging, "read_state", no_fast_path)
                    if round_:
                        SourceEvent.objects.filter(
                            workspace=erp.workspace, source_event_id__in=again
                        ).update(state=SourceEvent.State.RECEIVED, next_attempt_at=timezone.now())
                    for flow in (erp.flow, wms.flow):
                        staging.run_staging(flow_id=flow.pk)

    fast, safe = state_of(world.workspace), state_of(world.other)
    assert len(fast["events"]) > 100
    assert {e[1] for e in fast["events"]} >= {"ready", "failed", "skipped"}
    assert paths.count(True) > 10, "the fast path ran"
    snapshots = [
        set(e["data"]["quantities"])
        for e in events
        if e["event_type"] == "stock.changed" and e["data"]["mode"] == "snapshot"
    ]
    assert {"on_hand"} in snapshots, "an on-hand-only snapshot"
    assert any(q & {"allocated", "quarantined"} for q in snapshots), "a saleable to derive"
    negative = {
        e["source_event_id"]
        for e in events
        if e["event_type"] == "order.created"
        and "document_type" not in e["data"]
        and e["data"]["totals"]["grand_total"]["amount"].startswith("-")
    }
    assert negative and {e[7] for e in fast["events"] if e[0] in negative} == {"negative_order"}
    assert any(r[0].startswith("erp:order:CN-") for r in fast["refunds"]), "a credit note"
    assert any(r[0].startswith("RK-") for r in fast["refunds"]), "a refund joined by key"
    for name in fast:
        assert fast[name] == safe[name], name
