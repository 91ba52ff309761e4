"""Outbound webhooks against a real receiver on 127.0.0.1: a group opened by the engine arrives as
a signed POST; a receiver answering 500 is retried with growing backoff and then paused with an
alert; resuming sends what waited."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta
from unittest import mock

import pytest
import time_machine
from celery import current_app
from django.db import transaction
from django.utils import timezone

from exceptions_inbox.models import ExceptionGroup
from exceptions_inbox.recording import record_occurrence
from outbound import delivery
from outbound.models import Delivery, Subscription
from outbound.record import wake_sender
from tests.monitoring.engine import stage
from tests.outbound.conftest import subscribe

pytestmark = pytest.mark.django_db


def verifies(secret: str, headers: dict[str, str], body: bytes, now: float) -> bool:
    """What the README tells a receiver to do, written out independently of Syncdesk's code."""
    fields = dict(part.split("=", 1) for part in headers["Syncdesk-Signature"].split(","))
    signed = fields["t"].encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return (
        hmac.compare_digest(expected, fields["v1"])
        and abs(now - int(fields["t"])) < 300
        and fields["t"] == headers["Syncdesk-Timestamp"]
    )


def open_a_group(erp, number: str = "SO-1") -> ExceptionGroup:
    """The engine stages an order without an email: a real `contact_without_email` group."""
    erp.post(erp.order(number, email=None))
    stage()
    # One group per flow: the order is its occurrence's.
    return ExceptionGroup.objects.get(
        kind="contact_without_email", occurrences__order_number=number
    )


def test_a_group_opened_by_the_engine_arrives_as_a_signed_post(world, erp, receiver):
    subscription = subscribe(world.workspace, receiver.url, ["group.opened"])
    group = open_a_group(erp)
    assert delivery.deliver_due() == 1
    [request] = receiver.requests
    assert verifies(
        subscription.signing_secret, request.headers, request.body, timezone.now().timestamp()
    )
    assert not verifies("whsec_another", request.headers, request.body, timezone.now().timestamp())
    # A replay an hour later fails the timestamp check, however valid the signature.
    assert not verifies(
        subscription.signing_secret,
        request.headers,
        request.body,
        timezone.now().timestamp() + 3600,
    )
    body = json.loads(request.body)
    assert body["type"] == "group.opened" == request.headers["Syncdesk-Event"]
    assert body["workspace"] == "acme"
    assert body["data"]["group"]["id"] == group.pk
    assert body["data"]["group"]["kind"] == "contact_without_email"
    assert body["data"]["group"]["state"] == "open"
    assert body["data"]["group"]["occurrence_count"] == 1
    assert body["data"]["group"]["url"].endswith(f"/w/acme/inbox/{group.pk}/")
    assert request.headers["Syncdesk-Delivery"] == body["id"]
    sent = Delivery.objects.get()
    assert (sent.state, sent.attempts, sent.last_status) == ("delivered", 1, 200)
    assert delivery.deliver_due() == 0  # delivered once, not again


def test_events_a_subscription_did_not_choose_are_not_sent(world, erp, receiver):
    subscribe(world.workspace, receiver.url, ["alert.triggered"])
    subscribe(world.other, receiver.url, ["group.opened"], name="Another retailer's")
    open_a_group(erp)
    assert not Delivery.objects.exists()


def test_a_receiver_answering_500_is_retried_with_backoff_then_paused_with_an_alert(
    world, erp, receiver, mailoutbox, django_capture_on_commit_callbacks
):
    receiver.status = 500
    subscription = subscribe(world.workspace, receiver.url, ["group.opened"])
    open_a_group(erp)
    waits = []
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for _ in range(delivery.PAUSE_AFTER):
            with django_capture_on_commit_callbacks(execute=True):
                assert delivery.deliver_due() == 1
            row = Delivery.objects.get()
            waits.append((row.next_attempt_at - timezone.now()).total_seconds())
            clock.move_to(row.next_attempt_at + timedelta(seconds=1))
        # Paused: nothing more is tried, however long one waits.
        clock.shift(timedelta(days=1))
        assert delivery.deliver_due() == 0
    assert len(receiver.requests) == delivery.PAUSE_AFTER
    # Each wait is its step of the table (plus at most a quarter of jitter), each longer than the last.
    for wait, step in zip(waits, delivery.BACKOFF, strict=False):
        assert step <= wait <= step * 1.25
    assert waits[:-1] == sorted(waits[:-1]) and waits[0] < waits[1] < waits[2] < waits[3]
    subscription.refresh_from_db()
    assert subscription.state == Subscription.State.PAUSED
    assert "5 failed attempts in a row (last: HTTP 500)" in subscription.paused_reason
    row = Delivery.objects.get()
    assert (row.state, row.attempts, row.last_status) == ("pending", 5, 500)
    assert list(row.attempt_rows.values_list("status_code", flat=True)) == [500] * 5
    # The alert: an open inbox group for the admins, and a mail to them.
    alert = ExceptionGroup.objects.get(kind="webhook_paused")
    assert (alert.state, alert.team.slug) == ("open", "admins")
    assert alert.title == "Webhook paused: Ticketing"
    [mail] = mailoutbox
    assert mail.to == ["admin@example.com"] and "Webhook paused: Ticketing" in mail.subject


