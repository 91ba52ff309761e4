"""An admin creates a field mapping after a dry run, a SKU alias and a SKU cleaning rule, in
headless Chromium."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitoring.models import FieldMapping, SkuAlias, SourceEvent
from tests.browser.test_configuration_connections import sign_in
from tests.factories import make_member
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import Engine

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.mark.django_db(transaction=True)
def test_an_admin_dry_runs_and_saves_a_mapping_then_adds_an_alias(
    page, live_server, engine: Engine
):
    from monitoring.pipeline.staging.run import run_staging
    from tests.configuration.test_config_dry_run import order_created

    ARTIFACTS.mkdir(exist_ok=True)
    make_member(engine.workspace, "admin", role="admin")
    engine.post(
        "erp",
        [order_created("SO-9", "mo@example.com", "99.99", datetime.now(UTC) - timedelta(hours=1))],
    )
    run_staging()
    event = SourceEvent.objects.get(event_type="order.created")
    ws = engine.workspace.slug
    sign_in(page, live_server, "admin")
    page.goto(f"{live_server.url}/w/{ws}/config/")
    page.click("h2 a:has-text('Flows')")
    page.click(f"a:has-text('{engine.erp_flow.name}')")
    page.click("a:has-text('Field mappings')")

    # a field the account lacks: named on the field, created from the page
    page.fill("#id_target", "spend_band")
    page.select_option("#id_source_path", "customer.lifetime_value")
    page.select_option("#id_type", "string")
    page.fill("#id_transform", "scale:0|map:100=High")
    page.click("#save-mapping")
    assert "not a data field" in page.locator("#id_target_error").inner_text()
    page.click("#create-field button")
    page.wait_for_selector("text=created in DotDigital")

    page.fill("#id_target", "spend_band")
    page.select_option("#id_source_path", "customer.lifetime_value")
    page.select_option("#id_type", "string")
    page.fill("#id_transform", "scale:0|map:100=High")
    page.select_option("#id_event", str(event.pk))
    page.click("#dry-run-button")
    page.wait_for_selector("#dry-run-operations")
    operations = page.locator("#dry-run-operations").inner_text()
    assert (
        "contact:mo@example.com" in operations
        and "SPEND_BAND" in operations
        and "High" in operations
    )
    assert not FieldMapping.objects.filter(target="SPEND_BAND").exists()
    page.screenshot(path=str(ARTIFACTS / "config-mapping-dry-run.png"), full_page=True)
    page.click("#save-mapping")
    page.wait_for_selector("text=saved")
    assert (
        FieldMapping.objects.get(flow=engine.erp_flow, target="SPEND_BAND").transform
        == "scale:0|map:100=High"
    )

    page.goto(f"{live_server.url}/w/{ws}/config/sku-aliases/")
    page.fill("#id_alias_key", " Hat-1 Red ")
    page.fill("#id_sku", "HAT-1")
    page.click("#add-alias")
    page.wait_for_selector("#aliases >> text=hat-1 red")
    assert SkuAlias.objects.get().sku == "HAT-1"

    # and a cleaning rule for the ERP flow's SKUs, on the same page
    page.select_option("#id_cleaning_flow", str(engine.erp_flow.pk))
    page.fill("#id_cleaning_rules", "strip_prefix:UK-\nreplace:_=-")
    page.click("#save-cleaning")
    page.wait_for_selector("text=Cleaning rules of")
    engine.erp_flow.refresh_from_db()
    assert engine.erp_flow.sku_cleaning == "strip_prefix:UK-\nreplace:_=-"
    assert "replace:_=-" in page.locator("#cleaning-rules").inner_text()
    page.screenshot(path=str(ARTIFACTS / "config-sku-aliases.png"), full_page=True)
