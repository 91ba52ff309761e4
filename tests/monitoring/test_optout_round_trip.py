"""The opt-out round trip: a suppression made in DotDigital (the sandbox) is pulled, then written
back to the source of truth through its connector (Brightpearl, served by a fake Brightpearl),
or POSTed to the flow's outbound webhook where the connector cannot (a canonical push source,
with a small receiver started by the test), with the time of each shown per contact; a failure
opens `consent_sync_failed`, and the inbox's retry writes again."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import ConfigChange
from exceptions_inbox.actions import apply_action
from exceptions_inbox.models import Occurrence
from monitoring.models import FlowWatch, OptOutWriteBack, Suppression
from monitoring.pipeline.consent import pull_suppressions
from monitoring.pipeline.sources import backfill_range
from monitoring.tasks import write_back_opt_outs
from monitoring.watch import reconcile
from tests.connectors.sources.fakes.brightpearl import FakeBrightpearl, load
from tests.factories import make_member
from tests.monitoring.brightpearl_support import *  # noqa: F403
from tests.monitoring.brightpearl_support import sales_order
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import Engine
from tests.monitoring.test_reconcile import order_created

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

OPTED_OUT = datetime(2026, 3, 4, 9, 15, tzinfo=UTC)


class Receiver:
    """A source's own intake for opt-outs: records each POST, answers the scripted statuses."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.append(
                    ({k.lower(): v for k, v in self.headers.items()}, json.loads(body))
                )
                status = receiver.statuses.pop(0) if receiver.statuses else 202
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/optouts?token=s3cret"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def opted_out_in_dotdigital(engine: Engine, email: str, when: datetime = OPTED_OUT) -> None:
    engine.sandbox.plant(
        suppressions=[{"email": email, "reason": "Unsubscribed", "dateRemoved": when.isoformat()}]
    )
    pull_suppressions(engine.destination)


def set_opt_out_webhook(engine: Engine, url: str) -> None:
    watch = FlowWatch.for_flow(engine.erp_flow)
    watch.opt_out_webhook_url = url
    watch.save(update_fields=["opt_out_webhook_url"])


