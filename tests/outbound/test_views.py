"""The webhook pages: admins create, edit, pause, resume, test and delete, each audited; members
read (without the receiver's URL or the secret) and get 403 for changes; other workspaces get 404;
a bad form answers 400 with the error on its field."""

from __future__ import annotations

import logging

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from accounts.models import ConfigChange
from outbound import delivery
from outbound.models import Delivery, Subscription
from tests.outbound.conftest import subscribe

pytestmark = pytest.mark.django_db

URL = "https://hooks.example.com/syncdesk?token=abc123"


def as_user(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page(name: str, subscription: Subscription | None = None, ws: str = "acme") -> str:
    kwargs = {"ws": ws} if subscription is None else {"ws": ws, "pk": subscription.pk}
    return reverse(f"outbound:{name}", kwargs=kwargs)


def create(client: Client, **data) -> object:
    return client.post(
        page("list"),
        {"name": "Jira", "url": URL, "events": ["group.opened", "alert.triggered"], **data},
    )


def test_an_admin_creates_a_webhook_and_sees_its_secret_once(world):
    admin = as_user(world.admin)
    response = create(admin)
    subscription = Subscription.objects.get()
    assert response.status_code == 302 and response["Location"] == page("detail", subscription)
    assert subscription.events == ["group.opened", "alert.triggered"]
    assert subscription.signing_secret.startswith("whsec_")
    first = admin.get(page("detail", subscription))
    assert subscription.signing_secret in first.content.decode()
    assert "no-store" in first["Cache-Control"]
    assert (
        subscription.signing_secret not in admin.get(page("detail", subscription)).content.decode()
    )
    change = ConfigChange.objects.get(object_type="outbound.subscription")
    assert (change.action, change.actor) == ("created", world.admin)
    assert subscription.signing_secret not in str(change.changes)
    # A URL may carry the receiver's own token: the audit says only that it changed.
    assert {"field": "url", "secret": True} in change.changes
    assert "abc123" not in str(change.changes)


def test_the_secret_is_encrypted_at_rest_and_in_no_log_line(world, caplog):
    caplog.set_level(logging.DEBUG)
    create(as_user(world.admin))
    subscription = Subscription.objects.get()
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM outbound_subscription")
        [(stored,)] = cursor.fetchall()
    assert subscription.signing_secret not in stored
    assert subscription.signing_secret not in repr(subscription.secret)
    assert subscription.signing_secret not in caplog.text


def test_an_admin_can_reveal_the_secret_again_and_it_is_audited(world):
    subscription = subscribe(world.workspace, URL)
    response = as_user(world.admin).post(page("secret", subscription))
    assert response.status_code == 200
    assert subscription.signing_secret in response.content.decode()
    assert ConfigChange.objects.filter(note="Signing secret revealed.", actor=world.admin).exists()


@pytest.mark.parametrize(
    "url", ["ftp://hooks.example.com/x", "hooks dot example", "javascript:alert(1)"]
)
def test_a_url_that_is_not_http_is_refused_on_its_field(world, url):
    response = create(as_user(world.admin), url=url)
    assert response.status_code == 400
    assert 'id="id_url_error"' in response.content.decode()
    assert not Subscription.objects.exists()


def test_no_event_chosen_is_refused_on_its_field(world):
    response = create(as_user(world.admin), events=[])
    assert response.status_code == 400
    assert 'id="id_events_error"' in response.content.decode()


def test_members_read_without_the_url_and_cannot_change_anything(world):
    subscription = subscribe(world.workspace, URL)
    member = as_user(world.member)
    html = member.get(page("detail", subscription)).content.decode()
    assert "hooks.example.com" in html and "abc123" not in html
    assert subscription.signing_secret not in html
    assert "abc123" not in member.get(page("list")).content.decode()
    create(as_user(world.admin), name="Another")
    audit_page = member.get(reverse("accounts:audit", kwargs={"ws": "acme"})).content.decode()
    assert "Another" in audit_page and "abc123" not in audit_page
    assert create(member).status_code == 403
    for name in ("edit", "pause", "resume", "test", "secret", "delete"):
        assert member.post(page(name, subscription)).status_code == 403, name
    assert member.get(page("edit", subscription)).status_code == 403
    subscription.refresh_from_db()
    assert subscription.state == "active" and not Delivery.objects.exists()


def test_another_workspace_gets_404(world):
    subscription = subscribe(world.workspace, URL)
    outsider = as_user(world.outsider)
    assert outsider.get(page("list")).status_code == 404
    assert outsider.get(page("detail", subscription)).status_code == 404
    # Even its own workspace's admin pages do not reach another workspace's webhook.
    assert outsider.get(page("detail", subscription, ws="other")).status_code == 404
    assert outsider.post(page("delete", subscription, ws="other")).status_code == 404
    assert Subscription.objects.exists()


def test_pause_resume_edit_and_delete_are_audited(world):
    subscription = subscribe(world.workspace, URL)
    admin = as_user(world.admin)
    assert admin.post(page("pause", subscription)).status_code == 302
    subscription.refresh_from_db()
    assert subscription.state == "paused" and subscription.paused_reason == "Paused by admin."
    assert admin.post(page("resume", subscription)).status_code == 302
    response = admin.post(
        page("edit", subscription), {"name": "Linear", "url": URL, "events": ["group.resolved"]}
    )
    assert response.status_code == 302
    subscription.refresh_from_db()
    assert (subscription.name, subscription.events) == ("Linear", ["group.resolved"])
    assert admin.post(page("delete", subscription)).status_code == 302
    assert not Subscription.objects.exists()
    changes = ConfigChange.objects.filter(object_type="outbound.subscription").order_by("pk")
    assert [c.action for c in changes] == ["changed", "changed", "changed", "deleted"]
    assert changes[0].changes == [{"field": "state", "before": "active", "after": "paused"}]
    assert {"field": "name", "before": "Ticketing", "after": "Linear"} in changes[2].changes


def test_send_a_test_reaches_the_receiver_and_shows_in_the_log(world, receiver):
    subscription = subscribe(world.workspace, receiver.url)
    admin = as_user(world.admin)
    assert admin.post(page("test", subscription)).status_code == 302
    assert delivery.deliver_due() == 1
    [request] = receiver.requests
    assert request.headers["Syncdesk-Event"] == "webhook.test"
    html = admin.get(page("detail", subscription)).content.decode()
    assert "webhook.test" in html and "HTTP 200" in html
    assert ConfigChange.objects.filter(action="tested").exists()


def test_a_failing_test_is_tried_once_and_never_pauses(world, receiver):
    receiver.status = 500
    subscription = subscribe(world.workspace, receiver.url)
    for _ in range(delivery.PAUSE_AFTER + 1):
        delivery.queue_test(subscription, world.admin)
        delivery.deliver_due()
    subscription.refresh_from_db()
    assert subscription.state == "active" and subscription.consecutive_failures == 0
    assert set(Delivery.objects.values_list("state", "attempts")) == {("failed", 1)}


def test_the_configuration_page_links_to_the_webhooks(world):
    html = as_user(world.member).get(reverse("monitoring:configuration", kwargs={"ws": "acme"}))
    assert page("list") in html.content.decode()
