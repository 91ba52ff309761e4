from __future__ import annotations

from pathlib import Path

import pytest

from tests.factories import PASSWORD

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.mark.django_db(transaction=True)
def test_a_person_signs_in_and_lands_in_their_workspace(page, live_server, world):
    page.goto(f"{live_server.url}/w/acme/inbox/")
    assert "/login/" in page.url
    page.fill("#id_username", "teammate")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/w/acme/inbox/")
    assert page.locator("h1").inner_text() == "Inbox"
    assert page.locator("nav.mainnav a[aria-current=page]").inner_text() == "Inbox"
    # htmx loaded from our own static files, not a CDN
    assert page.evaluate("typeof window.htmx") == "object"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "inbox-signed-in.png"), full_page=True)
