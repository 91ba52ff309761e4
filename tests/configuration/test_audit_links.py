"""Every history row on the audit page links to its object's page (or, once the object is gone,
to the page of its kind)."""

from __future__ import annotations

import re

from accounts import audit
from accounts.models import ConfigChange
from exceptions_inbox.models import RoutingRule
from monitoring.configuration.services import DOTDIGITAL_FIELD, DOTDIGITAL_LIST
from monitoring.models import DirectEnrolment, FieldMapping, Flow, Schedule, SkuAlias
from tests.factories import make_connection

CREATED = ConfigChange.Action.CREATED


def links(html: str) -> dict[str, str]:
    """Object label → link target, for the rows of the audit page."""
    return {
        label: href
        for href, label in re.findall(r'<a href="([^"]+)" class="audit-object">([^<]+)</a>', html)
    }


def test_every_configuration_object_type_links_to_its_page(admin_client, world):
    ws = world.workspace
    w = f"/w/{ws.slug}/config"
    dd = make_connection(ws, "dotdigital", name="DD account")
    source = make_connection(ws, "canonical", name="ERP feed")
    flow = Flow.objects.create(workspace=ws, name="ERP flow", source=source, destination=dd)
    mapping = FieldMapping.objects.create(flow=flow, target="TIER", source_path="customer.phone")
    alias = SkuAlias.objects.create(workspace=ws, alias_key="hat 1", sku="HAT-1")
    schedule = Schedule.objects.create(
        workspace=ws, name="nightly poll", task="monitoring.poll_flow", every_seconds=600
    )
    rule = RoutingRule.objects.create(
        workspace=ws, kind="sku_mapping_gap", team=ws.teams.get(slug="ops")
    )
    enrolment = DirectEnrolment.objects.create(
        workspace=ws, destination=dd, program_id=7, event_type="order.created"
    )
    team = ws.teams.get(slug="ops")
    for obj in (dd, flow, mapping, alias, schedule, rule, enrolment, team):
        audit.record_change(ws, world.admin, obj, CREATED)
    audit.record_change(
        ws,
        world.admin,
        "DotDigital list VIP",
        CREATED,
        object_type=DOTDIGITAL_LIST,
        object_id=dd.pk,
    )
    audit.record_change(
        ws,
        world.admin,
        "DotDigital data field TIER",
        CREATED,
        object_type=DOTDIGITAL_FIELD,
        object_id=flow.pk,
    )

    found = links(admin_client.get(f"{w}/audit/").content.decode())

    assert found == {
        str(dd): f"{w}/connections/{dd.pk}/",
        "ERP flow": f"{w}/flows/{flow.pk}/",
        str(mapping): f"{w}/flows/{flow.pk}/mappings/{mapping.pk}/",
        str(alias): f"{w}/sku-aliases/",
        "nightly poll": f"{w}/schedules/{schedule.pk}/",
        str(rule): f"{w}/routing/",
        str(enrolment): f"{w}/lists/#destination-{dd.pk}",
        str(team): f"/w/{ws.slug}/config/teams/",
        "DotDigital list VIP": f"{w}/lists/#destination-{dd.pk}",
        "DotDigital data field TIER": f"{w}/flows/{flow.pk}/mappings/",
    }
    # Every row of the page is linked.
    assert len(found) == ConfigChange.objects.filter(workspace=ws).count()


def test_a_deleted_objects_rows_link_to_the_page_of_its_kind(admin_client, world):
    ws = world.workspace
    w = f"/w/{ws.slug}/config"
    source = make_connection(ws, "canonical", name="WMS feed")
    flow = Flow.objects.create(workspace=ws, name="WMS flow", source=source)
    admin_client.post(
        f"{w}/schedules/",
        {
            "name": "poll wms",
            "flow": flow.pk,
            "task": "monitoring.poll_flow",
            "every_seconds": 120,
            "queue": "bulk",
            "enabled": "on",
        },
    )
    assert admin_client.post(f"{w}/flows/{flow.pk}/delete/").status_code == 302

    found = links(admin_client.get(f"{w}/audit/").content.decode())

    assert found == {"WMS flow": f"{w}/flows/", "poll wms": f"{w}/schedules/"}
