"""Reconciliation against the DotDigital sandbox (differences planted in it), the exceptions each
difference opens, and one-click repair through the outbox, after which a new run finds nothing.
(Against the source's API: test_reconcile_source.py; the opt-out round trip:
test_optout_round_trip.py.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from exceptions_inbox.actions import apply_action
from exceptions_inbox.models import ExceptionGroup, Occurrence
from monitoring.models import ReconciliationDifference
from monitoring.pipeline.staging.run import run_staging
from monitoring.watch import reconcile
from tests.factories import make_member
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import ERP, Engine, event, iso

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def money(amount: str) -> dict[str, str]:
    return {"amount": amount, "currency": "GBP"}


def order_created(
    number: str, email: str, amount: str, *, at: datetime, customer: str
) -> dict[str, Any]:
    line = {
        "line_key": f"{number}-1",
        "sku": "HAT-1/RED",
        "sku_raw": "HAT-1/RED",
        "name": "Wool Beanie",
        "quantity": 1,
        "unit_price": money(amount),
        "line_subtotal": money(amount),
        "line_discount": money("0.00"),
        "line_total": money(amount),
    }
    totals = {"subtotal": money(amount), "discount": money("0.00"), "shipping": money("0.00"),
              "tax": money("0.00"), "grand_total": money(amount), "tax_inclusive": True}  # fmt: skip
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
            "lines": [line],
            "tax_inclusive": True,
            "is_guest": False,
            "shipping": {"method": "Tracked 48", "amount": money("0.00")},
            "totals": totals,
        },
        at=at,
        email=email,
        customer_id=customer,
        source_ref=number,
    )


def differences(run) -> set[tuple[str, str, str, str]]:
    return {(d.kind, d.subject, d.field, d.team_slug) for d in run.differences.all()}


def test_a_run_finds_the_planted_differences_opens_exceptions_and_repairs_them(engine: Engine):
    now = datetime.now(UTC).replace(microsecond=0)
    engine.post(
        "erp",
        [
            order_created(
                "R1", "jo@example.com", "50.00", at=now - timedelta(minutes=2), customer="C1"
            ),
            order_created(
                "R2", "sam@example.com", "19.99", at=now - timedelta(minutes=1), customer="C2"
            ),
        ],
    )
    engine.pump()
    clean = reconcile.run_reconciliation(engine.erp_flow, sample=0)
    assert (clean.state, clean.checked, clean.matched, clean.mismatched, clean.missing) == (
        "finished",
        4,
        4,
        0,
        0,
    )
    # Drift in DotDigital: a wrong LTV, a wrong ORDER_COUNT, a wrong order total.
    engine.sandbox.plant(
        contacts=[
            {"email": "jo@example.com", "dataFields": {"LTV": 10}},
            {"email": "sam@example.com", "dataFields": {"ORDER_COUNT": 7}},
        ],
        records=[
            {
                "collection": "Orders",
                "key": "R2",
                "email": "sam@example.com",
                "json": {"OrderNumber": "R2", "GrandTotal": 1.0},
            }
        ],  # fmt: skip
    )
    # And a customer Syncdesk knows that never reached DotDigital (staged, not delivered).
    engine.post("erp", [order_created("R3", "kim@example.com", "5.00", at=now, customer="C3")])
    run_staging()

    run = reconcile.run_reconciliation(engine.erp_flow, sample=0)

    assert differences(run) == {
        ("field", "jo@example.com", "LTV", "finance"),
        ("field", "sam@example.com", "ORDER_COUNT", "marketing"),
        ("record", "R2", "GrandTotal", "finance"),
        ("contact_missing", "kim@example.com", "", "marketing"),
        ("record_missing", "R3", "", "finance"),
    }
    assert (run.mismatched, run.missing) == (3, 2)
    groups = {
        g.subject_label: g.team.slug
        for g in ExceptionGroup.objects.filter(kind="reconciliation_difference")
    }
    assert groups == {
        "LTV differs": "finance",
        "ORDER_COUNT differs": "marketing",
        "GrandTotal differs": "finance",
        "Contact missing in DotDigital": "marketing",
        "Order record missing in DotDigital": "finance",
    }
    ltv = run.differences.get(field="LTV")
    assert (ltv.engine_value, ltv.dotdigital_value) == ("50", "10")

    # One click each: the engine's value goes out again through the outbox.
    finance = make_member(engine.workspace, "fin", teams=["finance"])
    web = Client()
    web.force_login(finance)
    response = web.post(reverse("watch:repair", args=[engine.workspace.slug, ltv.pk]))
    assert response.status_code == 302
    for diff in run.differences.exclude(pk=ltv.pk):
        assert reconcile.repair(diff, None)
    assert not reconcile.repair(ltv, None)  # already repaired
    engine.pump()

    assert engine.contact("jo@example.com")["dataFields"]["LTV"] == 50
    assert engine.contact("sam@example.com")["dataFields"]["ORDER_COUNT"] == 1
    assert engine.records("sam@example.com")["R2"]["GrandTotal"] == 19.99
    assert engine.contact("kim@example.com") is not None
    assert not Occurrence.objects.filter(
        state="open", group__kind="reconciliation_difference"
    ).exists()
    again = reconcile.run_reconciliation(engine.erp_flow, sample=0)
    assert (again.mismatched, again.missing, again.matched) == (0, 0, 6)


def test_a_sampled_run_compares_only_the_sample(engine: Engine):
    now = datetime.now(UTC).replace(microsecond=0)
    engine.post("erp", [order_created(f"S{i}", f"s{i}@example.com", "5.00", at=now, customer=f"S{i}")
                        for i in range(5)])  # fmt: skip
    engine.pump()
    run = reconcile.run_reconciliation(engine.erp_flow, sample=2)
    assert (run.sample, run.checked, run.matched, run.engine_contacts) == (2, 4, 4, 5)


def test_a_difference_not_found_again_is_cleared_from_the_inbox(engine: Engine):
    now = datetime.now(UTC).replace(microsecond=0)
    engine.post("erp", [order_created("C1", "ana@example.com", "20.00", at=now, customer="A1")])
    engine.pump()
    engine.sandbox.plant(contacts=[{"email": "ana@example.com", "dataFields": {"LTV": 1}}])
    reconcile.run_reconciliation(engine.erp_flow, sample=0)
    assert Occurrence.objects.filter(state="open").count() == 1
    engine.sandbox.plant(contacts=[{"email": "ana@example.com", "dataFields": {"LTV": 20}}])
    reconcile.run_reconciliation(engine.erp_flow, sample=0)
    assert Occurrence.objects.filter(state="open").count() == 0
    assert ReconciliationDifference.objects.count() == 1


def test_retrying_the_differences_in_the_inbox_repairs_them_and_the_next_run_is_clean(
    engine: Engine,
):
    now = datetime.now(UTC).replace(microsecond=0)
    engine.post(
        "erp",
        [
            order_created("Q1", "ada@example.com", "30.00", at=now, customer="Q1"),
            order_created("Q2", "bo@example.com", "12.50", at=now, customer="Q2"),
        ],
    )
    engine.pump()
    engine.sandbox.plant(
        contacts=[
            {"email": "ada@example.com", "dataFields": {"LTV": 3}},
            {"email": "bo@example.com", "dataFields": {"LTV": 0}},
        ]
    )
    run = reconcile.run_reconciliation(engine.erp_flow, sample=0)
    assert {(d.kind, d.subject, d.field) for d in run.differences.all()} == {
        ("field", "ada@example.com", "LTV"),
        ("field", "bo@example.com", "LTV"),
    }
    group = ExceptionGroup.objects.get(kind="reconciliation_difference")

    apply_action(group, "retry", make_member(engine.workspace, "fin", teams=["finance"]))
    assert run.differences.filter(repaired_at__isnull=True).count() == 0
    engine.pump()

    assert engine.contact("ada@example.com")["dataFields"]["LTV"] == 30
    assert engine.contact("bo@example.com")["dataFields"]["LTV"] == 12.5
    again = reconcile.run_reconciliation(engine.erp_flow, sample=0)
    assert (again.mismatched, again.missing, again.checked, again.matched) == (0, 0, 4, 4)
    group.refresh_from_db()
    assert group.state == ExceptionGroup.State.RESOLVED
