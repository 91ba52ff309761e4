"""An admin sets up an outbound webhook through the pages in headless Chromium: a bad URL is
refused on its field, the signing secret is shown once, "Send a test" reaches a real receiver and
the delivery log shows its answer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from outbound import delivery
from outbound.models import Subscription
from tests.browser.conftest import screenshot
from tests.browser.test_configuration_connections import sign_in
from tests.outbound.receiver import Receiver, start_receiver

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver, server = start_receiver()
    yield receiver
    server.shutdown()
    server.server_close()


@pytest.mark.django_db(transaction=True)
def test_an_admin_creates_a_webhook_and_sends_a_test(page, live_server, world, receiver):
    sign_in(page, live_server, "admin")
    page.goto(f"{live_server.url}/w/acme/config/")
    page.click("a:has-text('Outbound webhooks')")
    page.fill("#id_name", "Ticketing")
    page.fill("#id_url", "ftp://tickets.example.com/in")
    page.check("input[value='group.opened']")
    page.check("input[value='alert.triggered']")
    page.click("button:has-text('Add webhook')")
    assert "http:// or https://" in page.locator("#id_url_error").inner_text()
    page.fill("#id_url", receiver.url)
    page.click("button:has-text('Add webhook')")
    page.wait_for_selector("#signing-secret")
    subscription = Subscription.objects.get()
    assert page.locator("#secret").inner_text() == subscription.signing_secret
    page.click("button:has-text('Send a test')")
    page.wait_for_selector("text=A test event is on its way")
    assert (
        "#signing-secret" not in page.content()
        and subscription.signing_secret not in page.content()
    )
    assert delivery.deliver_due() == 1  # what a webhook worker does when woken
    page.reload()
    log = page.locator("#delivery-log").inner_text()
    assert "webhook.test" in log and "HTTP 200" in log
    screenshot(page, "webhook.png")
