"""The inbox's actions on real blocked events: retry with today's mappings, resolve and ignore by
hand, and regression, through the inbox's views against the engine and the DotDigital sandbox
(the engine's own hooks, nothing standing in). Each ends with `syncdesk_audit` passing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from exceptions_inbox.models import Activity, ExceptionGroup, Occurrence
from monitoring.models import SkuAlias, SourceEvent
from tests.exceptions_inbox.engine_support import (
    UNKNOWN,
    load_catalogue,
    orders_in_sandbox,
    post_orders,
)
from tests.factories import make_member
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import Engine

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


def act(web: Client, group: ExceptionGroup, **data: Any) -> str:
    url = reverse(
        "exceptions_inbox:group-action", kwargs={"ws": group.workspace.slug, "pk": group.pk}
    )
    response = web.post(url, data, follow=True)
    assert response.status_code == 200
    return response.content.decode()


def audit_passes(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("syncdesk_audit", "--expect-delivery", "--settle", "1")
    assert f"All {SourceEvent.objects.count()} events accounted for." in capsys.readouterr().out


def orders() -> Any:
    return SourceEvent.objects.filter(event_type="order.created")


def test_retry_reruns_the_blocked_events_with_todays_mappings_and_the_group_resolves_itself(
    engine: Engine, ops: Client, capsys: pytest.CaptureFixture[str]
):
    load_catalogue(engine)
    numbers = post_orders(engine, 6)
    group = ExceptionGroup.objects.get()
    # A retry before anything changed fails the same way: the group stays open.
    html = act(ops, group, action="retry")
    assert "Retried: 6 blocked event(s) sent back." in html
    engine.pump()
    group.refresh_from_db()
    assert (group.state, group.open_count) == ("open", 6)
    assert set(orders().values_list("state", flat=True)) == {State.FAILED}

    # An admin adds the alias on the configuration pages (not through the group's fix)…
    SkuAlias.objects.create(workspace=engine.workspace, alias_key="ab-12/red", sku="AB-12-RED")
    # …and the person retries from the group page.
    act(ops, group, action="retry")
    engine.pump()

    assert sorted(doc["OrderNumber"] for doc in orders_in_sandbox(engine).values()) == numbers
    assert set(orders().values_list("state", flat=True)) == {State.DELIVERED}
    group.refresh_from_db()
    assert (group.state, group.open_count) == ("resolved", 0)
    last = group.activities.last()
    assert (last.kind, last.actor) == (Activity.Kind.AUTO_RESOLVED, None)
    assert group.activities.filter(kind=Activity.Kind.RETRIED).count() == 2
    audit_passes(capsys)


def test_resolving_by_hand_skips_the_events_with_the_person_and_note_and_a_new_one_regresses(
    engine: Engine, ops: Client, capsys: pytest.CaptureFixture[str]
):
    load_catalogue(engine)
    post_orders(engine, 5)
    group = ExceptionGroup.objects.get()

    act(ops, group, action="resolve", note="test orders from the warehouse")

    group.refresh_from_db()
    assert (group.state, group.open_count) == ("resolved", 0)
    assert set(Occurrence.objects.values_list("state", flat=True)) == {"skipped"}
    reasons = set(orders().values_list("state", "reason"))
    assert reasons == {
        (State.SKIPPED, "Resolved in the inbox by ops-person: test orders from the warehouse")
    }
    assert orders_in_sandbox(engine) == {}
    audit_passes(capsys)

    # The same SKU blocks a new order: the group reopens as a regression.
    post_orders(engine, 1, first=2000)
    group.refresh_from_db()
    assert (group.state, group.is_regression, group.open_count) == ("open", True, 1)
    assert group.activities.last().kind == Activity.Kind.REGRESSED
    assert orders().filter(state=State.FAILED).count() == 1
    audit_passes(capsys)


def test_ignoring_by_hand_skips_the_events_and_later_ones_are_skipped_straight_away(
    engine: Engine, ops: Client, capsys: pytest.CaptureFixture[str]
):
    load_catalogue(engine)
    post_orders(engine, 3)
    group = ExceptionGroup.objects.get()

    act(ops, group, action="ignore", note="a sample SKU, never sold")
    post_orders(engine, 2, first=2000)

    group.refresh_from_db()
    assert (group.state, group.open_count, group.occurrence_count) == ("ignored", 0, 5)
    assert set(orders().values_list("state", flat=True)) == {State.SKIPPED}
    assert set(group.occurrences.values_list("sku", flat=True)) == {UNKNOWN}
    audit_passes(capsys)
