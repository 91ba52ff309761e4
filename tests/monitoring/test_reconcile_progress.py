"""Finance's reconciliation pages while a run is running: how far it has got (compared so far of
the total), refreshed by htmx polling until it ends; and "reconcile now" queues the run for a
worker instead of comparing inside the request."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from monitoring.models import Flow, ReconciliationRun
from monitoring.watch import reconcile
from tests.factories import make_connection, make_member, make_workspace

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop() -> tuple[Flow, Client]:
    workspace = make_workspace("shop")
    flow = Flow.objects.create(
        workspace=workspace,
        name="ERP → DotDigital",
        source=make_connection(workspace, "canonical"),
        destination=make_connection(workspace, "dotdigital"),
    )
    web = Client()
    web.force_login(make_member(workspace, "fin", teams=["finance"]))
    return flow, web


def running(flow: Flow, **fields: Any) -> ReconciliationRun:
    return ReconciliationRun.objects.create(
        workspace=flow.workspace, flow=flow, state="running", started_at=timezone.now(), **fields
    )


def page(web: Client, name: str, flow: Flow, *args: Any, htmx: bool = False) -> str:
    headers = {"HX-Request": "true"} if htmx else {}
    response = web.get(reverse(name, args=[flow.workspace.slug, *args]), headers=headers)
    assert response.status_code == 200
    return response.content.decode()


def test_a_running_run_shows_how_far_it_has_got_and_polls_for_more(shop: tuple[Flow, Client]):
    flow, web = shop
    run = running(flow, total=1498, checked=412, phase="orders", retries=31, engine_contacts=749)

    html = page(web, "watch:run", flow, run.pk)

    assert "412 of 1498 compared with DotDigital (28%)" in html
    assert '<progress max="1498" value="412">' in html
    assert "31 busy answers from DotDigital retried" in html
    assert 'hx-trigger="every 2s"' in html
    assert "Syncdesk 749, DotDigital not listed" in html
    # The poll's answer is the fragment alone, with the newer figures.
    ReconciliationRun.objects.filter(pk=run.pk).update(checked=700)
    fragment = page(web, "watch:run", flow, run.pk, htmx=True)
    assert "700 of 1498 compared" in fragment
    assert "<html" not in fragment and 'id="reconciliation-run"' in fragment


def test_a_paused_run_says_why_and_when_it_continues(shop: tuple[Flow, Client]):
    flow, web = shop
    at = timezone.now() + timedelta(minutes=1)
    reason = "DotDigital answered 503 on GET /contacts/v3 to 8 tries in a row"
    run = running(flow, total=10, checked=5, resume_at=at, pause_reason=reason)

    html = page(web, "watch:run", flow, run.pk)

    assert f"paused ({reason}), continues at {at:%H:%M:%S} UTC" in html


def test_the_list_of_runs_shows_progress_and_polls_only_while_one_runs(
    shop: tuple[Flow, Client],
):
    flow, web = shop
    run = running(flow, total=40, checked=10)
    html = page(web, "watch:runs", flow)
    assert '<progress max="40" value="10">' in html and "10 of 40" in html
    assert 'hx-trigger="every 3s"' in html

    ReconciliationRun.objects.filter(pk=run.pk).update(state="finished", checked=40, matched=40)
    assert "hx-trigger" not in page(web, "watch:runs", flow)
    assert "hx-trigger" not in page(web, "watch:run", flow, run.pk)


def test_a_run_failed_after_comparing_some_says_how_many_not_zero_of_zero(
    shop: tuple[Flow, Client],
):
    flow, web = shop
    run = running(flow, total=24, checked=17, engine_contacts=12, dotdigital_contacts=12)
    reconcile._fail(run, "DotDigital refused the connection's API user (401 on GET /x).")

    html = page(web, "watch:run", flow, run.pk)

    assert "17 of 24 compared before it failed" in html
    assert "No differences among the 17 compared before the run failed" in html


def test_reconcile_now_queues_the_run_for_a_worker_and_opens_its_page(
    shop: tuple[Flow, Client], monkeypatch: pytest.MonkeyPatch
):
    flow, web = shop
    queued: list[tuple[int, float]] = []

    def queue_run(target: Flow, countdown: float = 0.0) -> bool:
        queued.append((target.pk, countdown))
        return True

    monkeypatch.setattr(reconcile, "queue_run", queue_run)

    response = web.post(reverse("watch:run-now", args=[flow.workspace.slug, flow.pk]))

    run = ReconciliationRun.objects.get(flow=flow)
    assert response["Location"] == reverse("watch:run", args=[flow.workspace.slug, run.pk])
    assert (run.state, run.checked, run.total) == ("running", 0, None)
    assert queued == [(flow.pk, 0.0)]
    assert "waiting for a worker to start comparing" in page(web, "watch:run", flow, run.pk)
    # Clicked again while it runs: the same run, not a second one.
    web.post(reverse("watch:run-now", args=[flow.workspace.slug, flow.pk]))
    assert ReconciliationRun.objects.filter(flow=flow).count() == 1
