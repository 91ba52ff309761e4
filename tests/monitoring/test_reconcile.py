"""Reconciliation against the DotDigital sandbox (differences planted in it), the exceptions each
difference opens, one-click repair through the outbox, and the opt-out round trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from connectors.sources.base import SourceError
from exceptions_inbox.models import ExceptionGroup, Occurrence
from monitoring import reconcile
from monitoring.outbox import Suppression
from monitoring.pipeline.consent import pull_suppressions
from monitoring.pipeline.staging import run_staging
from monitoring.watch_models import OptOutWriteBack, ReconciliationDifference
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


class FakeSource:
    def __init__(self, error: SourceError | None = None) -> None:
        self.calls: list[tuple[str, datetime]] = []
        self.error = error

    def write_back_opt_out(self, connection: Any, email: str, opted_out_at: datetime) -> None:
        self.calls.append((email, opted_out_at))
        if self.error:
            raise self.error


def test_an_opt_out_made_in_dotdigital_is_written_back_to_the_source_with_both_times(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    now = datetime.now(UTC).replace(microsecond=0)
    engine.post("erp", [order_created("O1", "jo@example.com", "9.00", at=now, customer="J1")])
    engine.pump()
    engine.sandbox.plant(
        suppressions=[
            {
                "email": "jo@example.com",
                "reason": "Unsubscribed",
                "dateRemoved": "2025-03-04T09:15:00Z",
            }
        ]
    )
    pull_suppressions(engine.destination)
    assert Suppression.objects.filter(email="jo@example.com").exists()
    source = FakeSource()
    monkeypatch.setattr(reconcile, "get_adapter", lambda kind: source)

    assert reconcile.round_trip(engine.erp_flow) == (1, 1)
    assert reconcile.round_trip(engine.erp_flow) == (0, 0)  # once

    row = OptOutWriteBack.objects.get()
    assert source.calls == [("jo@example.com", datetime(2025, 3, 4, 9, 15, tzinfo=UTC))]
    assert row.state == "written" and row.written_at is not None
    assert row.opted_out_at == datetime(2025, 3, 4, 9, 15, tzinfo=UTC)
    web = Client()
    web.force_login(make_member(engine.workspace, "mkt", teams=["marketing"]))
    page = web.get(reverse("watch:opt-outs", args=[engine.workspace.slug])).content.decode()
    assert "jo@example.com" in page and "2025-03-04 09:15:00" in page


def test_a_failed_write_back_opens_consent_sync_failed(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    now = datetime.now(UTC).replace(microsecond=0)
    engine.post("erp", [order_created("O2", "lee@example.com", "9.00", at=now, customer="L1")])
    engine.pump()
    engine.sandbox.plant(suppressions=[{"email": "lee@example.com", "reason": "Unsubscribed"}])
    pull_suppressions(engine.destination)
    transient = FakeSource(SourceError("503 from the ERP"))
    monkeypatch.setattr(reconcile, "get_adapter", lambda kind: transient)
    reconcile.round_trip(engine.erp_flow)
    row = OptOutWriteBack.objects.get()
    assert row.state == "pending" and row.attempts == 1 and row.next_attempt_at > now
    assert not Occurrence.objects.filter(group__kind="consent_sync_failed").exists()

    permanent = FakeSource(SourceError("No opt-out webhook URL is set.", permanent=True))
    monkeypatch.setattr(reconcile, "get_adapter", lambda kind: permanent)
    OptOutWriteBack.objects.update(next_attempt_at=now)
    reconcile.round_trip(engine.erp_flow)
    row.refresh_from_db()
    assert row.state == "failed"
    occurrence = Occurrence.objects.get(group__kind="consent_sync_failed")
    assert occurrence.email == "lee@example.com" and occurrence.group.team.slug == "marketing"

    # Retry from the inbox once the source is fixed: written, and the occurrence clears.
    fixed = FakeSource()
    monkeypatch.setattr(reconcile, "get_adapter", lambda kind: fixed)
    reconcile.retry_write_backs([occurrence])
    row.refresh_from_db()
    assert row.state == "written"
    assert Occurrence.objects.get(pk=occurrence.pk).state == "cleared"
