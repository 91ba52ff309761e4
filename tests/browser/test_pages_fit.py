"""Every persona's main pages, in headless Chromium at 1280×800, on the demo workspace after its
sources have sent a few hundred events through the engine: nothing scrolls sideways, no table is
wider than its box, and no raw HTTP error text ("GET /v2/... -> 429 : Too Many Requests") shows.
The screenshots land in test-artifacts/ (docs/screenshots/ takes the dashboard, flows, mappings
and schedules ones)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from accounts.models import Workspace
from connectors.models import Connection
from eventgen import Faults, Generator
from exceptions_inbox.models import ExceptionGroup
from monitoring.demo import DEMO_PASSWORD, seed_demo
from monitoring.models import Flow, FlowSample, Operation, SourceEvent
from monitoring.pipeline.ingest import ingest_events
from tests.browser.conftest import screenshot
from tests.monitoring.delivery_support import *  # noqa: F403

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# An HTTP exchange as a log line ("GET /v2/data-fields -> 429") or a bare status and reason
# ("429 : Too Many Requests"): what a person should never be shown.
RAW_HTTP = re.compile(
    r"\b(GET|POST|PUT|PATCH|DELETE) /\S* -> \d{3}|\b\d{3} ?: ?[A-Z][a-z]+( [A-Z][a-z]+)+\b"
    r"|\b[45]\d\d (Unauthorized|Forbidden|Not Found|Too Many Requests|Internal Server Error"
    r"|Bad Gateway|Service Unavailable)\b|Traceback \(most recent call last\)"
)

# The width of the page and of every table against the box it sits in.
MEASURE = """() => {
  const doc = document.documentElement;
  const tables = Array.from(document.querySelectorAll("main table")).filter(t => t.offsetParent)
    .map(t => ({id: t.id || t.className, width: t.scrollWidth,
                box: t.parentElement.clientWidth, scrolls: t.parentElement.scrollWidth}));
  return {scroll: doc.scrollWidth, client: doc.clientWidth, tables};
}"""


def _pump(destination: Connection) -> None:
    from monitoring.pipeline.lanes import run_lane
    from monitoring.pipeline.staging.run import run_staging

    for _ in range(30):
        run_staging()
        for lane in ("realtime", "bulk"):
            run_lane(destination.pk, lane, time_budget=5.0, linger=0.0, idle_sleep=0.02)
        busy = (
            SourceEvent.objects.filter(
                state__in=(SourceEvent.State.RECEIVED, SourceEvent.State.READY)
            ).exists()
            or Operation.objects.filter(state__in=("pending", "sending", "sent")).exists()
        )
        if not busy:
            return
        Operation.objects.filter(state="pending").update(
            next_attempt_at=timezone.now() - timedelta(seconds=1)
        )


@pytest.fixture
def demo(dd: Any, settings: Any, tmp_path: Any, monkeypatch: Any) -> Workspace:
    """`make demo`'s workspace and logins, its demo ERP and WMS having sent 300 events (with the
    demo's faults) through the engine to the sandbox, and the flows' schedules registered."""
    from monitoring.pipeline import deliver
    from monitoring.watch.schedules import ensure_schedules

    monkeypatch.setattr(deliver, "BULK_MAX_WAIT", timedelta(0))
    settings.VAR_DIR = tmp_path
    workspace = seed_demo()
    destination = Connection.objects.get(workspace=workspace, kind=Connection.Kind.DOTDIGITAL)
    destination.credentials = {"api_user": dd.auth[0], "password": dd.auth[1]}
    destination.options = {"api_endpoint": dd.url, "discovery_url": dd.url}
    destination.save(update_fields=["credentials", "options"])
    sources = {
        "demo-erp": Connection.objects.get(workspace=workspace, name="Demo ERP"),
        "demo-wms": Connection.objects.get(workspace=workspace, name="Demo WMS"),
    }
    gen = Generator(seed=1, live=True, faults=Faults.demo())
    gen.catalogue_events()
    events = gen.events(300)
    with transaction.atomic():
        for system, source in sources.items():
            ingest_events(
                source, [e for e in events if e["source"]["system"] == system], via="webhook"
            )
    _pump(destination)
    ensure_schedules()
    now = timezone.now().replace(second=0, microsecond=0)
    for flow in Flow.objects.filter(workspace=workspace):
        FlowSample.objects.bulk_create(
            FlowSample(
                flow=flow, at=now - timedelta(minutes=m), backlog=max(0, 6 - abs(m - 45) // 6)
            )
            for m in range(90, 0, -1)
        )
    return workspace


def pages_of(workspace: Workspace, username: str) -> dict[str, str]:
    ws = workspace.slug
    erp = Flow.objects.get(workspace=workspace, name="Demo ERP → DotDigital")
    pages = {
        "dashboard": f"/w/{ws}/",
        "inbox": f"/w/{ws}/inbox/",
        "flows": f"/w/{ws}/flows/",
        "events": f"/w/{ws}/events/",
        "configuration": f"/w/{ws}/config/",
        "config-flows": f"/w/{ws}/config/flows/",
        "mappings": f"/w/{ws}/config/flows/{erp.pk}/mappings/",
        "schedules": f"/w/{ws}/config/schedules/",
        "connections": f"/w/{ws}/config/connections/",
        "alerts": f"/w/{ws}/alerts/",
    }
    team = {"admin": None, "marketing": "marketing", "ops": "ops", "finance": "finance"}[username]
    groups = ExceptionGroup.objects.filter(workspace=workspace)
    group = (groups.filter(team__slug=team) if team else groups).order_by("-pk").first()
    if group is not None:
        pages["group"] = f"/w/{ws}/inbox/{group.pk}/"
    if username == "admin":
        first = erp.field_mappings.get(target="FIRSTNAME")
        pages["mapping-edit"] = f"/w/{ws}/config/flows/{erp.pk}/mappings/{first.pk}/"
        pages["lists"] = f"/w/{ws}/config/lists/"
        pages["routing"] = f"/w/{ws}/config/routing/"
        pages["audit"] = f"/w/{ws}/config/audit/"
    return pages


def check(page: Any, name: str, problems: list[str]) -> None:
    sizes = page.evaluate(MEASURE)
    if sizes["scroll"] > sizes["client"]:
        problems.append(f"{name}: page {sizes['scroll']} > {sizes['client']}")
    for t in sizes["tables"]:
        if t["width"] > t["box"] or t["scrolls"] > t["box"]:
            problems.append(f"{name}: table {t['id']} {t['width']} > {t['box']}")
    raw = RAW_HTTP.search(page.inner_text("body"))
    if raw:
        problems.append(f"{name}: raw HTTP text {raw.group(0)!r}")


@pytest.mark.django_db(transaction=True)
def test_every_personas_main_pages_fit_1280_by_800_without_raw_http_errors(
    browser: Any, live_server: Any, demo: Workspace, dd: Any
):
    problems: list[str] = []
    for username in ("admin", "marketing", "ops", "finance"):
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.goto(f"{live_server.url}/login/")
        page.fill("#id_username", username)
        page.fill("#id_password", DEMO_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_load_state()
        for name, path in pages_of(demo, username).items():
            response = page.goto(f"{live_server.url}{path}")
            assert response is not None and response.status == 200, (username, path)
            if name == "flows":
                page.wait_for_selector(".chart canvas")
            check(page, f"{username} {name}", problems)
            screenshot(page, f"{username}-{name}.png")
        if username == "admin":
            # DotDigital rate-limits the account while the mappings page reads its data fields.
            dd.faults(rate_limit_rate=1.0, match="/v2/data-fields")
            page.goto(f"{live_server.url}{pages_of(demo, username)['mappings']}")
            dd.faults()
            assert "DotDigital is limiting how many calls" in page.inner_text("#account-error")
            check(page, "admin mappings, rate-limited", problems)
            screenshot(page, "admin-mappings-rate-limited.png")
            # A source refusing its credentials: the Flows table keeps its width, in words.
            stokly = Connection.objects.get(workspace=demo, name="Stokly (recorded)")
            stokly.pause(
                "Stokly refused the client id or its secret. An admin corrects them on the "
                "connection's page, then runs Test connection."
            )
            page.goto(f"{live_server.url}/w/{demo.slug}/flows/")
            expect_failing = page.locator(".flows-table tr", has_text="Stokly")
            assert "failing" in expect_failing.inner_text()
            check(page, "admin flows, a connection paused", problems)
            screenshot(page, "admin-flows-paused.png")
        if username == "marketing":
            # Refused (a member's POST to configuration): the site's shell, saying who can.
            page.goto(f"{live_server.url}{pages_of(demo, username)['mappings']}")
            csrf = [c["value"] for c in page.context.cookies() if c["name"] == "csrftoken"]
            response = page.request.post(
                f"{live_server.url}{pages_of(demo, username)['mappings']}",
                form={"target": "X"},
                headers={"X-CSRFToken": csrf[0]},
            )
            assert response.status == 403 and "Workspace admin: admin" in response.text()
        context.close()
    assert not problems, "\n".join(problems)
