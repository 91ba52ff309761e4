"""Reconciliation against a DotDigital that answers 503 and 429 now and then (the sandbox's
injected faults), one that refuses the API user (401), one that keeps failing, and a worker
that stops mid-run: retryable answers are retried within the shared rate budget, a run resumes
where it stopped, only a connection-level error fails it, and its counts are those it compared.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from config.celery import app
from connectors.dotdigital.client import DotDigitalClient
from connectors.dotdigital.types import RecordPage
from monitoring import tasks
from monitoring.models import Flow, ReconciliationDifference, ReconciliationRun
from monitoring.watch import reconcile, reconcile_dotdigital
from tests.factories import make_member
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import Engine
from tests.monitoring.test_reconcile import order_created

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

BUSY = {"seed": 20, "error_rate": 0.10, "error_status": 503, "rate_limit_rate": 0.05}


@pytest.fixture
def short_windows(engine: Engine) -> Iterator[None]:
    """Rate windows of a second, so an injected 429's reset (the window's end) is near."""
    engine.sandbox.set_profile(base="fast", window_s=1)
    yield
    engine.sandbox.set_profile(name="fast")


@contextmanager
def eager_worker() -> Iterator[None]:
    """Messages sent meanwhile run at once, as if a worker took them."""
    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = False


def deliver(engine: Engine, count: int) -> list[str]:
    """`count` customers with an order each, delivered to DotDigital; their emails in order."""
    now = datetime.now(UTC).replace(microsecond=0)
    emails = [f"c{i:02d}@example.com" for i in range(count)]
    engine.post(
        "erp",
        [
            order_created(f"N{i:02d}", email, f"{10 + i}.00", at=now, customer=f"K{i:02d}")
            for i, email in enumerate(emails)
        ],
    )
    engine.pump()
    return emails


def flow_of(engine: Engine) -> Flow:
    return Flow.objects.select_related("workspace", "destination", "source").get(
        pk=engine.erp_flow.pk
    )


def diffs(run: ReconciliationRun) -> set[tuple[str, str, str]]:
    return {(d.kind, d.subject, d.field) for d in run.differences.all()}


def test_a_run_against_10_percent_503s_and_5_percent_429s_completes_with_the_true_counts(
    engine: Engine, short_windows: None
):
    emails = deliver(engine, 30)
    engine.sandbox.plant(contacts=[{"email": emails[7], "dataFields": {"LTV": 1}}])
    truth = engine.sandbox.state()["counts"]  # what was delivered, read before the faults
    assert (truth["contacts"], truth["records"]) == (30, 30)
    engine.sandbox.faults(**BUSY)

    result = tasks.reconcile_flow(engine.erp_flow.pk)  # as beat starts it

    run = ReconciliationRun.objects.get(pk=result["run"])
    injected = engine.sandbox.control("GET", "faults")["injected"]
    assert injected["error"] >= 3 and injected["rate_limit"] >= 1, injected
    assert run.state == "finished", run.error or run.pause_reason
    assert (run.engine_contacts, run.dotdigital_contacts) == (30, truth["contacts"])
    assert (run.checked, run.matched, run.mismatched, run.missing) == (60, 59, 1, 0)
    assert diffs(run) == {("field", emails[7], "LTV")}
    # A 503 is tried again at once by the transport; the run retries what fails twice in a row
    # (429s the transport waits out).
    assert run.retries <= injected["error"]
    assert run.error == ""


def test_reconcile_now_on_the_page_retries_too_and_the_page_shows_the_result(
    engine: Engine, short_windows: None, monkeypatch: pytest.MonkeyPatch
):
    deliver(engine, 12)
    engine.sandbox.faults(**BUSY)
    web = Client()
    web.force_login(make_member(engine.workspace, "fin", teams=["finance"]))

    with eager_worker():  # the worker, in place
        response = web.post(
            reverse("watch:run-now", args=[engine.workspace.slug, engine.erp_flow.pk])
        )

    run = ReconciliationRun.objects.get(flow=engine.erp_flow)
    assert response.status_code == 302
    assert response["Location"] == reverse("watch:run", args=[engine.workspace.slug, run.pk])
    assert run.state == "finished", run.error or run.pause_reason
    assert (run.checked, run.matched, run.dotdigital_contacts) == (24, 24, 12)
    assert engine.sandbox.control("GET", "faults")["injected"].get("error", 0) >= 1
    page = web.get(response["Location"]).content.decode()
    assert "24: 24 matched, 0 mismatched, 0 missing" in page
    assert "hx-trigger" not in page  # finished: nothing to poll


def test_a_401_fails_the_run_at_once_in_one_sentence_and_reports_no_counts(engine: Engine):
    deliver(engine, 3)
    engine.destination.credentials = {"api_user": engine.sandbox.auth[0], "password": "wrong"}
    engine.destination.save()

    run = reconcile.run_reconciliation(flow_of(engine), sample=0)

    assert run.state == "failed"
    assert run.error == (
        "DotDigital refused the connection's API user or its password. An admin corrects it on "
        "the DotDigital connection's page (Test connection checks it). Then run the "
        "reconciliation again."
    )
    assert (run.checked, run.retries, run.dotdigital_contacts) == (0, 0, None)
    web = Client()
    web.force_login(make_member(engine.workspace, "fin", teams=["finance"]))
    page = web.get(reverse("watch:run", args=[engine.workspace.slug, run.pk])).content.decode()
    assert "DotDigital not listed" in page
    assert "DotDigital 0" not in page
    assert "Nothing was compared: the run failed" in page


class DyingClient(DotDigitalClient):
    """A worker that stops (killed, out of time) at its `dies_at`-th read of a contact's records."""

    dies_at = 0
    reads = 0

    def list_insight_records(self, collection: str, **kwargs: Any) -> RecordPage:
        type(self).reads += 1
        if type(self).reads == type(self).dies_at:
            raise RuntimeError("worker killed")
        return super().list_insight_records(collection, **kwargs)


