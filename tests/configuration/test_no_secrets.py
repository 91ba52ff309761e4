"""No secret in any configuration page we render, nor in any log line, with every kind's secrets set."""

from __future__ import annotations

import logging

import pytest
from django.test import Client

from accounts import audit
from accounts.fields import Secrets
from accounts.models import ConfigChange
from connectors.forms import KIND_SETTINGS, secret_fields
from connectors.models import Connection
from tests.factories import make_connection


def secret_value(kind: str, name: str) -> str:
    return f"SECRET-{kind}-{name}-v4lue"


def connections_with_every_secret_set(world) -> tuple[list[Connection], list[str]]:
    made, secrets = [], []
    for kind, settings in KIND_SETTINGS.items():
        credentials = {}
        options = {}
        for s in settings:
            if s.secret:
                credentials[s.name] = secret_value(kind, s.name)
                secrets.append(credentials[s.name])
            elif s.store == "credentials":
                credentials[s.name] = f"{s.name}@example.com" if s.kind == "email" else "public"
            else:
                options[s.name] = "https://example.com" if s.kind == "url" else "euw1"
        conn = make_connection(
            world.workspace,
            kind,
            name=f"{kind} conn",
            credentials=Secrets(credentials),
            options=options,
        )
        conn.rotate_webhook_token()
        # an audit row for each, as an edit of every secret would write
        before = audit.snapshot(conn, ["credentials"], secret_fields=secret_fields(conn))
        conn.credentials = Secrets({k: v + "-old" for k, v in credentials.items()})
        audit.record_change(
            world.workspace,
            world.admin,
            conn,
            ConfigChange.Action.CHANGED,
            before,
            audit.snapshot(conn, ["credentials"], secret_fields=secret_fields(conn)),
            secret_fields=secret_fields(conn),
        )
        conn.credentials = Secrets(credentials)
        conn.save()
        made.append(conn)
    return made, secrets


def config_pages(world, connections) -> list[str]:
    ws = world.workspace.slug
    pages = [
        f"/w/{ws}/config/",
        f"/w/{ws}/config/connections/",
        f"/w/{ws}/config/audit/",
        f"/w/{ws}/config/teams/",
    ]
    for conn in connections:
        pages += [
            f"/w/{ws}/config/connections/{conn.pk}/",
            f"/w/{ws}/config/connections/{conn.pk}/edit/",
            f"/w/{ws}/config/connectors/{conn.kind}/setup/",
            f"/w/{ws}/config/connections/new/{conn.kind}/",
        ]
    return pages


@pytest.mark.parametrize("persona", ["admin", "member"])
def test_no_configuration_page_renders_a_secret(client: Client, world, persona):
    connections, secrets = connections_with_every_secret_set(world)
    assert len(secrets) >= 8
    client.force_login(getattr(world, persona))
    rendered = 0
    for page in config_pages(world, connections):
        r = client.get(page)
        assert r.status_code in (200, 403), page
        html = r.content.decode()
        for secret in secrets:
            assert secret not in html, f"{page} shows {secret}"
            assert secret + "-old" not in html
        rendered += r.status_code == 200
    assert rendered >= 10
    # and the pages did show that the secrets are set, and the diffs that they changed
    if persona == "admin":
        detail = client.get(f"/w/{world.workspace.slug}/config/connections/{connections[0].pk}/")
        assert ">set<" in detail.content.decode() and "changed" in detail.content.decode()


def test_a_failed_edit_renders_no_secret_back(admin_client, world):
    r = admin_client.post(
        f"/w/{world.workspace.slug}/config/connections/new/dotdigital/",
        {"name": "", "api_user": "bad", "password": "Typed-but-invalid-form-pw"},
    )
    assert r.status_code == 400
    assert "Typed-but-invalid-form-pw" not in r.content.decode()


def test_no_log_line_holds_a_secret(admin_client, world, caplog, sandbox):
    caplog.set_level(logging.DEBUG)
    ws = world.workspace.slug
    base = f"/w/{ws}/config/connections"
    password = "L0gged-never-pw"
    admin_client.post(
        f"{base}/new/dotdigital/",
        {
            "name": "DD",
            "api_user": sandbox.auth[0],
            "password": password,
            "discovery_url": sandbox.url,
        },
    )
    conn = Connection.objects.get(kind="dotdigital")
    admin_client.post(f"{base}/{conn.pk}/test/")  # wrong password: DotDigital refuses
    admin_client.post(
        f"{base}/{conn.pk}/edit/",
        {
            "name": "DD",
            "api_user": sandbox.auth[0],
            "password": sandbox.auth[1],
            "discovery_url": sandbox.url,
        },
    )
    admin_client.post(f"{base}/{conn.pk}/test/")  # now it works
    admin_client.post(
        f"{base}/{conn.pk}/edit/",
        {
            "name": "DD",
            "api_user": sandbox.auth[0],
            "password": password,
            "discovery_url": "http://127.0.0.1:9",
        },
    )
    admin_client.post(f"{base}/{conn.pk}/test/")  # unreachable
    admin_client.post(
        f"{base}/new/mintsoft/",
        {"name": "M", "base_url": "https://api.mintsoft.co.uk", "api_key": "Mk-secret-key-1"},
    )
    m = Connection.objects.get(kind="mintsoft")
    admin_client.post(f"{base}/{m.pk}/rotate-token/")
    conn.refresh_from_db()
    assert conn.last_error and ConfigChange.objects.filter(action="tested").count() == 3
    assert caplog.records, "the actions log what they do"
    everything = caplog.text + "".join(repr(r.args) + str(r.msg) for r in caplog.records)
    for secret in (password, sandbox.auth[1], "Mk-secret-key-1"):
        assert secret not in everything
    # nor the webhook token, shown once on the page only
    token = admin_client.session.get("connectors.new_webhook_token", {}).get("token")
    assert token and token not in everything
