"""Which changes become webhook events: the inbox's (opened, regressed, assigned, resolved) and
the alerts' (triggered, acknowledged, recovered), each written with the change itself."""

from __future__ import annotations

import json
from datetime import time, timedelta

import pytest
import time_machine
from django.utils import timezone

from exceptions_inbox.actions import apply_action
from exceptions_inbox.models import ExceptionGroup
from exceptions_inbox.recording import clear_occurrences, record_occurrence
from monitoring.models import Alert, FlowWatch, SourceEvent
from monitoring.watch import alerts
from outbound.models import Delivery
from tests.monitoring.watch_support import make_event, make_flow
from tests.outbound.conftest import subscribe

pytestmark = pytest.mark.django_db


def sent() -> list[tuple[str, dict]]:
    return [(d.event, json.loads(d.body)["data"]) for d in Delivery.objects.order_by("pk")]


def sku_gap(workspace, event_key: str = "event:1") -> ExceptionGroup:
    return record_occurrence(
        workspace=workspace,
        kind="sku_mapping_gap",
        event_key=event_key,
        stage="staging",
        message="SKU AB-12 is not in the catalogue",
        flow_key="erp",
        flow_label="ERP",
        subject_key="AB-12",
        subject_label="AB-12",
    ).group


def test_the_inbox_lifecycle_becomes_opened_assigned_resolved_and_regressed(world):
    subscribe(world.workspace, "https://hooks.example.com/x")
    group = sku_gap(world.workspace)
    sku_gap(world.workspace, "event:2")  # another occurrence of an open group: no event
    apply_action(group, "assign", world.admin, assignee=world.teammate)
    apply_action(group, "comment", world.admin, note="looking")  # not an event
    apply_action(group, "resolve", world.teammate, note="alias added")
    sku_gap(world.workspace, "event:3")  # a new occurrence after the resolve: a regression
    events = sent()
    assert [e for e, _ in events] == [
        "group.opened",
        "group.assigned",
        "group.resolved",
        "group.regressed",
    ]
    assigned = events[1][1]
    assert assigned["actor"]["username"] == "admin"
    assert assigned["group"]["assignee"]["username"] == "teammate"
    assert events[2][1]["note"] == "alias added"
    assert events[2][1]["group"]["state"] == "resolved"
    assert events[3][1]["group"]["is_regression"] is True


def test_a_group_that_resolves_itself_sends_resolved_with_no_actor(world):
    subscribe(world.workspace, "https://hooks.example.com/x", ["group.resolved"])
    sku_gap(world.workspace)
    clear_occurrences(world.workspace, ["event:1"])
    [(event, data)] = sent()
    assert event == "group.resolved" and data["actor"] is None


def test_no_subscriber_no_rows_and_a_paused_subscription_gets_nothing_new(world):
    subscription = subscribe(world.workspace, "https://hooks.example.com/x")
    subscription.state = "paused"
    subscription.save()
    sku_gap(world.workspace)
    assert not Delivery.objects.exists()


def test_an_alert_sends_triggered_acknowledged_and_recovered(world, mailoutbox, settings):
    settings.ALERT_WEBHOOK_URL = ""
    subscribe(
        world.workspace,
        "https://hooks.example.com/x",
        ["alert.triggered", "alert.acknowledged", "alert.recovered"],
    )
    with time_machine.travel("2025-03-01 00:00:00Z", tick=False):
        flow = make_flow(world.workspace, name="Mintsoft → DotDigital", lag_threshold_seconds=60)
    FlowWatch.objects.create(
        flow=flow, lag_for_minutes=5, trading_days="01234",
        trading_start=time(8, 0), trading_end=time(20, 0), trading_timezone="Europe/London",
    )  # fmt: skip
    with time_machine.travel("2025-03-04 09:00:00Z", tick=False) as clock:
        waiting = make_event(flow, state=SourceEvent.State.RECEIVED)
        SourceEvent.objects.filter(pk=waiting.pk).update(
            received_at=timezone.now() - timedelta(minutes=10)
        )
        make_event(flow)
        alerts.check_all()
        clock.shift(timedelta(minutes=6))
        alerts.check_all()
        alert = Alert.objects.get(flow=flow)
        assert alerts.acknowledge(alert, world.teammate, note="on it")
        assert alerts.resolve(alert, timezone.now(), "Back under the threshold.")
    events = sent()
    assert [e for e, _ in events] == ["alert.triggered", "alert.acknowledged", "alert.recovered"]
    assert [d["alert"]["state"] for _, d in events] == ["triggered", "acknowledged", "resolved"]
    assert events[0][1]["alert"]["flow"]["name"] == "Mintsoft → DotDigital"
    assert events[1][1]["actor"]["username"] == "teammate"
    # Each alert change also opened or changed an inbox group; those go only to group subscribers.
    assert ExceptionGroup.objects.filter(kind="lag").exists()
