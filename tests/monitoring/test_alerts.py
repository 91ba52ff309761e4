"""Lag and stalled alerts: triggered → acknowledged → resolved, one notice per change (e-mail to
the owning team and a Slack-compatible webhook), recovery and escalation, and the inbox."""

from __future__ import annotations

from datetime import time, timedelta
from unittest import mock

import pytest
import time_machine
from django.utils import timezone

from exceptions_inbox.actions import apply_action
from exceptions_inbox.models import ExceptionGroup, Occurrence
from monitoring.models import Alert, AlertChange, AlertNotice, FlowWatch, SourceEvent
from monitoring.watch import alerts, flow_health
from tests.monitoring.watch_support import make_event, make_flow

pytestmark = pytest.mark.django_db

TUESDAY_9 = "2025-03-04 09:00:00Z"  # London is on GMT in March: 09:00 local


@pytest.fixture
def webhook():
    with mock.patch.object(alerts, "post_webhook", autospec=True, return_value=200) as post:
        yield post


@pytest.fixture
def flow(world, settings):
    settings.ALERT_WEBHOOK_URL = "https://hooks.example.com/T000/B000"
    with time_machine.travel("2025-03-01 00:00:00Z", tick=False):
        flow = make_flow(world.workspace, name="Mintsoft → DotDigital", lag_threshold_seconds=60)
    FlowWatch.objects.create(
        flow=flow,
        lag_for_minutes=5,
        escalate_after_minutes=30,
        stalled_grace_minutes=60,
        trading_days="01234",
        trading_start=time(8, 0),
        trading_end=time(20, 0),
        trading_timezone="Europe/London",
    )
    return flow


def check() -> list[str]:
    return alerts.check_all()


def kinds_of_changes(alert: Alert) -> list[str]:
    return list(alert.changes.values_list("kind", flat=True))


def a_waiting_event(flow, minutes_old: int) -> SourceEvent:
    event = make_event(flow, state=SourceEvent.State.RECEIVED)
    SourceEvent.objects.filter(pk=event.pk).update(
        received_at=timezone.now() - timedelta(minutes=minutes_old)
    )
    return event


def test_lag_triggers_only_after_lasting_y_minutes_then_notifies_once(
    flow, world, webhook, mailoutbox
):
    with time_machine.travel(TUESDAY_9, tick=False) as clock:
        a_waiting_event(flow, minutes_old=10)
        make_event(flow)  # keeps the flow from looking stalled
        assert check() == []
        clock.shift(timedelta(minutes=4))
        assert check() == []
        clock.shift(timedelta(minutes=1, seconds=1))
        assert check() == [f"{flow.pk}: lag triggered"]
        clock.shift(timedelta(minutes=1))
        assert check() == []  # still lagging: no second alert, no second notice
    alert = Alert.objects.get(flow=flow)
    assert alert.state == Alert.State.TRIGGERED and alert.kind == "lag"
    assert kinds_of_changes(alert) == ["triggered"]
    assert AlertNotice.objects.count() == 1
    assert [m.to for m in mailoutbox] == [["teammate@example.com"]]
    assert "Mintsoft → DotDigital is lagging" in mailoutbox[0].body
    webhook.assert_called_once_with("https://hooks.example.com/T000/B000", mock.ANY)
    assert "lagging" in webhook.call_args.args[1]["text"]
    occurrence = Occurrence.objects.get(event_key=f"alert:{alert.pk}")
    assert occurrence.group.kind == "lag" and occurrence.state == Occurrence.State.OPEN


def test_a_backfill_never_trips_a_lag_alert(flow, world, webhook, mailoutbox):
    with time_machine.travel(TUESDAY_9, tick=False) as clock:
        make_event(flow)  # live traffic, a few seconds end to end
        for _ in range(20):  # last year's orders, delivered today
            make_event(flow, source_delay=365 * 86400, is_backfill=True)
        for _ in range(50):  # more of them queued in the bulk lane for an hour
            waiting = a_waiting_event(flow, minutes_old=60)
            SourceEvent.objects.filter(pk=waiting.pk).update(is_backfill=True)
        for _ in range(3):
            clock.shift(timedelta(minutes=5))
            make_event(flow)
            assert check() == []
        [h] = flow_health.flow_health([flow])
    assert h.state == "healthy" and not h.is_lagging
    assert h.backlog == 0 and h.oldest_age is None
    assert h.backfill_waiting == 50 and h.backfill_day == 70
    assert not Alert.objects.exists() and not mailoutbox and not webhook.called
    assert FlowWatch.objects.get(flow=flow).lag_breach_since is None


