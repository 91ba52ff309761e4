from __future__ import annotations

from exceptions_inbox.recording import record_occurrence
from monitoring.models import SourceEvent
from tests.monitoring.watch_support import make_event, make_flow


def test_the_dashboard_counts_open_exceptions_by_team_and_todays_events(client, world):
    flow = make_flow(world.workspace, name="Mintsoft → DotDigital")
    for _ in range(3):
        make_event(flow)
    make_event(flow, state=SourceEvent.State.HELD)
    for n, kind in enumerate(["sku_mapping_gap", "sku_mapping_gap", "order_total_mismatch"]):
        record_occurrence(
            workspace=world.workspace,
            kind=kind,
            event_key=f"event:{n}",
            stage="stage",
            message="x",
            flow_key=flow.key,
            subject_key=f"s:{n}",
        )
    client.force_login(world.member)
    html = client.get("/w/acme/").content.decode()
    assert '<p class="figure">3</p>' in html  # open exceptions
    assert "<span>Ops</span><strong>2</strong>" in html
    assert "<span>Finance</span><strong>1</strong>" in html
    assert '<p class="figure">4</p>' in html  # events in the last 24 hours
    assert "Mintsoft → DotDigital" in html and "pill-healthy" in html


def test_an_empty_workspace_dashboard_says_so(client, world):
    client.force_login(world.member)
    html = client.get("/w/acme/").content.decode()
    assert "Nothing waiting for anyone." in html
    assert "No flows yet." in html
    assert "No events received in the last 24 hours." in html
