"""Reconciliation against the source's own API: a flow whose source can be polled (Brightpearl,
served by a fake Brightpearl on 127.0.0.1) has its orders read through the connector and compared
with the engine's state; an order the source has that Syncdesk never received and a total that
differs are differences of their own, opening exceptions, repaired by taking the source's events
in, after which DotDigital (the sandbox) holds the source's values and a new run finds nothing."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from exceptions_inbox.models import ExceptionGroup, Occurrence
from monitoring.models import Flow, ReconciliationDifference, ReconciliationRun, SourceEvent
from monitoring.pipeline.sources import backfill_range
from monitoring.tasks import reconcile_flow
from monitoring.watch import reconcile
from tests.connectors.sources.fakes.brightpearl import FakeBrightpearl
from tests.connectors.sources.fakes.mintsoft import FakeMintsoft
from tests.connectors.sources.fakes.mintsoft import load as mintsoft_load
from tests.factories import make_connection, make_member
from tests.monitoring.brightpearl_support import *  # noqa: F403
from tests.monitoring.brightpearl_support import bp_time, sales_order, set_price
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import Engine

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def kinds(run) -> set[tuple[str, str, str, str]]:
    return {(d.kind, d.subject, d.field, d.team_slug) for d in run.differences.all()}


def test_a_run_finds_an_order_never_received_and_a_total_that_differs_and_repairs_both(
    shop: Engine, fake: FakeBrightpearl
):
    now = datetime.now(UTC).replace(microsecond=0)
    fake.orders[101] = sales_order(101, "jo@example.com", created=now - timedelta(hours=3))
    fake.orders[102] = sales_order(102, "sam@example.com", created=now - timedelta(hours=2))
    assert backfill_range(shop.erp_flow, now - timedelta(days=1), now) >= 2
    shop.pump()
    assert shop.records("sam@example.com")["102"]["GrandTotal"] == 10

    clean = reconcile.run_reconciliation(shop.erp_flow, sample=0)
    assert (clean.state, clean.source_orders, clean.source_error) == ("finished", 2, "")
    assert (clean.mismatched, clean.missing) == (0, 0)
    assert clean.checked == clean.matched == 6  # 2 contacts and 2 records in DD, 2 source orders

    # The source moves on without telling Syncdesk: a new order whose webhook was lost, and an
    # order whose total changed (edited in Brightpearl, the notification never sent).
    fake.orders[103] = sales_order(103, "kim@example.com", created=now - timedelta(hours=1))
    set_price(fake.orders[102], "20.00")
    fake.orders[102]["updatedOn"] = bp_time(now - timedelta(minutes=30))

    result = reconcile_flow(shop.erp_flow.pk)  # the nightly task
    run = ReconciliationRun.objects.get(pk=result["run"])

    assert run.source_orders == 3
    assert kinds(run) == {
        ("source_missing", "103", "", "ops"),
        ("source_total", "102", "grand_total", "finance"),
    }
    assert (run.mismatched, run.missing) == (1, 1)
    total = run.differences.get(kind="source_total")
    assert (total.engine_value, total.source_value) == ("10", "20")
    groups = {
        g.subject_label: g.team.slug
        for g in ExceptionGroup.objects.filter(kind="reconciliation_difference")
    }
    assert groups == {
        "Order in the source never received": "ops",
        "Order total differs from the source": "finance",
    }
    message = Occurrence.objects.get(event_key=total.event_key).message
    assert message == "102: Syncdesk has 10, Brightpearl has 20"

    # One click each: the source's events come in through the engine's intake.
    ops = make_member(shop.workspace, "opsy", teams=["ops"])
    web = Client()
    web.force_login(ops)
    missing = run.differences.get(kind="source_missing")
    assert web.post(reverse("watch:repair", args=[shop.workspace.slug, total.pk])).status_code == (
        403
    )  # money is finance's
    response = web.post(reverse("watch:repair", args=[shop.workspace.slug, missing.pk]))
    assert response.status_code == 302
    assert reconcile.repair(total, None)
    assert not reconcile.repair(missing, None)  # already repaired
    assert SourceEvent.objects.filter(entity_key=missing.source_events[0]["entity"]["key"])
    shop.pump()

    assert shop.records("kim@example.com")["103"]["GrandTotal"] == 10
    assert shop.records("sam@example.com")["102"]["GrandTotal"] == 20
    assert not Occurrence.objects.filter(
        state="open", group__kind="reconciliation_difference"
    ).exists()
    again = reconcile.run_reconciliation(shop.erp_flow, sample=0)
    assert (again.source_orders, again.mismatched, again.missing) == (3, 0, 0)
    assert again.checked == again.matched == 9


def test_a_repair_that_would_bring_nothing_new_is_refused(shop: Engine, fake: FakeBrightpearl):
    now = datetime.now(UTC).replace(microsecond=0)
    fake.orders[201] = sales_order(201, "ann@example.com", created=now - timedelta(hours=2))
    run = reconcile.run_reconciliation(shop.erp_flow, sample=0)
    [missing] = run.differences.all()
    assert missing.kind == "source_missing"
    backfill_range(shop.erp_flow, now - timedelta(days=1), now)  # arrived meanwhile
    assert not reconcile.repair(missing, None)
    missing.refresh_from_db()
    assert missing.repaired_at is None


def test_an_order_received_but_still_on_its_way_is_not_a_difference(
    shop: Engine, fake: FakeBrightpearl
):
    now = datetime.now(UTC).replace(microsecond=0)
    fake.orders[301] = sales_order(301, "lee@example.com", created=now - timedelta(hours=2))
    backfill_range(shop.erp_flow, now - timedelta(days=1), now)  # stored, not staged yet
    run = reconcile.run_reconciliation(shop.erp_flow, sample=0)
    assert (run.source_orders, run.mismatched, run.missing) == (1, 0, 0)


def test_orders_younger_than_the_settling_margin_or_older_than_the_window_are_not_read(
    shop: Engine, fake: FakeBrightpearl
):
    now = datetime.now(UTC).replace(microsecond=0)
    fake.orders[401] = sales_order(401, "new@example.com", created=now - timedelta(minutes=5))
    fake.orders[402] = sales_order(402, "old@example.com", created=now - timedelta(days=9))
    run = reconcile.run_reconciliation(shop.erp_flow, sample=0)
    assert (run.source_orders, run.missing) == (0, 0)
    search = next(r for r in fake.api_requests() if r.path.endswith("order-search"))
    start, end = search.query["createdOn"].split("/")
    at = run.started_at.replace(microsecond=0)
    assert (run.source_window_start, run.source_window_end) == (
        at - timedelta(days=7),
        at - timedelta(minutes=15),
    )
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    assert (start, end) == (
        run.source_window_start.strftime(fmt),
        run.source_window_end.strftime(fmt),
    )


def test_a_source_that_cannot_be_read_is_noted_and_dotdigital_is_still_compared(
    shop: Engine, fake: FakeBrightpearl
):
    fake.account_token = "rotated"  # Syncdesk's credentials no longer work
    run = reconcile.run_reconciliation(shop.erp_flow, sample=0)
    assert run.state == "finished"
    assert run.source_orders is None
    assert run.source_error.startswith("Brightpearl: ")
    web = Client()
    web.force_login(make_member(shop.workspace, "fin", teams=["finance"]))
    page = web.get(reverse("watch:run", args=[shop.workspace.slug, run.pk])).content.decode()
    assert "could not be read" in page
    runs = web.get(reverse("watch:runs", args=[shop.workspace.slug])).content.decode()
    assert "Source orders read" in runs and ">failed</span>" in runs


def test_a_push_only_source_is_not_read(engine: Engine):
    run = reconcile.run_reconciliation(engine.erp_flow, sample=0)
    assert (run.source_orders, run.source_error) == (None, "")
    assert not ReconciliationDifference.objects.exists()


def test_the_run_page_shows_the_sources_value_beside_syncdesks(shop: Engine, fake: FakeBrightpearl):
    now = datetime.now(UTC).replace(microsecond=0)
    fake.orders[501] = sales_order(501, "eve@example.com", created=now - timedelta(hours=2))
    run = reconcile.run_reconciliation(shop.erp_flow, sample=0)
    web = Client()
    web.force_login(make_member(shop.workspace, "opsy", teams=["ops"]))
    page = web.get(reverse("watch:run", args=[shop.workspace.slug, run.pk])).content.decode()
    assert "Order in the source never received" in page
    assert "1 order read from Brightpearl" in page
    assert "Repair" in page


def test_a_sampled_run_compares_a_sample_of_the_sources_orders(shop: Engine, fake: FakeBrightpearl):
    now = datetime.now(UTC).replace(microsecond=0)
    for i in range(5):
        fake.orders[600 + i] = sales_order(
            600 + i, f"s{i}@example.com", created=now - timedelta(hours=1)
        )
    run = reconcile.run_reconciliation(shop.erp_flow, sample=2)
    assert (run.source_orders, run.checked, run.missing) == (5, 2, 2)
    assert {d.kind for d in run.differences.all()} == {"source_missing"}


def test_a_mintsoft_source_is_read_page_by_page_through_its_connector(shop: Engine, dd: Any):
    """The same comparison through another connector (a fake Mintsoft, two orders a page)."""
    from zoneinfo import ZoneInfo

    mintsoft = FakeMintsoft()
    london = datetime.now(ZoneInfo("Europe/London")) - timedelta(hours=2)
    recorded = mintsoft_load("order-list-response.json")[0]
    for i in range(5):
        mintsoft.orders.append(
            {
                **copy.deepcopy(recorded),
                "ID": 3000 + i,
                "OrderNumber": f"MS-{3000 + i}",
                "Email": f"m{i}@example.com",
                "OrderDate": london.replace(tzinfo=None).isoformat(),
                "LastUpdated": london.replace(tzinfo=None).isoformat(),
            }
        )
    mintsoft.start()
    try:
        source = make_connection(
            shop.workspace,
            "mintsoft",
            name="Mintsoft",
            options={"base_url": mintsoft.url, "client_id": 3, "page_size": 2},
            credentials={"api_key": mintsoft.static_key},
        )
        flow = Flow.objects.create(
            workspace=shop.workspace,
            name="Mintsoft → DotDigital",
            source=source,
            destination=shop.destination,
        )
        run = reconcile.run_reconciliation(flow, sample=0)
    finally:
        mintsoft.stop()
    assert (run.source_orders, run.source_error) == (5, "")
    assert {(d.kind, d.subject) for d in run.differences.all()} == {
        ("source_missing", f"MS-{3000 + i}") for i in range(5)
    }
    assert len(mintsoft.requests_to("/api/Order/List")) == 3
