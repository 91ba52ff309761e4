"""Errors by whose problem they are: the connection (paused with one alert, nothing lost, resumed
by a successful test), a transient failure (retried), one record (an exception carrying
DotDigital's code and text), a value that does not fit (caught before sending)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from exceptions_inbox.actions import apply_action
from exceptions_inbox.models import ExceptionGroup, Occurrence
from monitoring.models import Flow, Operation, SourceEvent
from monitoring.pipeline.destination import client_for, list_id
from monitoring.pipeline.destination import test_and_resume as resume_connection
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import Engine
from tests.monitoring.test_delivery import order_created

pytestmark = pytest.mark.django_db(transaction=True)


def world_admin(engine: Engine):
    from tests.factories import make_member

    return make_member(engine.workspace, "fixer", role="admin", teams=["admins"])


def test_a_401_pauses_the_connection_with_one_alert_and_a_successful_test_resumes_without_loss(
    engine: Engine,
):
    now = datetime.now(UTC).replace(microsecond=0)
    engine.sandbox.account(failure="password_changed")
    engine.post("erp", [order_created("NP1", "jo@example.com", "10.00", at=now)])
    engine.pump()
    engine.post(
        "erp",
        [order_created("NP2", "sam@example.com", "12.00", at=now, customer="C2")],
    )
    engine.pump()

    engine.destination.refresh_from_db()
    assert engine.destination.is_paused
    groups = ExceptionGroup.objects.filter(kind="connection_paused")
    assert groups.count() == 1 and Occurrence.objects.filter(group__in=groups).count() == 1
    assert not Operation.objects.filter(state__in=("delivered", "failed", "skipped")).exists()
    assert SourceEvent.objects.filter(state="ready").count() == 2  # queued, not failed

    ok, message = resume_connection(engine.destination)
    assert not ok and "401" in message or "Authorization" in message or not ok
    engine.sandbox.account()  # the password is put right
    ok, message = resume_connection(engine.destination)
    assert ok, message
    engine.pump()

    assert SourceEvent.objects.filter(state="delivered").count() == 2
    assert engine.contact("jo@example.com") and engine.contact("sam@example.com")
    assert set(engine.records("sam@example.com")) == {"NP2"}
    assert ExceptionGroup.objects.get(kind="connection_paused").state == "resolved"


def test_transient_failures_are_retried_with_backoff_until_delivered(engine: Engine):
    now = datetime.now(UTC).replace(microsecond=0)
    engine.sandbox.faults(match="/contacts/v3", error_burst=2, error_status=503)
    engine.post("erp", [order_created("NT1", "lee@example.com", "10.00", at=now)])
    engine.pump()

    assert SourceEvent.objects.get().state == "delivered"
    op = Operation.objects.get(kind="contact")
    assert op.state == "delivered" and op.attempts >= 2
    assert not Occurrence.objects.exists()  # no exception for a transient error


def test_a_transient_failure_keeps_retrying_past_ten_attempts_while_within_the_lag_threshold(
    engine: Engine,
):
    now = datetime.now(UTC).replace(microsecond=0)
    # Two errors an attempt: the call is tried once more at once (transport.AGAIN_AT_ONCE).
    engine.sandbox.faults(match="/contacts/v3", error_burst=24, error_status=503)
    engine.post("erp", [order_created("NT2", "kit@example.com", "10.00", at=now)])
    engine.pump(rounds=60)

    assert SourceEvent.objects.get().state == "delivered"
    op = Operation.objects.get(kind="contact")
    assert op.state == "delivered" and op.attempts > 10
    assert not Occurrence.objects.exists()


def test_a_transient_failure_that_outlasts_the_flows_lag_threshold_fails_into_the_inbox(
    engine: Engine,
):
    now = datetime.now(UTC).replace(microsecond=0)
    engine.sandbox.faults(match="/contacts/v3", error_burst=1000, error_status=503)
    engine.post("erp", [order_created("NT3", "ash@example.com", "10.00", at=now)])
    Flow.objects.filter(pk=engine.erp_flow.pk).update(lag_threshold_seconds=60)
    # The event has been waiting two minutes: past the flow's 60 s threshold.
    SourceEvent.objects.update(received_at=datetime.now(UTC) - timedelta(minutes=2))
    engine.pump(rounds=60)

    event = SourceEvent.objects.get()
    assert event.state == "failed"
    op = Operation.objects.get(kind="contact")
    assert op.state == "failed" and 3 <= op.attempts <= 4
    assert "beyond the flow's lag threshold" in op.reason
    assert Occurrence.objects.filter(event_key=event.key).count() == 1


def test_a_record_dotdigital_rejects_fails_its_event_with_dotdigitals_code_and_text(
    engine: Engine,
):
    now = datetime.now(UTC).replace(microsecond=0)
    engine.post("erp", [order_created("NR1", "kim@example", "10.00", at=now)])
    engine.pump()

    event = SourceEvent.objects.get()
    assert event.state == "failed" and event.failed_kind == "dotdigital_rejected"
    occurrence = Occurrence.objects.get()
    assert occurrence.group.kind == "dotdigital_rejected"
    assert "invalid" in occurrence.message.lower()
    assert occurrence.event_key == f"event:{event.pk}"
    # The order record (which needs the contact) was not sent on its own.
    assert not Operation.objects.filter(kind="insight", state="delivered").exists()


def test_a_value_that_does_not_fit_its_data_field_opens_schema_mismatch_before_sending(
    engine: Engine,
):
    engine.sandbox.plant(data_fields=[{"name": "LTV", "type": "Date"}])
    now = datetime.now(UTC).replace(microsecond=0)
    engine.post("erp", [order_created("NS1", "max@example.com", "10.00", at=now)])
    engine.pump()

    event = SourceEvent.objects.get()
    assert event.state == "failed" and event.failed_kind == "schema_mismatch"
    assert "LTV is a Date data field" in Occurrence.objects.get().message
    assert engine.contact("max@example.com") is None  # nothing was sent

    # Someone puts the field right in DotDigital and retries the group from the inbox.
    engine.sandbox.plant(data_fields=[{"name": "LTV", "type": "Numeric"}])
    group = Occurrence.objects.get().group
    apply_action(group, "retry", world_admin(engine))
    engine.pump()

    assert SourceEvent.objects.get().state == "delivered"
    assert engine.contact("max@example.com")["dataFields"]["LTV"] == 10
    group.refresh_from_db()
    assert group.state == "resolved"


def test_an_insight_record_that_breaks_the_collections_locked_schema_is_caught_before_sending(
    engine: Engine,
):
    engine.sandbox.plant(
        collections=[{"name": "Orders", "scope": "contact", "type": "orders"}],
        contacts=[{"email": "zed@example.com"}],
        records=[
            {
                "collection": "Orders",
                "key": "OLD-1",
                "email": "zed@example.com",
                "json": {"GrandTotal": "a lot"},
            }
        ],
    )
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    engine.post("erp", [order_created("NS2", "zed@example.com", "10.00", at=now)])
    engine.pump()

    event = SourceEvent.objects.get()
    assert event.state == "failed" and event.failed_kind == "schema_mismatch"
    assert "GrandTotal is STRING" in event.reason
    assert set(engine.records("zed@example.com")) == {"OLD-1"}


def test_a_list_another_sender_created_a_moment_ago_is_used_not_failed(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    # Two senders saw no "Dispatched today" list at once; the other created it first.
    client = client_for(engine.destination, "realtime")
    made = client.create_address_book("Dispatched today")
    seen = client.list_address_books
    calls = []

    def not_yet_then_seen():
        calls.append(1)
        return [] if len(calls) == 1 else seen()

    monkeypatch.setattr(client, "list_address_books", not_yet_then_seen)
    assert list_id(client, engine.destination.pk, "Dispatched today") == made.id
    assert len(calls) == 2