def test_resuming_sends_what_waited_and_clears_the_alert(world, erp, receiver):
    receiver.status = 500
    subscription = subscribe(world.workspace, receiver.url, ["group.opened"])
    open_a_group(erp)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for _ in range(delivery.PAUSE_AFTER):
            delivery.deliver_due()
            clock.move_to(Delivery.objects.get().next_attempt_at + timedelta(seconds=1))
    subscription.refresh_from_db()
    assert not subscription.is_active
    receiver.status = 200
    assert delivery.resume(subscription)
    assert delivery.deliver_due() == 1
    row = Delivery.objects.get()
    assert (row.state, row.attempts) == ("delivered", 6)
    subscription.refresh_from_db()
    assert (subscription.state, subscription.consecutive_failures) == ("active", 0)
    assert ExceptionGroup.objects.get(kind="webhook_paused").state == "resolved"


def test_a_delivery_gives_up_after_its_last_attempt(world, erp, receiver):
    """Past MAX_ATTEMPTS a delivery fails for good (the receiver had successes in between, so the
    subscription itself was never paused)."""
    receiver.status = 503
    subscription = subscribe(world.workspace, receiver.url, ["group.opened"])
    open_a_group(erp)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for _ in range(delivery.MAX_ATTEMPTS):
            Subscription.objects.filter(pk=subscription.pk).update(consecutive_failures=0)
            assert delivery.deliver_due() == 1
            clock.move_to(Delivery.objects.get().next_attempt_at + timedelta(seconds=1))
        assert delivery.deliver_due() == 0
    row = Delivery.objects.get()
    assert (row.state, row.attempts) == ("failed", delivery.MAX_ATTEMPTS)


def test_the_sender_is_woken_by_name_on_its_queue_only_after_commit(
    world, django_capture_on_commit_callbacks
):
    subscribe(world.workspace, "https://hooks.example.com/x")
    with mock.patch.object(current_app, "send_task", autospec=True) as send_task:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            record_occurrence(
                workspace=world.workspace,
                kind="contact_without_email",
                event_key="event:1",
                stage="staging",
                message="no email",
            )
            assert Delivery.objects.count() == 1
        send_task.assert_not_called()  # nothing leaves before the commit
        for callback in callbacks:
            callback()
    send_task.assert_called_once_with("outbound.deliver_webhooks", queue="webhooks", expires=300)


def test_the_log_keeps_thirty_days_and_never_drops_what_waits(world):
    subscription = subscribe(world.workspace, "https://hooks.example.com/x")
    old = timezone.now() - timedelta(days=31)
    for state in ("delivered", "failed", "pending"):
        Delivery.objects.create(
            subscription=subscription, event="group.opened", body="{}", state=state, created=old
        )
    Delivery.objects.create(
        subscription=subscription, event="group.opened", body="{}", state="delivered"
    )
    delivery.prune_log()
    assert sorted(Delivery.objects.values_list("state", flat=True)) == ["delivered", "pending"]


def test_one_transaction_opening_many_groups_wakes_the_sender_once(
    world, django_capture_on_commit_callbacks
):
    subscribe(world.workspace, "https://hooks.example.com/x")
    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        for n in range(3):
            record_occurrence(
                workspace=world.workspace,
                kind="contact_without_email",
                event_key=f"event:{n}",
                stage="staging",
                message="no email",
                subject_key=f"order:{n}",
            )
    assert Delivery.objects.count() == 3
    assert callbacks == [wake_sender]
