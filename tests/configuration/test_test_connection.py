""" "Test connection": against the real DotDigital sandbox process, a source adapter, and an
unreachable endpoint; a success resumes a paused connection."""

from __future__ import annotations

import socket

from accounts.fields import Secrets
from accounts.models import ConfigChange
from connectors.models import Connection
from tests.factories import make_connection


def dotdigital(world, sandbox, password=None, **options):
    return make_connection(
        world.workspace,
        "dotdigital",
        name="DotDigital",
        credentials=Secrets(api_user=sandbox.auth[0], password=password or sandbox.auth[1]),
        options={"discovery_url": sandbox.url, **options},
    )


def action_url(world, conn) -> str:
    return f"/w/{world.workspace.slug}/config/connections/{conn.pk}/test/"


def test_it_discovers_the_endpoint_and_resumes_a_paused_connection(admin_client, world, sandbox):
    conn = dotdigital(world, sandbox)
    conn.pause("401 from DotDigital")
    r = admin_client.post(action_url(world, conn), follow=True)
    conn.refresh_from_db()
    assert conn.status == Connection.Status.ACTIVE and conn.paused_reason == ""
    assert conn.options["api_endpoint"] == sandbox.url
    assert conn.options["account_id"]
    assert conn.last_tested_at is not None and conn.last_error == ""
    page = r.content.decode()
    assert "DotDigital answered" in page and "now active again" in page
    assert sandbox.auth[1] not in page
    row = ConfigChange.objects.get()
    assert row.action == "tested" and row.actor == world.admin
    assert {"field": "status", "before": "paused", "after": "active"} in row.changes
    assert {"field": "options.api_endpoint", "before": None, "after": sandbox.url} in row.changes


def test_htmx_gets_the_status_panel_back(admin_client, world, sandbox):
    conn = dotdigital(world, sandbox)
    r = admin_client.post(action_url(world, conn), HTTP_HX_REQUEST="true")
    body = r.content.decode()
    assert r.status_code == 200 and "<html" not in body
    assert 'id="connection-status"' in body and "DotDigital answered" in body


def test_a_wrong_password_shows_dotdigitals_message_without_the_password(
    admin_client, world, sandbox, caplog
):
    wrong = "Wr0ng-password-xyz"
    conn = dotdigital(world, sandbox, password=wrong)
    conn.pause("earlier failure")
    caplog.set_level("DEBUG")
    r = admin_client.post(action_url(world, conn), follow=True)
    conn.refresh_from_db()
    assert conn.status == Connection.Status.PAUSED  # a failed test resumes nothing
    assert conn.last_error.startswith("DotDigital refused")
    page = r.content.decode()
    assert "Test failed: DotDigital refused" in page
    assert wrong not in page and wrong not in conn.last_error
    assert wrong not in caplog.text
    assert all(wrong not in repr(rec.args) for rec in caplog.records)


def test_an_unreachable_endpoint_is_reported_and_logged_without_secrets(
    admin_client, world, caplog
):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    conn = make_connection(
        world.workspace,
        "dotdigital",
        credentials=Secrets(api_user="u@apiconnector.com", password="Unreachable-pass-1"),
        options={"discovery_url": f"http://127.0.0.1:{port}"},
    )
    caplog.set_level("DEBUG")
    r = admin_client.post(action_url(world, conn), follow=True)
    conn.refresh_from_db()
    assert "connection failed" in conn.last_error
    assert "Unreachable-pass-1" not in r.content.decode()
    assert "Unreachable-pass-1" not in caplog.text
    assert f"Connection {conn.pk} (dotdigital) test failed" in caplog.text


def test_a_source_is_tested_by_its_adapter(admin_client, world):
    conn = make_connection(world.workspace, "canonical")
    conn.pause("test")
    admin_client.post(action_url(world, conn))
    conn.refresh_from_db()
    assert conn.status == Connection.Status.ACTIVE and conn.last_error == ""
    assert "push-only" in ConfigChange.objects.get().note


def test_a_source_without_an_adapter_says_so(admin_client, world, monkeypatch):
    monkeypatch.setattr("connectors.views.get_adapter", lambda kind: None)
    conn = make_connection(world.workspace, "orderwise", credentials=Secrets(password="ow-1234"))
    admin_client.post(action_url(world, conn))
    conn.refresh_from_db()
    assert "no adapter" in conn.last_error


def test_a_source_adapters_refusal_is_shown(admin_client, world):
    conn = make_connection(world.workspace, "stokly", credentials=Secrets(secret="cs-1234"))
    admin_client.post(action_url(world, conn))
    conn.refresh_from_db()
    assert conn.last_error.startswith("No Stokly credentials")
