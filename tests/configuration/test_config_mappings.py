"""Field mappings: one data field, one mapping; the type checked against the DotDigital account;
a missing data field created from the page; transforms; every change audited."""

from __future__ import annotations

from decimal import Decimal

import pytest

from accounts.models import ConfigChange
from monitoring.models import FieldMapping, Flow
from monitoring.pipeline import transforms
from monitoring.pipeline.flows import install_defaults
from monitoring.pipeline.mapping import wire_value
from tests.factories import make_connection


@pytest.fixture
def flow(world, sandbox):
    dd = make_connection(
        world.workspace,
        "dotdigital",
        name="DotDigital",
        credentials={"api_user": sandbox.auth[0], "password": sandbox.auth[1]},
        options={"api_endpoint": sandbox.url, "discovery_url": sandbox.url},
    )
    source = make_connection(world.workspace, "canonical", name="ERP")
    flow = Flow.objects.create(workspace=world.workspace, name="ERP", source=source, destination=dd)
    install_defaults(flow)
    return flow


def url(world, flow) -> str:
    return f"/w/{world.workspace.slug}/config/flows/{flow.pk}/mappings/"


def post(client, world, flow, **data):
    body = {"source_path": "customer.first_name", "type": "string", "enabled": "on", **data}
    return client.post(url(world, flow), body)


def test_a_second_mapping_to_a_field_one_already_writes_is_refused_on_the_field(
    admin_client, world, flow
):
    r = post(admin_client, world, flow, target="firstname", source_path="customer.last_name")
    assert r.status_code == 400
    error = r.context["form"].errors["target"][0]
    assert "FIRSTNAME is already written" in error
    assert 'id="id_target_error"' in r.content.decode()
    assert FieldMapping.objects.filter(flow=flow, target="FIRSTNAME").count() == 1


def test_another_flow_writing_the_same_field_differently_to_the_same_account_is_refused(
    admin_client, world, flow
):
    wms = Flow.objects.create(
        workspace=world.workspace,
        name="WMS",
        source=make_connection(world.workspace, "canonical"),
        destination=flow.destination,
    )
    r = post(admin_client, world, wms, target="FIRSTNAME", source_path="customer.last_name")
    assert r.status_code == 400
    assert "already written by the flow “ERP”" in r.context["form"].errors["target"][0]


def test_an_insight_collection_is_not_a_data_field(admin_client, world, flow):
    r = post(admin_client, world, flow, target="Orders")
    assert "insight collection" in r.context["form"].errors["target"][0]


def test_the_type_is_checked_against_the_account(admin_client, world, flow, sandbox):
    sandbox.api.post(
        f"{sandbox.url}/v2/data-fields",
        json={"name": "TIER", "type": "Numeric", "visibility": "Private"},
    ).raise_for_status()
    r = post(admin_client, world, flow, target="TIER", type="string")
    assert r.status_code == 400
    assert "TIER is a Numeric data field in DotDigital" in r.context["form"].errors["type"][0]


def test_a_missing_data_field_is_named_on_the_field_and_created_from_the_page(
    admin_client, world, flow
):
    r = post(admin_client, world, flow, target="LOYALTY_TIER")
    assert "not a data field in the DotDigital account" in r.context["form"].errors["target"][0]
    assert "Create LOYALTY_TIER in DotDigital" in r.content.decode()
    r = admin_client.post(
        f"/w/{world.workspace.slug}/config/flows/{flow.pk}/data-fields/",
        {"name": "LOYALTY_TIER", "type": "string"},
    )
    assert r.status_code == 302
    r = post(admin_client, world, flow, target="LOYALTY_TIER", transform="trim|upper")
    assert r.status_code == 302
    mapping = FieldMapping.objects.get(flow=flow, target="LOYALTY_TIER")
    assert mapping.transform == "trim|upper"
    assert ConfigChange.objects.filter(
        object_label="DotDigital data field LOYALTY_TIER", action="created"
    ).exists()


def test_a_source_of_another_type_or_a_bad_transform_is_reported_on_its_field(
    admin_client, world, flow
):
    r = post(
        admin_client,
        world,
        flow,
        target="LTV_X",
        source_path="customer.lifetime_value",
        type="date",
    )
    assert "cannot be sent as date" in r.context["form"].errors["type"][0]
    r = post(admin_client, world, flow, target="FIRSTNAME", transform="shout")
    assert "not a transform" in r.context["form"].errors["transform"][0]


def test_an_edit_writes_an_audit_row_with_before_and_after(admin_client, world, flow):
    mapping = FieldMapping.objects.get(flow=flow, target="LASTNAME")
    r = admin_client.post(
        f"{url(world, flow)}{mapping.pk}/",
        {
            "target": "LASTNAME",
            "source_path": "customer.last_name",
            "type": "string",
            "transform": "upper",
        },
    )
    assert r.status_code == 302, r.content
    change = ConfigChange.objects.get(
        object_type="monitoring.fieldmapping", object_id=str(mapping.pk)
    )
    assert {"field": "transform", "before": "", "after": "upper"} in change.changes
    assert {"field": "enabled", "before": True, "after": False} in change.changes
    page = admin_client.get(f"{url(world, flow)}{mapping.pk}/").content.decode()
    assert "<ins>upper</ins>" in page
    audit = admin_client.get(f"/w/{world.workspace.slug}/config/audit/").content.decode()
    assert "<ins>upper</ins>" in audit


def test_a_member_sees_the_mappings_but_cannot_change_them(member_client, world, flow):
    r = member_client.get(url(world, flow))
    assert r.status_code == 200 and "FIRSTNAME" in r.content.decode()
    assert 'id="mapping-form"' not in r.content.decode()
    assert post(member_client, world, flow, target="X").status_code == 403


def test_transforms_trim_case_dates_scale_and_value_maps():
    from datetime import UTC, datetime

    assert wire_value("  jo ", "string", "trim|title") == "Jo"
    assert (
        wire_value(datetime(2024, 5, 3, 10, tzinfo=UTC), "string", "date:%d/%m/%Y") == "03/05/2024"
    )
    assert wire_value(datetime(2024, 5, 3, 10, tzinfo=UTC), "date", "date_only") == "2024-05-03"
    assert wire_value(Decimal("12.345"), "numeric", "scale:2") == 12.35
    assert wire_value(Decimal("2"), "string", "map:1=Bronze;2=Silver;3=Gold") == "Silver"
    assert wire_value("upper", "string", "upper") == "UPPER"
    with pytest.raises(transforms.TransformError):
        transforms.parse("scale:x")