def test_a_run_whose_worker_dies_resumes_where_it_stopped_and_counts_each_subject_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(reconcile_dotdigital, "CHUNK", 5)
    emails = deliver(engine, 12)
    engine.sandbox.plant(contacts=[{"email": emails[1], "dataFields": {"ORDER_COUNT": 9}}])
    flow = flow_of(engine)
    assert flow.destination is not None
    monkeypatch.setattr(DyingClient, "dies_at", 8)  # the 3rd email of the 2nd chunk of orders

    with pytest.raises(RuntimeError, match="worker killed"):
        reconcile.run_reconciliation(
            flow, sample=0, client=DyingClient.for_connection(flow.destination)
        )

    run = ReconciliationRun.objects.get(flow=flow)
    assert (run.state, run.phase, run.cursor) == ("running", "orders", emails[4])
    assert (run.checked, run.total) == (12 + 5, 24)  # the contacts and one chunk of orders
    assert run.differences.count() == 1
    assert (run.lease_owner, run.lease_until) == ("", None)  # released: the next may continue
    monkeypatch.setattr(DyingClient, "reads", 0)
    monkeypatch.setattr(DyingClient, "dies_at", 0)
    listed_before = len(engine.sandbox.calls(path="/contacts/v3"))

    again = reconcile.run_reconciliation(flow, client=DyingClient.for_connection(flow.destination))

    assert again.pk == run.pk
    assert again.state == "finished"
    assert DyingClient.reads == 7  # only the orders not compared yet
    assert len(engine.sandbox.calls(path="/contacts/v3")) == listed_before  # no new listing
    assert (again.checked, again.matched, again.mismatched, again.engine_contacts) == (
        24,
        23,
        1,
        12,
    )
    assert diffs(again) == {("field", emails[1], "ORDER_COUNT")}
    assert ReconciliationDifference.objects.count() == 1


