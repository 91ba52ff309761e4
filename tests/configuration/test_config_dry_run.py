"""The dry run plans an event with delivery's own code and keeps nothing: its operations are the
ones delivery then sends to DotDigital (the sandbox)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from monitoring.models import FieldMapping, Operation, OperationEvent, SourceEvent
from tests.factories import make_member
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import ERP, WMS, Engine, event, iso

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def order_created(number: str, email: str, amount: str, at: datetime) -> dict:
    money = {"amount": amount, "currency": "GBP"}
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
            "lines": [
                {
                    "line_key": f"{number}-1",
                    "sku": "HAT-1",
                    "sku_raw": "HAT-1",
                    "name": "Wool Beanie",
                    "quantity": 1,
                    "unit_price": money,
                    "line_subtotal": money,
                    "line_discount": {"amount": "0.00", "currency": "GBP"},
                    "line_total": money,
                }
            ],
            "tax_inclusive": True,
            "is_guest": False,
            "shipping": {"method": "Tracked 48", "amount": {"amount": "0.00", "currency": "GBP"}},
            "totals": {
                "subtotal": money,
                "discount": {"amount": "0.00", "currency": "GBP"},
                "shipping": {"amount": "0.00", "currency": "GBP"},
                "tax": {"amount": "0.00", "currency": "GBP"},
                "grand_total": money,
                "tax_inclusive": True,
            },
        },
        at=at,
        email=email,
        customer_id="C1",
        source_ref=number,
    )


def admin_of(engine: Engine) -> Client:
    client = Client()
    client.force_login(make_member(engine.workspace, "boss", role="admin"))
    return client


def test_the_dry_run_shows_the_operations_delivery_then_sends(engine: Engine):
    from monitoring.pipeline.staging.run import run_staging

    FieldMapping.objects.filter(flow=engine.erp_flow, target="FIRSTNAME").update(transform="upper")
    at = datetime.now(UTC) - timedelta(hours=1)
    engine.post("erp", [order_created("SO-1", "jo@example.com", "42.50", at)])
    run_staging()
    order_event = SourceEvent.objects.get(event_type="order.created")
    assert order_event.state == SourceEvent.State.READY

    client = admin_of(engine)
    url = f"/w/{engine.workspace.slug}/config/flows/{engine.erp_flow.pk}/dry-run/"
    r = client.post(url, {"event": order_event.pk})
    assert r.status_code == 200
    result = r.context["result"]
    planned = {op["key"]: (op["kind"], op["payload"]) for op in result.operations}
    assert "contact:jo@example.com" in planned and "insight:Orders:SO-1" in planned
    assert 'id="dry-run-operations"' in r.content.decode()
    # nothing kept: no operation, the event untouched
    assert not Operation.objects.exists()
    order_event.refresh_from_db()
    assert order_event.state == SourceEvent.State.READY and order_event.lease_owner == ""

    engine.pump()
    order_event.refresh_from_db()
    assert order_event.state == SourceEvent.State.DELIVERED
    sent = {
        link.operation.key: (link.operation.kind, link.operation.payload)
        for link in OperationEvent.objects.filter(event=order_event).select_related("operation")
    }
    assert sent == planned
    # and DotDigital holds what the dry run showed
    contact = engine.contact("jo@example.com")
    assert contact is not None
    fields = planned["contact:jo@example.com"][1]["fields"]
    assert contact["dataFields"]["LTV"] == fields["LTV"]["value"] == 42.5
    records = engine.records("jo@example.com")
    assert records["SO-1"] == planned["insight:Orders:SO-1"][1]["json"]


def test_a_draft_mapping_is_dry_run_before_it_is_saved(engine: Engine):
    from monitoring.pipeline.staging.run import run_staging

    at = datetime.now(UTC) - timedelta(hours=1)
    engine.post("erp", [order_created("SO-2", "ana@example.com", "10.00", at)])
    run_staging()
    order_event = SourceEvent.objects.get(event_type="order.created")
    client = admin_of(engine)
    url = f"/w/{engine.workspace.slug}/config/flows/{engine.erp_flow.pk}/mappings/"
    engine.sandbox.api.post(
        f"{engine.sandbox.url}/v2/data-fields",
        json={"name": "LTV_BAND", "type": "String", "visibility": "Private"},
    ).raise_for_status()
    r = client.post(
        url,
        {
            "action": "dry_run",
            "target": "LTV_BAND",
            "source_path": "customer.lifetime_value",
            "type": "string",
            "transform": "scale:0|map:10=Low;100=High",
            "enabled": "on",
            "event": order_event.pk,
        },
    )
    assert r.status_code == 200, r.context["form"].errors
    contact = next(
        op for op in r.context["result"].operations if op["key"] == "contact:ana@example.com"
    )
    assert contact["payload"]["fields"]["LTV_BAND"]["value"] == "Low"
    assert not FieldMapping.objects.filter(target="LTV_BAND").exists()
    assert not Operation.objects.exists()


def test_a_pasted_event_is_staged_and_planned_then_forgotten(engine: Engine):
    import json

    client = admin_of(engine)
    url = f"/w/{engine.workspace.slug}/config/flows/{engine.erp_flow.pk}/dry-run/"
    at = datetime.now(UTC) - timedelta(hours=1)
    pasted = order_created("SO-3", "li@example.com", "5.00", at)
    r = client.post(url, {"pasted": json.dumps(pasted)})
    assert r.status_code == 200
    keys = {op["key"] for op in r.context["result"].operations}
    assert {"contact:li@example.com", "insight:Orders:SO-3"} <= keys
    assert not SourceEvent.objects.exists() and not Operation.objects.exists()
    r = client.post(url, {"pasted": '{"schema": "sync.event/v1"}'})
    assert r.context["result"].problems
    r = client.post(url, {"pasted": "{not json"})
    assert r.status_code == 400 and "Not JSON" in r.context["dry_form"].errors["pasted"][0]


def test_an_event_no_longer_among_the_recent_ones_can_still_be_dry_run(engine: Engine):
    """On a busy flow the list drawn with the page has moved on by the time it is submitted."""
    from monitoring.pipeline.staging.run import run_staging

    at = datetime.now(UTC) - timedelta(hours=1)
    engine.post("erp", [order_created("SO-OLD", "old@example.com", "5.00", at)])
    engine.post(
        "erp",
        [order_created(f"SO-{n}", f"c{n}@example.com", "5.00", at) for n in range(25)],
    )
    wms_customer = {"customer_key": "demo-wms:wh-1:customer:W1", "source_updated_at": iso(at)}
    engine.post(
        "wms", [event(WMS, "customer.upserted", "customer:W1", "customer:W1:1", wms_customer)]
    )
    run_staging()
    oldest = SourceEvent.objects.get(source_event_id="demo-erp:order:SO-OLD:created")
    client = admin_of(engine)
    url = f"/w/{engine.workspace.slug}/config/flows/{engine.erp_flow.pk}/dry-run/"
    page = client.get(url).content.decode()
    assert f'value="{oldest.pk}"' not in page  # no longer listed

    r = client.post(url, {"event": oldest.pk})
    assert r.status_code == 200, r.context["dry_form"].errors
    assert "insight:Orders:SO-OLD" in {op["key"] for op in r.context["result"].operations}
    assert f'<option value="{oldest.pk}" selected>' in r.content.decode()

    other_flows = SourceEvent.objects.exclude(flow=engine.erp_flow).first()
    assert other_flows is not None
    r = client.post(url, {"event": other_flows.pk})
    assert r.status_code == 400 and "event" in r.context["dry_form"].errors
