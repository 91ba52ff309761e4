"""Consent: only consent events change a subscription, and a stale source opt-in never
re-subscribes someone who opted out in DotDigital (asserted on the sandbox's own call log)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from monitoring.models import SourceEvent, Suppression
from monitoring.pipeline.consent import pull_suppressions
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import ERP, Engine, event, iso

pytestmark = pytest.mark.django_db(transaction=True)


def consent(
    email: str,
    status: str,
    consent_at: datetime,
    n: int,
    quality: str = "exact",
    customer_id: str = "C1",
) -> dict[str, Any]:
    return event(
        ERP,
        "consent.changed",
        f"consent:{customer_id}:email",
        f"consent:{customer_id}:{n}",
        {
            "channel": "email",
            "status": status,
            "opt_in_level": "single",
            "consent_at": iso(consent_at),
            "consent_source": "checkout",
        },
        at=consent_at,
        email=email,
        customer_id=customer_id,
        quality=quality,
    )


def customer(email: str) -> dict[str, Any]:
    return event(
        ERP,
        "customer.upserted",
        "customer:C1",
        "customer:C1:1",
        {
            "customer_key": "demo-erp:erp-main:customer:C1",
            "first_name": "Jo",
            "last_name": "Smith",
            "source_updated_at": iso(datetime.now(UTC)),
        },
        email=email,
        customer_id="C1",
    )


def subscribe_calls(engine: Engine, email: str, after_id: int) -> list[dict[str, Any]]:
    return [
        c
        for c in engine.sandbox.calls(after_id=after_id, path="/contacts/v3")
        if c["method"] in ("PATCH", "PUT") and email in c["path"]
    ]


def last_call_id(engine: Engine) -> int:
    calls = engine.sandbox.calls()
    return int(calls[-1]["id"]) if calls else 0


def test_a_stale_source_opt_in_after_a_dotdigital_opt_out_makes_no_subscribe_call(
    engine: Engine,
):
    email = "jo@example.com"
    engine.post("erp", [customer(email)])
    engine.pump()
    before_opt_out = datetime.now(UTC) - timedelta(minutes=5)
    # The contact opts out in DotDigital (an unsubscribe link in a mail).
    response = engine.sandbox.api.post(
        f"{engine.sandbox.url}/v2/contacts/unsubscribe", json={"email": email}
    )
    assert response.status_code in (200, 201), response.text
    after = last_call_id(engine)

    # The ERP then sends an opt-in stamped before the opt-out: it must not re-subscribe.
    engine.post("erp", [consent(email, "subscribed", before_opt_out, 1)])
    engine.pump()

    assert subscribe_calls(engine, email, after) == []
    stale = SourceEvent.objects.get(event_type="consent.changed")
    assert stale.state == SourceEvent.State.SKIPPED
    assert "newer than the source's consent" in stale.reason
    assert Suppression.objects.filter(email=email).exists()  # pulled into the state
    contact = engine.contact(email)
    assert contact is not None
    assert contact["channelProperties"]["email"]["status"] == "unsubscribed"

    # A genuinely newer opt-in is sent, exactly once, and DotDigital asks the contact to confirm.
    after = last_call_id(engine)
    engine.post("erp", [consent(email, "subscribed", datetime.now(UTC) + timedelta(seconds=5), 2)])
    engine.pump()

    assert len(subscribe_calls(engine, email, after)) == 1
    state = engine.sandbox.state()
    assert len(state["resubscribe_challenges"]) == 1  # resubscribeWithNoChallenge: false
    assert engine.contact(email)["channelProperties"]["email"]["status"] == "pendingOptIn"


def test_an_inexact_consent_time_never_overrides_a_dotdigital_opt_out(engine: Engine):
    email = "sam@example.com"
    engine.post("erp", [customer(email)])
    engine.pump()
    engine.sandbox.api.post(f"{engine.sandbox.url}/v2/contacts/unsubscribe", json={"email": email})
    after = last_call_id(engine)
    later = datetime.now(UTC) + timedelta(minutes=1)
    engine.post("erp", [consent(email, "subscribed", later, 1, quality="date_only")])
    engine.pump()

    assert subscribe_calls(engine, email, after) == []
    assert "not exact" in SourceEvent.objects.get(event_type="consent.changed").reason


def test_an_opt_out_from_the_source_unsubscribes_and_an_order_changes_no_subscription(
    engine: Engine,
):
    email = "ana@example.com"
    engine.post("erp", [customer(email), consent(email, "unsubscribed", datetime.now(UTC), 1)])
    engine.pump()
    assert engine.contact(email)["channelProperties"]["email"]["status"] == "unsubscribed"
    # A later customer update (like an order) writes data fields only.
    update = customer(email)
    update["source_event_id"] = "demo-erp:customer:C1:2"
    update["data"]["first_name"] = "Ana"
    engine.post("erp", [update])
    engine.pump()
    contact = engine.contact(email)
    assert contact["dataFields"]["FIRSTNAME"] == "Ana"
    assert contact["channelProperties"]["email"]["status"] == "unsubscribed"


def test_suppressions_are_pulled_into_the_state_with_their_date_removed(engine: Engine):
    engine.sandbox.plant(
        suppressions=[
            {
                "email": "gone@example.com",
                "reason": "HardBounced",
                "dateRemoved": "2026-01-02T03:04:05Z",
            }
        ]
    )
    assert pull_suppressions(engine.destination) == 1
    row = Suppression.objects.get(email="gone@example.com")
    assert row.reason == "HardBounced"
    assert iso(row.date_removed) == "2026-01-02T03:04:05Z"
    assert pull_suppressions(engine.destination) <= 1  # the overlap re-reads idempotently
    assert Suppression.objects.count() == 1


def test_a_consent_change_goes_in_the_claims_contact_import_joined_to_its_contacts_record(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    """With the single tier spent, consent changes cost no import of their own: each joins the
    contact import of its claim, in one record with its contact's data fields where it has one."""
    from monitoring.models import DeliveryBatch
    from monitoring.pipeline import consent as consent_sending
    from monitoring.pipeline import deliver, lanes
    from tests.monitoring.test_delivery import order_created

    monkeypatch.setattr(deliver, "single_capacity", lambda client: 0)
    monkeypatch.setattr(consent_sending, "single_room", lambda client, calls: False)
    monkeypatch.setattr(lanes, "send_realtime_now", lambda destination_id: 0)
    now = datetime.now(UTC)
    other = consent("lee@example.com", "subscribed", now, 2, customer_id="C2")
    engine.post(
        "erp",
        [
            order_created("SO-C1", "kim@example.com", "9.00", at=now, customer="C1"),
            consent("kim@example.com", "unsubscribed", now, 1),
            other,
        ],
    )
    lanes.stage_flow(engine.erp_flow.pk, "realtime")
    assert deliver.send_due(engine.destination, "realtime") > 0

    imports = DeliveryBatch.objects.filter(lane="realtime", kind="contacts")
    assert imports.count() == 1
    assert imports.get().records == 2, "kim's order and consent in one record, lee's in another"
    engine.pump()
    assert set(SourceEvent.objects.values_list("state", flat=True)) == {"delivered"}
    kim = engine.contact("kim@example.com")
    assert kim["channelProperties"]["email"]["status"] == "unsubscribed"
    assert kim["dataFields"], "the order's data fields came in the same record"
    lee = engine.contact("lee@example.com")
    assert lee["channelProperties"]["email"]["status"] == "subscribed"