def test_live_events_waiting_behind_a_backfill_still_trip_the_lag_alert(flow, world, webhook):
    with time_machine.travel(TUESDAY_9, tick=False) as clock:
        for _ in range(5):
            waiting = a_waiting_event(flow, minutes_old=60)
            SourceEvent.objects.filter(pk=waiting.pk).update(is_backfill=True)
        a_waiting_event(flow, minutes_old=10)
        make_event(flow)
        assert check() == []
        clock.shift(timedelta(minutes=5, seconds=1))
        assert check() == [f"{flow.pk}: lag triggered"]
    alert = Alert.objects.get(flow=flow)
    assert "oldest waiting event 15.0 min old" in alert.message
    assert "backlog 1." in alert.message


def test_acknowledging_in_the_inbox_acknowledges_the_alert_and_stops_escalation(
    flow, world, webhook, mailoutbox
):
    with time_machine.travel(TUESDAY_9, tick=False) as clock:
        a_waiting_event(flow, minutes_old=10)
        make_event(flow)
        check()
        clock.shift(timedelta(minutes=6))
        check()
        alert = Alert.objects.get(flow=flow)
        group = ExceptionGroup.objects.get(kind="lag")
        apply_action(group, "acknowledge", world.teammate)
        alert.refresh_from_db()
        assert alert.state == Alert.State.ACKNOWLEDGED
        assert alert.acknowledged_by == world.teammate
        clock.shift(timedelta(hours=2))
        make_event(flow)
        check()
    alert.refresh_from_db()
    assert alert.escalated_at is None
    assert kinds_of_changes(alert) == ["triggered", "acknowledged"]
    change = alert.changes.get(kind="acknowledged")
    assert change.actor == world.teammate and change.notice.subject.startswith(
        "[Syncdesk] Acknowledged"
    )


def test_recovery_resolves_the_alert_with_one_notice_and_clears_the_inbox(
    flow, world, webhook, mailoutbox
):
    with time_machine.travel(TUESDAY_9, tick=False) as clock:
        late = a_waiting_event(flow, minutes_old=10)
        make_event(flow)
        check()
        clock.shift(timedelta(minutes=6))
        check()
        SourceEvent.objects.filter(pk=late.pk).update(state=SourceEvent.State.SKIPPED)
        clock.shift(timedelta(minutes=1))
        assert check() == [f"{flow.pk}: lag resolved"]
        clock.shift(timedelta(minutes=1))
        assert check() == []
    alert = Alert.objects.get(flow=flow)
    assert alert.state == Alert.State.RESOLVED
    assert kinds_of_changes(alert) == ["triggered", "resolved"]
    assert AlertNotice.objects.count() == 2
    assert "Recovered" in mailoutbox[-1].subject
    assert webhook.call_count == 2
    group = ExceptionGroup.objects.get(kind="lag")
    assert group.state == ExceptionGroup.State.RESOLVED


def test_an_unacknowledged_alert_escalates_once_to_the_admins(flow, world, webhook, mailoutbox):
    with time_machine.travel(TUESDAY_9, tick=False) as clock:
        a_waiting_event(flow, minutes_old=10)
        make_event(flow)
        check()
        clock.shift(timedelta(minutes=6))
        check()
        clock.shift(timedelta(minutes=29))
        make_event(flow)
        assert check() == []
        clock.shift(timedelta(minutes=2))
        make_event(flow)
        assert check() == [f"{flow.pk}: lag escalated"]
        clock.shift(timedelta(minutes=10))
        make_event(flow)
        assert check() == []
    alert = Alert.objects.get(flow=flow)
    assert kinds_of_changes(alert) == ["triggered", "escalated"]
    escalation = alert.changes.get(kind="escalated").notice
    assert escalation.recipients == ["admin@example.com", "teammate@example.com"]
    assert "ESCALATED" in escalation.subject


