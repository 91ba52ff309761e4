from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.support import make_key

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.mark.django_db(transaction=True)
def test_the_api_docs_page_shows_every_operation_and_calls_with_a_key_offline(
    page, live_server, world
):
    _row, key = make_key(world.workspace, team=None, scope="read")
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    page.goto(f"{live_server.url}/api/v1/docs")
    page.wait_for_selector(".opblock")
    assert page.locator(".opblock").count() == 21
    # Authorize with the key, then try the flows list from the page.
    page.click("button.authorize")
    page.fill(".modal-ux input[type=text]", key)
    page.click(".modal-ux button.authorize")
    page.click(".modal-ux button.btn-done")
    page.click("#operations-flows-api_events_list_flows .opblock-summary")
    page.click("#operations-flows-api_events_list_flows button.try-out__btn")
    page.fill("#operations-flows-api_events_list_flows input[placeholder=ws]", "acme")
    page.click("#operations-flows-api_events_list_flows button.execute")
    status = page.locator(
        "#operations-flows-api_events_list_flows .live-responses-table tbody .response-col_status"
    )
    status.first.wait_for()
    assert status.first.inner_text().strip().startswith("200")
    # Everything the page loaded came from Syncdesk itself: no CDN.
    assert asked and all(url.startswith(live_server.url) for url in asked), asked
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "api-docs.png"), full_page=True)
