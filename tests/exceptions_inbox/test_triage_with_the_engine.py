"""Groups a person fixes once, and a resolve that stays resolved, through the real engine: events
posted to its public webhook, staged by it, acted on through the inbox's views."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from exceptions_inbox.models import Activity, ExceptionGroup, Occurrence
from monitoring.models import OptOutWriteBack, SourceEvent
from monitoring.pipeline.claims import claim_ids
from monitoring.pipeline.staging.run import LEASE_SECONDS, stage_batch
from monitoring.watch import reconcile
from tests.exceptions_inbox.engine_support import load_catalogue, order, post_orders
from tests.factories import make_member
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import Engine, event
from tests.monitoring.test_optout_round_trip import (
    a_customer_of,
    opted_out_in_dotdigital,
    set_opt_out_webhook,
)

pytestmark = pytest.mark.django_db(transaction=True)

State = SourceEvent.State


@pytest.fixture
def hooks() -> Iterator[None]:
    """The engine's own hooks (overrides the package's autouse stand-ins)."""
    yield


@pytest.fixture
def ops(engine: Engine) -> Client:
    web = Client()
    web.force_login(make_member(engine.workspace, "ops-person", teams=["ops"]))
    return web


@pytest.fixture
def finance(engine: Engine) -> Client:
    web = Client()
    web.force_login(make_member(engine.workspace, "finance-person", teams=["finance"]))
    return web


def act(web: Client, group: ExceptionGroup, **data: Any) -> str:
    url = reverse(
        "exceptions_inbox:group-action", kwargs={"ws": group.workspace.slug, "pk": group.pk}
    )
    response = web.post(url, data, follow=True)
    assert response.status_code == 200
    return response.content.decode()


def emailless_order(number: str, at: datetime) -> dict[str, Any]:
    """An in-store order: a phone number, no email."""
    posted = order(number, "someone@example.com", at=at)
    posted["identity"] = {"quality": "phone_only", "phone_e164": "+447700900123"}
    return posted


def post_emailless(engine: Engine, count: int, *, first: int = 1000) -> list[str]:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    numbers = [f"IS{first + n}" for n in range(count)]
    engine.post(
        "erp",
        [emailless_order(n, start + timedelta(minutes=i)) for i, n in enumerate(numbers)],
    )
    engine.pump()
    return numbers


def test_thirty_orders_without_an_email_from_one_flow_make_one_group_listing_thirty_orders(
    engine: Engine, ops: Client
):
    numbers = post_emailless(engine, 30)

    group = ExceptionGroup.objects.get()
    assert group.kind == "contact_without_email"
    assert (group.flow_key, group.open_count, group.occurrence_count) == (
        engine.erp_flow.key,
        30,
        30,
    )
    assert group.title == f"Contact without an email: {engine.erp_flow.name}"
    assert sorted(Occurrence.objects.values_list("order_number", flat=True)) == sorted(numbers)
    page = ops.get(
        reverse("exceptions_inbox:group", kwargs={"ws": group.workspace.slug, "pk": group.pk}),
        {"per_page": 50},
    )
    html = page.content.decode()
    assert all(number in html for number in numbers)
    assert "<strong>30</strong> of 30 event(s) blocked" in html


def test_the_same_cause_on_another_flow_is_another_group(engine: Engine):
    post_emailless(engine, 2)
    at = datetime.now(UTC).replace(microsecond=0)
    wms_order = event(
        ("demo-wms", "wh-1"),
        "order.created",
        "order:WS1",
        "order:WS1:created",
        emailless_order("WS1", at)["data"],
        at=at,
    )
    wms_order["data"]["order_key"] = "demo-wms:wh-1:order:WS1"
    engine.post("wms", [wms_order])
    engine.pump()

    groups = ExceptionGroup.objects.filter(kind="contact_without_email")
    assert sorted(groups.values_list("flow_key", "open_count")) == sorted(
        [(engine.erp_flow.key, 2), (engine.wms_flow.key, 1)]
    )


def order_off_by(number: str, at: datetime, grand: str) -> dict[str, Any]:
    """An order of one 20.00 line whose stated grand total is `grand`."""
    posted = order(number, f"{number.lower()}@example.com", at=at, sku="AB-12-RED")
    posted["data"]["totals"]["grand_total"] = {"amount": grand, "currency": "GBP"}
    return posted


def test_orders_whose_totals_do_not_add_up_make_one_group_showing_each_orders_figures(
    engine: Engine, finance: Client
):
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    engine.post(
        "erp",
        [order_off_by("NW1", at, "25.00"), order_off_by("NW2", at, "19.50")],
    )
    engine.pump()

    group = ExceptionGroup.objects.get(kind="order_total_mismatch")
    assert (group.open_count, group.order_number) == (2, "")
    figures = {o.order_number: o.detail["figures"] for o in Occurrence.objects.filter(group=group)}
    assert figures["NW1"] == {
        "currency": "GBP",
        "total": "25.00",
        "parts": "20.00",
        "difference": "5.00",
    }
    assert Decimal(figures["NW2"]["difference"]) == Decimal("-0.50")

    html = finance.get(
        reverse("exceptions_inbox:group", kwargs={"ws": group.workspace.slug, "pk": group.pk})
    ).content.decode()
    # The group adds up what is off, per currency; each row shows its order's three figures.
    assert "5.50 GBP" in html  # |5.00| + |−0.50| blocked
    assert "25.00" in html and "20.00" in html and "-0.50" in html
    # A retry re-reads the same figures: none is offered; the source must resend the orders.
    assert 'value="retry"' not in html
    assert "Have the source correct these orders and send them again" in html


def claim_due(owner: str) -> list[int]:
    """What a worker does first: lease the events due for staging."""
    return claim_ids(
        SourceEvent.objects.due_for_staging().order_by("next_attempt_at", "pk"),
        limit=100,
        owner=owner,
        lease_seconds=LEASE_SECONDS,
    )


def test_resolving_a_group_while_its_retry_is_in_flight_does_not_reopen_it(
    engine: Engine, ops: Client
):
    post_emailless(engine, 3)
    group = ExceptionGroup.objects.get()
    act(ops, group, action="retry")
    # A worker has claimed the retried events and is staging them…
    ids = claim_due("worker-1")
    assert len(ids) == 3
    # …when the person resolves the group with a note.
    act(ops, group, action="resolve", note="in-store sales, not for DotDigital")
    # The retry fails again, as it would: the events still have no email.
    stage_batch(ids, "worker-1")
    engine.pump()

    group.refresh_from_db()
    assert (group.state, group.is_regression, group.open_count) == ("resolved", False, 0)
    assert not group.activities.filter(kind=Activity.Kind.REGRESSED).exists()
    events = SourceEvent.objects.filter(event_type="order.created")
    assert set(events.values_list("state", flat=True)) == {State.SKIPPED}
    assert set(Occurrence.objects.values_list("state", flat=True)) == {"skipped"}

    # A genuinely new occurrence after the resolve does reopen it, as a regression.
    post_emailless(engine, 1, first=2000)
    group.refresh_from_db()
    assert (group.state, group.is_regression, group.open_count) == ("open", True, 1)
    assert group.activities.last().kind == Activity.Kind.REGRESSED


def test_a_retry_sent_back_but_not_yet_claimed_is_skipped_by_the_resolve(
    engine: Engine, ops: Client
):
    post_emailless(engine, 2)
    group = ExceptionGroup.objects.get()
    act(ops, group, action="retry")
    act(ops, group, action="resolve", note="duplicates")
    engine.pump()

    group.refresh_from_db()
    assert (group.state, group.is_regression) == ("resolved", False)
    reasons = set(
        SourceEvent.objects.filter(event_type="order.created").values_list("state", "reason")
    )
    assert reasons == {(State.SKIPPED, "Resolved in the inbox by ops-person: duplicates")}


def test_an_event_of_a_resolved_group_attempted_again_after_the_resolve_is_a_regression(
    engine: Engine, ops: Client
):
    """The other side of the rule: an attempt that began after the resolve is new evidence."""
    post_emailless(engine, 1)
    group = ExceptionGroup.objects.get()
    act(ops, group, action="resolve")
    # Something re-stages the event later (an admin's replay, say).
    SourceEvent.objects.filter(event_type="order.created").update(
        state=State.RECEIVED, next_attempt_at=datetime.now(UTC)
    )
    engine.pump()

    group.refresh_from_db()
    assert (group.state, group.is_regression, group.open_count) == ("open", True, 1)


def test_a_group_whose_fix_must_come_first_offers_no_retry_and_links_to_the_fix(engine: Engine):
    """An opt-out the source cannot take (no connector write, no webhook): retrying would fail
    the same way, so neither the group nor the bulk bar retries it; the group links to the fix."""
    a_customer_of(engine, "lee@example.com", "W2")
    opted_out_in_dotdigital(engine, "lee@example.com")
    reconcile.round_trip(engine.erp_flow)
    group = ExceptionGroup.objects.get(kind="consent_sync_failed")
    marketing = Client()
    marketing.force_login(make_member(engine.workspace, "mkt", teams=["marketing"]))
    page_url = reverse(
        "exceptions_inbox:group", kwargs={"ws": group.workspace.slug, "pk": group.pk}
    )

    html = marketing.get(page_url).content.decode()
    assert 'value="retry"' not in html
    fix_url = (
        reverse("watch:opt-outs", args=[engine.workspace.slug]) + f"#flow-{engine.erp_flow.pk}"
    )
    assert f'href="{fix_url}"' in html
    assert "Set an opt-out webhook for Demo ERP → DotDigital" in html
    assert "only an admin can do this" in html

    # Neither one retry nor a bulk retry sends it back; the bulk bar says why.
    single = act(marketing, group, action="retry")
    assert "Cannot retry: a fix must come first" in single
    bulk = marketing.post(
        reverse("exceptions_inbox:bulk", kwargs={"ws": group.workspace.slug}),
        {"action": "retry", "groups": [group.pk]},
        follow=True,
    ).content.decode()
    assert "Retry: 0 group(s). Left 1 unchanged: 1 because a fix must come first" in bulk
    assert OptOutWriteBack.objects.get().attempts == 1
    assert not group.activities.filter(kind=Activity.Kind.RETRIED).exists()

    # Once an admin has set the webhook, retry is offered again.
    set_opt_out_webhook(engine, "https://source.example/optouts")
    assert 'value="retry"' in marketing.get(page_url).content.decode()


def test_unknown_skus_of_one_flow_are_one_group_with_an_alias_fix_for_each(
    engine: Engine, ops: Client
):
    load_catalogue(engine)
    post_orders(engine, 3)  # AB-12/RED
    post_orders(engine, 2, first=2000, sku="KETTLE 2L")
    group = ExceptionGroup.objects.get()
    assert (group.title, group.open_count) == (
        f"SKU not in the catalogue: {engine.erp_flow.name}",
        5,
    )
    url = reverse("exceptions_inbox:group", kwargs={"ws": group.workspace.slug, "pk": group.pk})
    page = ops.get(url)
    subjects = [(value, n) for value, n, _offered in page.context["fix_subjects"]]
    assert subjects == [("AB-12/RED", 3), ("KETTLE 2L", 2)]
    offered = {value: [s.value for s, _ in o] for value, _n, o in page.context["fix_subjects"]}
    assert offered["AB-12/RED"][0] == "AB-12-RED" and offered["KETTLE 2L"][0] == "KETTLE-2L"

    fix_url = reverse(
        "exceptions_inbox:group-fix", kwargs={"ws": group.workspace.slug, "pk": group.pk}
    )
    ops.post(fix_url, {"alias": "KETTLE 2L", "catalogue_sku": "KETTLE-2L"})
    engine.pump()
    group.refresh_from_db()
    assert (group.state, group.open_count) == ("open", 3)  # AB-12/RED still blocks
    refused = ops.post(fix_url, {"alias": "NOT-HERE", "catalogue_sku": "KETTLE-2L"})
    assert refused.status_code == 400

    ops.post(fix_url, {"alias": "AB-12/RED", "catalogue_sku": "AB-12-RED"})
    engine.pump()
    group.refresh_from_db()
    assert (group.state, group.open_count) == ("resolved", 0)
    assert set(
        SourceEvent.objects.filter(event_type="order.created").values_list("state", flat=True)
    ) == {State.DELIVERED}


def test_guest_orders_excluded_by_the_flows_policy_offer_no_retry_until_the_policy_changes(
    engine: Engine, ops: Client
):
    engine.erp_flow.guest_policy = "exclude"
    engine.erp_flow.save(update_fields=["guest_policy"])
    guest = order("GU1", "guest@example.com", at=datetime.now(UTC) - timedelta(minutes=5))
    guest["identity"]["is_guest"] = True
    engine.post("erp", [guest])
    engine.pump()
    group = ExceptionGroup.objects.get(kind="guest_policy")
    url = reverse("exceptions_inbox:group", kwargs={"ws": group.workspace.slug, "pk": group.pk})

    html = ops.get(url).content.decode()
    assert 'value="retry"' not in html
    settings_url = reverse(
        "config:flow", kwargs={"ws": engine.workspace.slug, "pk": engine.erp_flow.pk}
    )
    assert f'href="{settings_url}"' in html
    assert "guest policy to merge guests" in html

    engine.erp_flow.guest_policy = "merge"
    engine.erp_flow.save(update_fields=["guest_policy"])
    assert 'value="retry"' in ops.get(url).content.decode()
    act(ops, group, action="retry")
    engine.pump()
    group.refresh_from_db()
    assert group.state == "resolved"


def test_an_order_of_two_unknown_skus_names_the_one_it_stops_at_now(engine: Engine, ops: Client):
    load_catalogue(engine)
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    two = order("NW9", "jo@example.com", at=at)
    second = dict(two["data"]["lines"][0], line_key="NW9-2", sku="ZZ-9", sku_raw="ZZ-9")
    two["data"]["lines"].append(second)
    for name in ("subtotal", "grand_total"):
        two["data"]["totals"][name] = {"amount": "40.00", "currency": "GBP"}
    engine.post("erp", [two])
    engine.pump()
    group = ExceptionGroup.objects.get()
    first = group.occurrences.get().sku
    assert first in {"AB-12/RED", "ZZ-9"}

    fix_url = reverse(
        "exceptions_inbox:group-fix", kwargs={"ws": group.workspace.slug, "pk": group.pk}
    )
    target = "AB-12-RED" if first == "AB-12/RED" else "KETTLE-2L"
    ops.post(fix_url, {"catalogue_sku": target})
    engine.pump()

    group.refresh_from_db()
    other = group.occurrences.get()
    assert (group.state, other.state) == ("open", "open")
    assert other.sku == ({"AB-12/RED", "ZZ-9"} - {first}).pop()
    assert other.sku in other.message