def test_a_flow_without_events_in_trading_hours_is_stalled_until_one_arrives(
    flow, webhook, mailoutbox
):
    with time_machine.travel(TUESDAY_9, tick=False) as clock:
        make_event(flow)
        clock.shift(timedelta(minutes=59))
        assert check() == []
        clock.shift(timedelta(minutes=2))
        assert check() == [f"{flow.pk}: stalled triggered"]
        alert = Alert.objects.get(kind="stalled_flow")
        assert Occurrence.objects.get(event_key=alert.event_key).group.kind == "stalled_flow"
        clock.shift(timedelta(minutes=5))
        make_event(flow)
        assert check() == [f"{flow.pk}: stalled resolved"]
    alert.refresh_from_db()
    assert kinds_of_changes(alert) == ["triggered", "resolved"]


def test_no_stalled_alert_outside_trading_hours(flow, webhook):
    with time_machine.travel("2025-03-03 19:00:00Z", tick=False) as clock:  # Monday evening
        make_event(flow)
        clock.move_to("2025-03-03 23:30:00Z")  # night
        assert check() == []
        clock.move_to("2025-03-08 12:00:00Z")  # Saturday
        assert check() == []
        clock.move_to("2025-03-04 07:59:00Z")  # Tuesday, before opening
        assert check() == []
        clock.move_to("2025-03-04 08:30:00Z")  # open half an hour: grace counts from 08:00
        assert check() == []
        clock.move_to("2025-03-04 09:01:00Z")
        assert check() == [f"{flow.pk}: stalled triggered"]


def test_trading_hours_follow_the_flows_time_zone(flow, webhook):
    FlowWatch.objects.filter(flow=flow).update(trading_timezone="America/New_York")
    with time_machine.travel("2025-03-04 10:30:00Z", tick=False):  # 05:30 in New York
        assert check() == []


def test_a_second_check_racing_the_first_opens_no_second_alert(flow, webhook):
    with time_machine.travel(TUESDAY_9, tick=False):
        a_waiting_event(flow, minutes_old=10)
        FlowWatch.objects.filter(flow=flow).update(lag_for_minutes=0)
        check()
        Alert.objects.filter(flow=flow).update(state=Alert.State.TRIGGERED)
        [h] = flow_health.flow_health([flow])
        assert alerts.trigger(h, Alert.Kind.LAG, "again") is None
    assert Alert.objects.filter(kind="lag").count() == 1
    assert AlertChange.objects.filter(kind="triggered").count() == 1


def test_the_whole_lifecycle_sends_one_notice_per_change_and_a_recovery_notice(
    flow, world, webhook, mailoutbox
):
    with time_machine.travel(TUESDAY_9, tick=False) as clock:
        late = a_waiting_event(flow, minutes_old=10)
        make_event(flow)
        check()
        clock.shift(timedelta(minutes=6))
        assert check() == [f"{flow.pk}: lag triggered"]
        alert = Alert.objects.get(flow=flow)
        clock.shift(timedelta(minutes=3))
        assert alerts.acknowledge(alert, world.teammate)
        assert not alerts.acknowledge(alert, world.teammate)  # once
        clock.shift(timedelta(minutes=40))  # acknowledged: no escalation
        make_event(flow)
        assert check() == []
        SourceEvent.objects.filter(pk=late.pk).update(state=SourceEvent.State.DELIVERED)
        clock.shift(timedelta(minutes=1))
        assert check() == [f"{flow.pk}: lag resolved"]
        for _ in range(3):
            clock.shift(timedelta(minutes=1))
            assert check() == []
    alert.refresh_from_db()
    assert alert.state == Alert.State.RESOLVED
    assert kinds_of_changes(alert) == ["triggered", "acknowledged", "resolved"]
    notices = AlertNotice.objects.order_by("pk")
    assert [n.change.kind for n in notices] == ["triggered", "acknowledged", "resolved"]
    assert [m.subject.split(":")[0] for m in mailoutbox] == [
        n.subject.split(":")[0] for n in notices
    ]
    assert "Recovered" in notices[2].subject
    assert webhook.call_count == 3
    assert all(n.emailed_at is not None and n.webhook_status == 200 for n in notices)
