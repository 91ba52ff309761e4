"""Programs (design.md, "Programs"): direct enrolment batched under DotDigital's 20 calls an
hour with each (program, contact) sent once, and list memberships that expire taking the
contact off the list — asserted on the sandbox through its API and call log."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pytest

from monitoring.models import DirectEnrolment, ListMembership, ProgramEnrolment
from monitoring.pipeline.mapping import DISPATCHED_TODAY, RECENT_BUYERS
from monitoring.tasks import enrol_programs, expire_list_memberships
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import Engine
from tests.monitoring.test_delivery import dispatched, list_names, order_created

pytestmark = pytest.mark.django_db(transaction=True)

PROGRAM = 7001


def enrolment_calls(engine: Engine) -> list[dict]:
    return [
        c for c in engine.sandbox.calls(path="/v2/programs/enrolments") if c["method"] == "POST"
    ]


def enrol_new_buyers(engine: Engine) -> None:
    """A Welcome program in DotDigital, and a direct enrolment of every new order's buyer."""
    engine.sandbox.plant(programs=[{"id": PROGRAM, "name": "Welcome", "status": "Active"}])
    DirectEnrolment.objects.create(
        workspace=engine.workspace,
        destination=engine.destination,
        program_id=PROGRAM,
        event_type="order.created",
    )


def test_direct_enrolment_is_batched_under_the_hourly_cap_and_sends_each_contact_once(
    engine: Engine,
):
    enrol_new_buyers(engine)
    now = datetime.now(UTC).replace(microsecond=0)
    people = [f"buyer{i}@example.com" for i in range(55)]
    orders = [
        order_created(f"PE{i}", email, "10.00", at=now, customer=f"C{i}")
        for i, email in enumerate(people)
    ]
    # Five of them order again: still one enrolment each.
    orders += [
        order_created(
            f"PE{100 + i}", people[i], "12.00", at=now + timedelta(seconds=1), customer=f"C{i}"
        )
        for i in range(5)
    ]
    engine.post("erp", orders)
    engine.pump()

    assert enrol_programs() == 55
    assert enrol_programs() == 0  # nothing left: no call at all
    engine.post(
        "erp",
        [order_created("PE200", people[7], "9.00", at=now + timedelta(seconds=2), customer="C7")],
    )
    engine.pump()
    assert enrol_programs() == 0

    calls = enrolment_calls(engine)
    assert len(calls) == 3  # 25 contacts a call: far under 20 calls an hour
    counts = engine.sandbox.control("GET", "enrolments")["counts"]
    assert len(counts) == 55
    assert {c["programId"] for c in counts} == {PROGRAM}
    assert all(c["count"] == 1 for c in counts)
    assert ProgramEnrolment.objects.filter(state="sent").count() == 55


def test_an_enrolment_call_that_never_reached_dotdigital_waits_for_the_next_run(engine: Engine):
    """No connection made (DotDigital down or restarting): nothing was applied, so the contacts
    go back to pending and are enrolled once it answers, not left `unknown` and lost."""
    from connectors.dotdigital.client import DotDigitalClient
    from monitoring.pipeline import programs

    enrol_new_buyers(engine)
    now = datetime.now(UTC).replace(microsecond=0)
    engine.post("erp", [order_created("NS1", "down@example.com", "10.00", at=now, customer="N1")])
    engine.pump()
    with socket.socket() as closed:  # a port nothing listens on once this closes
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    unreachable = DotDigitalClient.for_connection(
        engine.destination,
        discovery_url=f"http://127.0.0.1:{port}",
        endpoint=f"http://127.0.0.1:{port}",
        account_key="unreachable",
    )
    assert programs.enrol_programs(engine.destination, unreachable) == 0
    assert ProgramEnrolment.objects.get().state == "pending"
    assert enrol_programs() == 1
    assert ProgramEnrolment.objects.get().state == "sent"
    assert len(enrolment_calls(engine)) == 1


def test_an_enrolment_dotdigital_may_have_applied_goes_to_marketings_inbox_and_a_retry_sends_it_once_more(
    engine: Engine,
):
    """A 503 to the enrolment call: DotDigital may or may not have enrolled them, and a second
    call could send the program's mails twice, so nothing is resent on its own; each contact is
    an occurrence in marketing's inbox, one group for the program, until a person retries."""
    from exceptions_inbox.actions import apply_action
    from exceptions_inbox.models import ExceptionGroup, Occurrence

    enrol_new_buyers(engine)
    now = datetime.now(UTC).replace(microsecond=0)
    engine.post(
        "erp",
        [
            order_created(f"UK{i}", f"maybe{i}@example.com", "10.00", at=now, customer=f"U{i}")
            for i in range(2)
        ],
    )
    engine.pump()
    engine.sandbox.faults(match="/v2/programs/enrolments", error_burst=1, error_status=503)

    assert enrol_programs() == 0
    assert set(ProgramEnrolment.objects.values_list("state", flat=True)) == {"unknown"}
    group = ExceptionGroup.objects.get(kind="enrolment_unknown")
    assert group.team.slug == "marketing"
    assert group.open_count == 2
    assert enrol_programs() == 0, "never resent on its own"
    assert len(enrolment_calls(engine)) == 1

    apply_action(group, "retry", actor=None)
    assert enrol_programs() == 2
    assert set(ProgramEnrolment.objects.values_list("state", flat=True)) == {"sent"}
    assert not Occurrence.objects.filter(group=group, state=Occurrence.State.OPEN).exists()
    group.refresh_from_db()
    assert group.state == ExceptionGroup.State.RESOLVED


def test_a_list_membership_whose_time_is_up_takes_the_contact_off_the_list_in_dotdigital(
    engine: Engine,
):
    now = datetime.now(UTC).replace(microsecond=0)
    engine.post("erp", [order_created("LX1", "rae@example.com", "40.00", at=now)])
    engine.pump()
    engine.post("wms", [dispatched("LX1", at=now + timedelta(seconds=5))])
    engine.pump()
    assert list_names(engine, "rae@example.com") == {DISPATCHED_TODAY, RECENT_BUYERS}

    # A day later "Dispatched today" is up; thirty days of "Recent buyers" are not.
    ListMembership.objects.filter(list_name=DISPATCHED_TODAY).update(
        expires_at=datetime.now(UTC) - timedelta(minutes=1)
    )
    assert expire_list_memberships() == 1
    engine.pump()

    assert list_names(engine, "rae@example.com") == {RECENT_BUYERS}
    row = ListMembership.objects.get(list_name=DISPATCHED_TODAY, email="rae@example.com")
    assert row.member is False and row.expires_at is None
    assert ListMembership.objects.get(list_name=RECENT_BUYERS).member is True
    assert expire_list_memberships() == 0  # taken off once
