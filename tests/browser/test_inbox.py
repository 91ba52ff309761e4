"""A person triages in headless Chromium: filter, assign, bulk-acknowledge, retry, resolved."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from exceptions_inbox.actions import Action, apply_action
from exceptions_inbox.kinds import hooks_of, register_hooks
from exceptions_inbox.recording import clear_occurrences, record_occurrence
from tests.browser.conftest import screenshot
from tests.factories import PASSWORD

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def blocked(workspace, kind, subject, n, **keys):
    for i in range(n):
        occurrence = record_occurrence(
            workspace=workspace,
            kind=kind,
            event_key=f"{kind}:{subject}:{i}",
            stage="stage",
            message=keys.pop("message", f"{subject} blocked"),
            flow_key=keys.get("flow_key", "flow:1"),
            flow_label=keys.get("flow_label", "Mintsoft → DotDigital"),
            subject_key=f"{kind}:{subject}",
            subject_label=subject,
            sku=keys.get("sku", ""),
            email=keys.get("email", ""),
            order_number=f"SO-{1000 + i}",
            source_event_id=f"mintsoft-{subject}-{i}",
            detail={"order_number": f"SO-{1000 + i}", "lines": [{"sku": subject, "qty": 1}]},
        )
    return occurrence.group


@pytest.fixture
def sku_retry_clears(world):
    """Stands in for the engine: a retry gets every event through (today's catalogue has it)."""
    saved = hooks_of("sku_mapping_gap")
    register_hooks(
        "sku_mapping_gap",
        retry=lambda occurrences: clear_occurrences(
            world.workspace, [o.event_key for o in occurrences]
        ),
    )
    yield
    register_hooks("sku_mapping_gap", **saved)


@pytest.mark.django_db(transaction=True)
def test_a_teammate_triages_a_sku_gap_until_it_resolves(page, live_server, world, sku_retry_clears):
    ws = world.workspace
    gap = blocked(ws, "sku_mapping_gap", "AB-12/RED", 40, sku="AB-12/RED")
    blocked(
        ws,
        "sku_mapping_gap",
        "KETTLE 2L",
        3,
        sku="KETTLE 2L",
        flow_key="flow:2",
        flow_label="Brightpearl → DotDigital",
    )
    blocked(ws, "contact_without_email", "Customer 88412", 2)
    blocked(ws, "order_total_mismatch", "SO-20931", 1, flow_label="Brightpearl → DotDigital")
    blocked(ws, "lag", "Mintsoft → DotDigital", 1)
    regressed = blocked(ws, "currency_mismatch", "SO-30022", 1)
    apply_action(regressed, Action.RESOLVE, world.admin)
    blocked(ws, "currency_mismatch", "SO-30022", 2)
    blocked(ws, "schema_mismatch", "LOYALTY_TIER", 4)
    blocked(ws, "segment_gap", "Recent buyers, 30 days", 6)

    # A member lands on their team's tab; this test reads every team's groups.
    page.goto(f"{live_server.url}/login/?next=/w/acme/inbox/%3Ftab%3Dreview")
    page.fill("#id_username", "teammate")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/w/acme/inbox/?tab=review")
    expect(page.locator("table#groups tbody tr")).to_have_count(8)
    expect(page.locator(".tabs a[aria-current=page]")).to_contain_text("For review")
    screenshot(page, "inbox.png")

    # Filter by kind: htmx swaps the results and pushes the URL, no full reload.
    page.evaluate("window.__sameDocument = true")
    page.select_option("#id_kind", "sku_mapping_gap")
    expect(page.locator("table#groups tbody tr")).to_have_count(2)
    page.fill("#id_q", "mintsoft-AB-12/RED-7")  # a source event id of one blocked event
    expect(page.locator("table#groups tbody tr")).to_have_count(1)
    assert "kind=sku_mapping_gap" in page.url
    assert page.evaluate("window.__sameDocument") is True

    # Assign it from the bulk bar.
    row = page.locator(f"tr[data-group='{gap.pk}']")
    row.locator("input[name=groups]").check()
    expect(page.locator("[data-bulk-count]")).to_have_text("1 selected")
    page.select_option("#bulk select[name=assignee]", label="teammate")
    page.click("#bulk button[value=assign]")
    expect(page.locator("#results .messages")).to_contain_text("Assign: 1 group(s).")
    expect(row.locator("td").nth(4)).to_have_text("teammate")

    # Bulk-acknowledge: it leaves For review and shows as acknowledged under Open.
    row.locator("input[name=groups]").check()
    page.click("#bulk button[value=acknowledge]")
    expect(page.locator("#results .messages")).to_contain_text("Acknowledge: 1 group(s).")
    expect(page.locator("table#groups tbody tr[data-group]")).to_have_count(0)
    page.click(".tabs a[data-tab=open]")
    expect(row.locator(".pill")).to_have_text("Acknowledged")
    assert "tab=open" in page.url and page.evaluate("window.__sameDocument") is True
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "inbox-triaged.png"), full_page=True)

    # Retry from the group page: every event gets through and the group resolves itself.
    row.locator("a.group-title").click()
    page.wait_for_url(f"{live_server.url}/w/acme/inbox/{gap.pk}/")
    expect(page.locator("[data-state]")).to_have_text("Acknowledged")
    page.click("button[value=retry]")
    expect(page.locator(".messages")).to_contain_text("every event got through")
    expect(page.locator("[data-state]")).to_have_text("Resolved")
    expect(page.locator("#history")).to_contain_text(
        "Resolved: every event got through by Syncdesk"
    )
    page.screenshot(path=str(ARTIFACTS / "inbox-group-resolved.png"))


