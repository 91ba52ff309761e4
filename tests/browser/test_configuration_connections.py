"""An admin creates connections through the pages in headless Chromium: DotDigital (tested
against the sandbox process) and a source whose webhook URL is shown once."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.models import Connection
from tests.connectors.dotdigital.conftest import dotdigital_sandbox, sandbox  # noqa: F401
from tests.factories import PASSWORD

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def sign_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


@pytest.mark.django_db(transaction=True)
def test_an_admin_creates_and_tests_connections(page, live_server, world, sandbox):  # noqa: F811
    ARTIFACTS.mkdir(exist_ok=True)
    sign_in(page, live_server, "admin")
    page.goto(f"{live_server.url}/w/acme/config/")
    page.click("text=Add a connection")
    page.click("a.button:has-text('DotDigital')")
    # bad input is reported on its field
    page.fill("#id_name", "DotDigital")
    page.fill("#id_api_user", "not-an-email")
    page.click("button:has-text('Create connection')")
    assert "valid email" in page.locator("#id_api_user_error").inner_text()
    assert page.input_value("#id_password") == ""
    page.fill("#id_api_user", sandbox.auth[0])
    page.fill("#id_password", sandbox.auth[1])
    page.fill("#id_discovery_url", sandbox.url)
    page.screenshot(path=str(ARTIFACTS / "config-connection-form.png"), full_page=True)
    page.click("button:has-text('Create connection')")
    page.wait_for_selector("h1:has-text('DotDigital')")
    conn = Connection.objects.get(kind="dotdigital")
    conn.pause("401 from DotDigital")
    page.reload()
    assert "Paused" in page.locator("#connection-status").inner_text()
    page.click("#test-connection")  # htmx swaps the status panel in place
    page.wait_for_selector("#test-outcome")
    status = page.locator("#connection-status").inner_text()
    assert "DotDigital answered" in status and "Active" in status
    page.reload()
    assert sandbox.url in page.locator("#settings").inner_text()
    assert sandbox.auth[1] not in page.content()
    page.screenshot(path=str(ARTIFACTS / "config-connection-dotdigital.png"), full_page=True)

    # a source: its webhook URL, with the token, is shown once
    page.goto(f"{live_server.url}/w/acme/config/connections/")
    page.click("a.button:has-text('Canonical webhook')")
    page.fill("#id_name", "Warehouse")
    page.click("button:has-text('Create connection')")
    url = page.locator("#webhook-url").inner_text()
    assert url.startswith(f"{live_server.url}/hooks/")
    token = url.rstrip("/").rsplit("/", 1)[1]
    assert Connection.for_webhook_token(token) == Connection.objects.get(name="Warehouse")
    page.screenshot(path=str(ARTIFACTS / "config-connection-webhook.png"), full_page=True)
    page.reload()
    assert token not in page.content() and page.locator("#new-token").count() == 0
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#rotate-token")
    page.wait_for_selector("#webhook-url")
    assert token not in page.content()
    assert Connection.for_webhook_token(token) is None

    page.goto(f"{live_server.url}/w/acme/config/audit/")
    audit = page.locator("#results").inner_text()
    assert "Webhook token rotated" in audit and "Tested" in audit and "Created" in audit
    page.screenshot(path=str(ARTIFACTS / "config-audit.png"), full_page=True)