def test_a_run_leased_by_a_live_worker_is_left_alone_and_one_whose_worker_vanished_is_continued(
    engine: Engine,
):
    deliver(engine, 2)
    flow = flow_of(engine)
    run = reconcile.start_run(flow, sample=0)
    ReconciliationRun.objects.filter(pk=run.pk).update(
        lease_owner="elsewhere", lease_until=timezone.now() + timedelta(minutes=4)
    )

    same = reconcile.run_reconciliation(flow)
    assert (same.pk, same.state, same.checked, same.lease_owner) == (
        run.pk,
        "running",
        0,
        "elsewhere",
    )

    # That worker was killed outright: its lease runs out and the next start continues the run.
    ReconciliationRun.objects.filter(pk=run.pk).update(
        lease_until=timezone.now() - timedelta(seconds=1)
    )
    done = reconcile.run_reconciliation(flow)
    assert (done.pk, done.state, done.checked, done.matched) == (run.pk, "finished", 4, 4)


def test_a_worker_out_of_time_queues_the_run_again_and_it_continues_to_the_end(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(reconcile_dotdigital, "CHUNK", 4)
    monkeypatch.setattr(tasks, "RECONCILE_SLICE", 0.0)  # every slice ends after one chunk
    deliver(engine, 9)
    slices: list[int] = []
    real = reconcile.run_reconciliation

    def counted(*args: Any, **kwargs: Any) -> ReconciliationRun:
        run = real(*args, **kwargs)
        slices.append(run.checked)
        return run

    monkeypatch.setattr(reconcile, "run_reconciliation", counted)

    with eager_worker():  # each slice's message runs the next slice at once
        tasks.reconcile_flow(engine.erp_flow.pk)

    [run] = ReconciliationRun.objects.filter(flow=engine.erp_flow)
    assert (run.state, run.checked, run.matched) == ("finished", 18, 18)
    # Contacts 4, 8, 9; orders' emails 4, 8, 9: a slice each, then the finish.
    assert sorted(slices) == [4, 8, 9, 13, 17, 18, 18]


def test_a_dotdigital_that_keeps_failing_pauses_the_run_and_a_run_past_its_deadline_fails(
    engine: Engine,
):
    emails = deliver(engine, 3)
    engine.sandbox.faults(error_rate=1.0, match="/insightData/")
    flow = flow_of(engine)
    waits: list[float] = []

    run = reconcile.run_reconciliation(flow, sample=0, sleep=waits.append)

    assert run.state == "running"
    assert run.pause_reason == (
        "DotDigital answered 503 on GET /insightData/v3/contacts/email/{value}/{collection} "
        "to 8 tries in a row"
    )
    assert len(waits) == reconcile_dotdigital.MAX_TRIES - 1  # bounded: 7 waits, 8 tries
    assert run.resume_at is not None and run.resume_at > timezone.now()
    assert (run.checked, run.phase, run.retries) == (3, "orders", 8)  # the contacts compared
    assert reconcile.paused_for(run) is not None

    engine.sandbox.faults()  # DotDigital answers again
    done = reconcile.run_reconciliation(flow, sleep=waits.append)
    assert (done.pk, done.state, done.checked, done.matched) == (run.pk, "finished", 6, 6)
    assert diffs(done) == set()

    # A run that never got to its end within the deadline fails, saying so; the next starts over.
    engine.sandbox.faults(error_rate=1.0, match="/insightData/")
    stuck = reconcile.run_reconciliation(flow, sample=0, sleep=waits.append)
    assert stuck.state == "running" and stuck.pk != run.pk
    ReconciliationRun.objects.filter(pk=stuck.pk).update(
        started_at=timezone.now() - reconcile_dotdigital.RUN_DEADLINE - timedelta(minutes=1)
    )
    engine.sandbox.faults()
    fresh = reconcile.run_reconciliation(flow, sample=0)
    stuck.refresh_from_db()
    assert stuck.state == "failed"
    assert stuck.error.startswith("Not finished within 6 hours of its start (3 of 6 compared: ")
    assert (fresh.state, fresh.checked) == ("finished", 6)
    assert emails  # delivered before the faults