def a_customer_of(engine: Engine, email: str, number: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    engine.post("erp", [order_created(number, email, "9.00", at=now, customer=number)])
    engine.pump()


def test_an_opt_out_reaches_brightpearl_through_its_connector_with_both_times_shown(
    shop: Engine, fake: FakeBrightpearl
):
    now = datetime.now(UTC).replace(microsecond=0)
    fake.orders[101] = sales_order(101, "jo@example.com", created=now - timedelta(hours=2))
    contact = copy.deepcopy(load("contact-get.json")["response"][0])
    contact["communication"]["emails"]["PRI"]["email"] = "jo@example.com"
    contact.setdefault("marketingDetails", {})["isReceiveEmailNewsletter"] = True
    fake.contacts[1101] = contact
    backfill_range(shop.erp_flow, now - timedelta(days=1), now)
    shop.pump()
    opted_out_in_dotdigital(shop, "jo@example.com")

    assert write_back_opt_outs(shop.erp_flow.pk) == {"queued": 1, "written": 1}
    assert write_back_opt_outs(shop.erp_flow.pk) == {"queued": 0, "written": 0}  # once

    assert fake.contacts[1101]["marketingDetails"]["isReceiveEmailNewsletter"] is False
    patches = [r for r in fake.api_requests() if r.method == "PATCH"]
    assert [r.path.rsplit("/", 1)[-1] for r in patches] == ["1101"]
    row = OptOutWriteBack.objects.get()
    assert (row.state, row.via, row.opted_out_at) == ("written", "connector", OPTED_OUT)
    assert row.written_at is not None and row.written_at > row.opted_out_at

    # Per contact: the opt-outs page for this email, and the timeline searched by it.
    web = Client()
    web.force_login(make_member(shop.workspace, "mkt", teams=["marketing"]))
    page = web.get(
        reverse("watch:opt-outs", args=[shop.workspace.slug]), {"q": "Jo@Example.com"}
    ).content.decode()
    assert "jo@example.com" in page and "2026-03-04 09:15:00" in page
    assert row.written_at.strftime("%Y-%m-%d %H:%M:%S") in page
    assert "The source&#x27;s connector" in page
    timeline = web.get(
        reverse("monitoring:events", args=[shop.workspace.slug]), {"q": "jo@example.com"}
    ).content.decode()
    assert 'id="opt-out-round-trip"' in timeline
    assert "Opted out in DotDigital" in timeline and "2026-03-04 09:15:00 UTC" in timeline
    assert f"Brightpearl told {row.written_at:%Y-%m-%d %H:%M:%S} UTC" in timeline


def test_a_source_without_a_connector_write_is_told_by_the_flows_outbound_webhook(
    engine: Engine, receiver: Receiver
):
    a_customer_of(engine, "sam@example.com", "W1")
    set_opt_out_webhook(engine, receiver.url)
    opted_out_in_dotdigital(engine, "sam@example.com")

    assert reconcile.round_trip(engine.erp_flow) == (1, 1)

    [(headers, body)] = receiver.received
    assert body == {
        "event_type": "consent.changed",
        "channel": "email",
        "status": "unsubscribed",
        "email": "sam@example.com",
        "reason": "Unsubscribed",
        "opted_out_at": "2026-03-04T09:15:00Z",
        "origin": "dotdigital",
        "flow": "Demo ERP → DotDigital",
        "source": "Demo ERP",
        "idempotency_key": body["idempotency_key"],
    }
    assert headers["idempotency-key"] == body["idempotency_key"]
    row = OptOutWriteBack.objects.get()
    assert (row.state, row.via) == ("written", "webhook")


def test_no_way_to_tell_the_source_opens_consent_sync_failed_and_the_inbox_retry_writes_it(
    engine: Engine, receiver: Receiver
):
    a_customer_of(engine, "lee@example.com", "W2")
    opted_out_in_dotdigital(engine, "lee@example.com")

    assert reconcile.round_trip(engine.erp_flow) == (1, 0)

    row = OptOutWriteBack.objects.get()
    assert row.state == "failed" and "no opt-out webhook" in row.error
    occurrence = Occurrence.objects.get(group__kind="consent_sync_failed")
    assert occurrence.email == "lee@example.com"
    assert occurrence.group.team.slug == "marketing"
    assert "could not be written to Demo ERP" in occurrence.message

    # An admin sets the flow's opt-out webhook on the Opt-outs page; marketing retries.
    admin = make_member(engine.workspace, "boss", role="admin")
    web = Client()
    web.force_login(admin)
    page = reverse("watch:opt-outs", args=[engine.workspace.slug])
    assert "no way yet" in web.get(page).content.decode()
    response = web.post(
        reverse("watch:opt-out-webhook", args=[engine.workspace.slug, engine.erp_flow.pk]),
        {"url": receiver.url},
    )
    assert response.status_code == 302
    shown = web.get(page).content.decode()
    assert "POSTed to the flow's opt-out webhook" in shown and "s3cret" not in shown
    change = ConfigChange.objects.get(object_type="monitoring.flowwatch")
    assert change.actor == admin
    assert change.changes == [{"field": "opt_out_webhook_url", "secret": True}]
    marketer = make_member(engine.workspace, "mkt", teams=["marketing"])
    apply_action(occurrence.group, "retry", marketer)

    row.refresh_from_db()
    assert (row.state, row.via) == ("written", "webhook")
    assert [b["email"] for _h, b in receiver.received] == ["lee@example.com"]
    assert Occurrence.objects.get(pk=occurrence.pk).state == "cleared"


def test_a_webhook_that_fails_for_now_backs_off_and_only_the_fifth_failure_is_an_exception(
    engine: Engine, receiver: Receiver
):
    a_customer_of(engine, "kim@example.com", "W3")
    set_opt_out_webhook(engine, receiver.url)
    opted_out_in_dotdigital(engine, "kim@example.com")
    receiver.statuses = [503, 429, 503, 500, 503]
    for attempt in range(1, 6):
        before = datetime.now(UTC)
        reconcile.round_trip(engine.erp_flow)
        row = OptOutWriteBack.objects.get()
        assert row.attempts == attempt
        if attempt < 5:
            assert row.state == "pending" and row.next_attempt_at > before
            assert not Occurrence.objects.filter(group__kind="consent_sync_failed").exists()
            assert reconcile.write_back_due(engine.erp_flow) == 0  # not due yet
            OptOutWriteBack.objects.update(next_attempt_at=before)
    assert row.state == "failed" and "answered 503" in row.error
    assert "s3cret" not in row.error  # the URL's token is never shown
    assert Occurrence.objects.filter(group__kind="consent_sync_failed").count() == 1
    assert len(receiver.received) == 5


def test_a_webhook_that_refuses_the_opt_out_is_an_exception_at_once(
    engine: Engine, receiver: Receiver
):
    a_customer_of(engine, "ann@example.com", "W4")
    set_opt_out_webhook(engine, receiver.url)
    opted_out_in_dotdigital(engine, "ann@example.com")
    receiver.statuses = [404]
    reconcile.round_trip(engine.erp_flow)
    row = OptOutWriteBack.objects.get()
    assert (row.state, row.attempts) == ("failed", 1)
    assert Occurrence.objects.filter(group__kind="consent_sync_failed").exists()


def test_the_opt_outs_export_lists_each_with_both_times(engine: Engine, receiver: Receiver):
    a_customer_of(engine, "eve@example.com", "W5")
    set_opt_out_webhook(engine, receiver.url)
    opted_out_in_dotdigital(engine, "eve@example.com")
    reconcile.round_trip(engine.erp_flow)
    row = OptOutWriteBack.objects.get()
    web = Client()
    web.force_login(make_member(engine.workspace, "mkt", teams=["marketing"]))
    response = web.get(reverse("watch:opt-outs", args=[engine.workspace.slug]), {"format": "csv"})
    assert response["Content-Type"].startswith("text/csv")
    lines = response.content.decode().splitlines()
    assert lines[0] == "email,reason,opted_out_at,source,flow,state,via,written_at"
    assert lines[1] == (
        "eve@example.com,Unsubscribed,2026-03-04T09:15:00+00:00,Demo ERP,Demo ERP → DotDigital,"
        f"written,webhook,{row.written_at.astimezone(UTC).isoformat()}"
    )


def test_only_the_flows_own_contacts_are_queued_each_opt_out_once_and_a_newer_one_again(
    engine: Engine, receiver: Receiver
):
    a_customer_of(engine, "sam@example.com", "W7")
    set_opt_out_webhook(engine, receiver.url)
    # A contact DotDigital holds but this flow never sent: not this flow's to tell its source.
    engine.sandbox.plant(
        suppressions=[
            {
                "email": "stranger@example.com",
                "reason": "Unsubscribed",
                "dateRemoved": OPTED_OUT.isoformat(),
            }
        ]
    )
    opted_out_in_dotdigital(engine, "sam@example.com")

    assert reconcile.queue_write_backs(engine.erp_flow) == 1
    assert reconcile.queue_write_backs(engine.erp_flow) == 0
    assert list(OptOutWriteBack.objects.values_list("email", flat=True)) == ["sam@example.com"]

    # Re-subscribed and opted out again later in DotDigital: the pull keeps the newer
    # dateRemoved on the contact's suppression, and that is a new opt-out, told again.
    later = OPTED_OUT + timedelta(days=30)
    Suppression.objects.filter(email="sam@example.com").update(date_removed=later)
    assert reconcile.queue_write_backs(engine.erp_flow) == 1
    assert sorted(OptOutWriteBack.objects.values_list("opted_out_at", flat=True)) == [
        OPTED_OUT,
        later,
    ]
