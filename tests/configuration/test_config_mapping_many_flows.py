"""A data field written by several flows to one DotDigital account is changed from any one flow's
page for all of them: one save, one audit row per flow changed, one dry run; then delivery writes
the transformed value (to the sandbox, over HTTP)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from django.test import Client

from accounts.models import ConfigChange
from monitoring.models import FieldMapping, SourceEvent
from tests.factories import make_member
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import ERP, WMS, Engine, event, iso

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def customer(source: tuple[str, str], number: int, email: str, first_name: str) -> dict[str, Any]:
    system = source[0]
    return event(
        source,
        "customer.upserted",
        f"customer:C{number}",
        f"customer:C{number}:1",
        {
            "customer_key": f"{system}:{source[1]}:customer:C{number}",
            "first_name": first_name,
            "last_name": "Smith",
            "source_updated_at": iso(datetime.now(UTC)),
        },
        email=email,
        customer_id=f"C{number}",
    )


def admin_of(engine: Engine) -> Client:
    client = Client()
    client.force_login(make_member(engine.workspace, "boss", role="admin"))
    return client


def firstname_form(engine: Engine, **extra: Any) -> dict[str, Any]:
    return {
        "target": "FIRSTNAME",
        "source_path": "customer.first_name",
        "type": "string",
        "transform": "trim|upper",
        "enabled": "on",
        **extra,
    }


def test_changing_a_mapping_several_flows_write_changes_all_of_them_and_the_sandbox_holds_it(
    engine: Engine,
):
    from monitoring.pipeline.staging.run import run_staging

    engine.post("erp", [customer(ERP, 1, "jo@example.com", " jo ")])
    run_staging()
    erp_event = SourceEvent.objects.get(flow=engine.erp_flow)
    client = admin_of(engine)
    mine = FieldMapping.objects.get(flow=engine.erp_flow, target="FIRSTNAME")
    url = f"/w/{engine.workspace.slug}/config/flows/{engine.erp_flow.pk}/mappings/{mine.pk}/"

    listing = client.get(url.rsplit("/", 2)[0] + "/").content.decode()
    assert "also written by 1 other flow: an edit changes them all" in listing
    page = client.get(url).content.decode()
    assert "Change FIRSTNAME for all 2 flows that write it" in page
    assert "“Demo WMS → DotDigital” also writes FIRSTNAME" in page

    # Without the tick: refused, and the refusal names the way out.
    refused = client.post(url, firstname_form(engine))
    assert refused.status_code == 400
    assert "Tick “Change FIRSTNAME for all 2 flows”" in refused.context["form"].errors["target"][0]

    # One dry run, on this flow's event, says which other flows the save changes.
    dry = client.post(
        url, firstname_form(engine, for_all_flows="on", action="dry_run", event=erp_event.pk)
    )
    assert dry.status_code == 200, dry.context["form"].errors
    contact = next(op for op in dry.context["result"].operations if op["kind"] == "contact")
    assert contact["payload"]["fields"]["FIRSTNAME"]["value"] == "JO"
    assert dry.context["result"].also == ["Demo WMS → DotDigital"]
    assert "same change for 1 other flow: Demo WMS → DotDigital" in dry.content.decode()
    assert FieldMapping.objects.get(pk=mine.pk).transform == ""

    saved = client.post(url, firstname_form(engine, for_all_flows="on"))
    assert saved.status_code == 302, saved.context["form"].errors
    rows = FieldMapping.objects.filter(target="FIRSTNAME").select_related("flow")
    assert {(m.flow.name, m.transform) for m in rows} == {
        ("Demo ERP → DotDigital", "trim|upper"),
        ("Demo WMS → DotDigital", "trim|upper"),
    }
    audit_rows = ConfigChange.objects.filter(object_type="monitoring.fieldmapping")
    assert sorted(int(c.object_id) for c in audit_rows) == sorted(m.pk for m in rows)
    for change in audit_rows:
        assert {"field": "transform", "before": "", "after": "trim|upper"} in change.changes

    # Delivery now writes the transformed value, from either flow.
    engine.post("wms", [customer(WMS, 2, "ana@example.com", "ana ")])
    engine.pump()
    for email, expected in (("jo@example.com", "JO"), ("ana@example.com", "ANA")):
        held = engine.contact(email)
        assert held is not None
        assert held["dataFields"]["FIRSTNAME"] == expected


def test_a_flow_writing_the_field_already_the_same_way_gets_no_audit_row(engine: Engine):
    FieldMapping.objects.filter(flow=engine.wms_flow, target="FIRSTNAME").update(transform="upper")
    mine = FieldMapping.objects.get(flow=engine.erp_flow, target="FIRSTNAME")
    url = f"/w/{engine.workspace.slug}/config/flows/{engine.erp_flow.pk}/mappings/{mine.pk}/"
    r = admin_of(engine).post(url, firstname_form(engine, transform="upper"))
    assert r.status_code == 302, r.context["form"].errors
    changed = ConfigChange.objects.filter(object_type="monitoring.fieldmapping")
    assert [c.object_id for c in changed] == [str(mine.pk)]
