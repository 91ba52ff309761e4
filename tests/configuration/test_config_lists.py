"""Lists and programs per flow: which DotDigital lists carry recent buyers (and for how long),
dispatched today and back in stock, chosen from the account's lists or created from the page;
delivery keeps the lists the flow names (today's names and periods are a new flow's defaults)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from accounts.models import ConfigChange
from monitoring.models import Flow, ListMembership
from monitoring.pipeline.mapping import LIST_RULES, list_rules
from tests.configuration.test_config_dry_run import admin_of, order_created
from tests.factories import make_connection
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import Engine

UNREACHABLE = {"api_endpoint": "http://127.0.0.1:9", "discovery_url": "http://127.0.0.1:9"}


def list_names(engine: Engine, email: str) -> set[str]:
    state = engine.sandbox.state()
    names = {lst["id"]: lst["name"] for lst in state["lists"]}
    contact = next(c for c in state["contacts"] if c["identifiers"].get("email") == email)
    return {names[item["id"]] for item in contact.get("lists", [])}


def account_lists(engine: Engine) -> set[str]:
    return {lst["name"] for lst in engine.sandbox.state()["lists"]}


def test_a_new_flow_keeps_todays_lists_and_periods(world):
    source = make_connection(world.workspace, "canonical", name="ERP")
    flow = Flow.objects.create(workspace=world.workspace, name="ERP", source=source)
    assert list_rules(flow) == LIST_RULES
    assert list_rules(None) == LIST_RULES


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_the_lists_chosen_on_the_page_are_created_and_kept_by_delivery(engine: Engine):
    client = admin_of(engine)
    ws, flow = engine.workspace.slug, engine.erp_flow
    page = client.get(f"/w/{ws}/config/lists/")
    assert page.status_code == 200
    assert f'id="flow-{flow.pk}"' in page.content.decode()

    r = client.post(
        f"/w/{ws}/config/flows/{flow.pk}/lists/",
        {
            "dispatched_list": "",
            "dispatched_keep_hours": 24,
            "recent_buyers_list": "__new__",
            "recent_buyers_list_new": "VIP buyers (60 days)",
            "recent_buyer_days": 60,
            "back_in_stock_list": "__new__",
            "back_in_stock_list_new": "Back in stock alerts",
        },
    )
    assert r.status_code == 302, r.context["destinations"][0]["flows"][0]["form"].errors
    assert {"VIP buyers (60 days)", "Back in stock alerts"} <= account_lists(engine)
    flow.refresh_from_db()
    assert (flow.dispatched_list, flow.recent_buyers_list, flow.recent_buyer_days) == (
        "",
        "VIP buyers (60 days)",
        60,
    )
    change = ConfigChange.objects.get(object_type="monitoring.flow", note="Lists")
    assert {
        "field": "recent_buyer_days",
        "before": 30,
        "after": 60,
    } in change.changes

    at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    engine.post("erp", [order_created("SO-7", "vip@example.com", "80.00", at)])
    engine.pump()

    # The recent-buyers list the flow names, for its period; no default list, and nobody is put
    # on the back-in-stock list (no source says who asked to be told).
    assert list_names(engine, "vip@example.com") == {"VIP buyers (60 days)"}
    membership = ListMembership.objects.get(email="vip@example.com", member=True)
    assert membership.list_name == "VIP buyers (60 days)"
    assert membership.expires_at == at + timedelta(days=60)
    assert not ListMembership.objects.filter(list_name="Back in stock alerts").exists()


def test_a_list_another_flow_keeps_for_another_period_is_refused_on_the_field(admin_client, world):
    destination = make_connection(
        world.workspace, "dotdigital", name="DotDigital", options=UNREACHABLE
    )
    erp = make_connection(world.workspace, "canonical", name="ERP")
    wms = make_connection(world.workspace, "canonical", name="WMS")
    Flow.objects.create(workspace=world.workspace, name="ERP", source=erp, destination=destination)
    flow = Flow.objects.create(
        workspace=world.workspace, name="WMS", source=wms, destination=destination
    )
    r = admin_client.post(
        f"/w/{world.workspace.slug}/config/flows/{flow.pk}/lists/",
        {
            # The account cannot be read: names are typed.
            "dispatched_list": "Syncdesk - Dispatched today",
            "dispatched_keep_hours": 24,
            "recent_buyers_list": "Syncdesk - Recent buyers (30 days)",
            "recent_buyer_days": 45,
            "back_in_stock_list": "Syncdesk - Dispatched today",
        },
    )
    assert r.status_code == 400
    form = r.context["destinations"][0]["flows"][1]["form"]
    assert "The flow “ERP” keeps" in form.errors["recent_buyers_list"][0]
    assert "one list, one use" in form.errors["back_in_stock_list"][0]
    assert "dispatched_list" not in form.errors  # the same list, use and period: no conflict
    assert f'id="id_lists{flow.pk}_recent_buyers_list_error"' in r.content.decode()
    flow.refresh_from_db()
    assert flow.recent_buyer_days == 30


def test_only_admins_change_a_flows_lists(member_client, world):
    source = make_connection(world.workspace, "canonical", name="ERP")
    flow = Flow.objects.create(workspace=world.workspace, name="ERP", source=source)
    r = member_client.post(
        f"/w/{world.workspace.slug}/config/flows/{flow.pk}/lists/", {"recent_buyer_days": 5}
    )
    assert r.status_code == 403