@pytest.fixture
def sku_alias_fix(world):
    """Stands in for the engine: suggests catalogue SKUs, and adding an alias retries every event
    the SKU blocked, which now gets through."""
    saved = hooks_of("sku_mapping_gap")
    added = []

    def fix(group, data, actor):
        added.append(data)
        keys = list(group.occurrences.filter(state="open").values_list("event_key", flat=True))
        clear_occurrences(world.workspace, keys)
        return f"Alias {data['alias']} → {data['sku']} added; {len(keys)} events retried."

    register_hooks(
        "sku_mapping_gap",
        fix=fix,
        suggest=lambda group: ["AB-12-RED", "AB-12-BLUE", "KETTLE-2L", "AB12-RD", "TEA-TOWEL"],
    )
    yield added
    register_hooks("sku_mapping_gap", **saved)


@pytest.mark.django_db(transaction=True)
def test_one_alias_from_the_suggestions_releases_every_blocked_event(
    page, live_server, world, sku_alias_fix
):
    gap = blocked(world.workspace, "sku_mapping_gap", "AB-12/RED", 40, sku="AB-12/RED")
    page.goto(f"{live_server.url}/login/?next=/w/acme/inbox/{gap.pk}/")
    page.fill("#id_username", "teammate")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/w/acme/inbox/{gap.pk}/")
    suggestions = page.locator("#fix button.suggestion")
    expect(suggestions.first).to_have_text("AB-12-RED")
    assert "TEA-TOWEL" not in suggestions.all_inner_texts()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "inbox-group-fix.png"))

    suggestions.first.click()
    expect(page.locator(".messages")).to_contain_text("40 events retried")
    expect(page.locator("[data-state]")).to_have_text("Resolved")
    assert sku_alias_fix == [{"alias": "AB-12/RED", "sku": "AB-12-RED"}]
    expect(page.locator("#history")).to_contain_text("Fixed by teammate")


@pytest.mark.django_db(transaction=True)
def test_every_match_acknowledges_the_groups_on_every_page(page, live_server, world):
    ws = world.workspace
    for n in range(30):
        blocked(ws, "sku_mapping_gap", f"SKU-{n:02d}", 1, sku=f"SKU-{n:02d}")
    blocked(ws, "order_total_mismatch", "SO-1", 1)  # finance's: the teammate may not change it

    # A member lands on their team's tab; this test reads every team's groups.
    page.goto(f"{live_server.url}/login/?next=/w/acme/inbox/%3Ftab%3Dreview")
    page.fill("#id_username", "teammate")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/w/acme/inbox/?tab=review")
    expect(page.locator("table#groups tbody tr")).to_have_count(25)  # one page of 31
    expect(page.locator(".select-matching")).to_contain_text("every match (31)")

    page.check("[data-select-matching]")
    expect(page.locator("[data-bulk-count]")).to_have_text("Every match selected")
    page.click("#bulk button[value=acknowledge]")
    expect(page.locator("#results .messages")).to_contain_text(
        "Acknowledge: 30 group(s). Left 1 unchanged: 1 because only its team or an admin may "
        "change it."
    )
    expect(page.locator("table#groups tbody tr[data-group]")).to_have_count(1)
    expect(page.locator(".tabs a[data-tab=open] .count")).to_have_text("31")
