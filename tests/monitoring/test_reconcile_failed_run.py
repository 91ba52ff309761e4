"""A reconciliation that failed compared nothing: its page must say so, not "No differences"
(seen in the demo: a 429 from DotDigital failed "reconcile now", and the page read as clean)."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from monitoring.models import Flow, ReconciliationRun
from tests.factories import make_connection, make_member, make_workspace

pytestmark = pytest.mark.django_db


def run_page(state: str, error: str = "") -> str:
    workspace = make_workspace("shop")
    flow = Flow.objects.create(
        workspace=workspace,
        name="ERP → DotDigital",
        source=make_connection(workspace, "canonical"),
        destination=make_connection(workspace, "dotdigital"),
    )
    now = timezone.now()
    run = ReconciliationRun.objects.create(
        workspace=workspace, flow=flow, state=state, error=error, started_at=now, finished_at=now
    )
    web = Client()
    web.force_login(make_member(workspace, "fin", teams=["finance"]))
    response = web.get(reverse("watch:run", args=[workspace.slug, run.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_a_failed_run_says_nothing_was_compared():
    page = run_page("failed", "DotDigital: 429 server:tooManyRequests: Too Many Requests")
    assert "Nothing was compared: the run failed" in page
    assert "No differences." not in page


def test_a_finished_run_without_differences_says_so():
    assert "No differences." in run_page("finished")
