"""Connection pages: create, edit, write-only credentials, webhook token shown once, rotation,
who may do what, and the audit rows each change writes."""

from __future__ import annotations

import re

import pytest
from django.db import connection as db

from accounts.fields import Secrets, decrypt
from accounts.models import ConfigChange
from connectors.models import Connection
from connectors.views import NEW_TOKEN_SESSION_KEY
from tests.factories import make_connection

DD_PASSWORD = "dd-Pa55word-never-shown"


def url(world, *parts) -> str:
    return "/".join([f"/w/{world.workspace.slug}/config/connections", *map(str, parts)]) + "/"


def create_dotdigital(admin_client, world, **extra):
    data = {"name": "DotDigital", "api_user": "apiuser-1@apiconnector.com", "password": DD_PASSWORD}
    data.update(extra)
    return admin_client.post(url(world, "new", "dotdigital"), data)


def test_it_creates_a_dotdigital_connection(admin_client, world):
    r = create_dotdigital(admin_client, world)
    conn = Connection.objects.get()
    assert r.status_code == 302 and r["Location"] == url(world, conn.pk)
    assert (conn.workspace, conn.kind, conn.name) == (world.workspace, "dotdigital", "DotDigital")
    assert conn.credentials == {"api_user": "apiuser-1@apiconnector.com", "password": DD_PASSWORD}
    assert conn.webhook_token_hash is None  # a destination has no webhook
    row = ConfigChange.objects.get()
    assert (row.action, row.actor, row.object_id) == ("created", world.admin, str(conn.pk))
    assert {"field": "credentials.password", "secret": True} in row.changes
    assert {
        "field": "credentials.api_user",
        "before": None,
        "after": "apiuser-1@apiconnector.com",
    } in row.changes
    assert DD_PASSWORD not in str(row.changes)


def test_credentials_are_encrypted_at_rest(admin_client, world):
    create_dotdigital(admin_client, world)
    with db.cursor() as cursor:
        cursor.execute("SELECT credentials FROM connectors_connection")
        (raw,) = cursor.fetchone()
    assert DD_PASSWORD not in raw and "apiuser-1" not in raw
    assert raw.startswith("gAAAA")  # a Fernet token


def test_the_edit_form_shows_a_secret_as_set_and_never_its_value(admin_client, world):
    create_dotdigital(admin_client, world)
    conn = Connection.objects.get()
    page = admin_client.get(url(world, conn.pk, "edit")).content.decode()
    assert DD_PASSWORD not in page
    field = re.search(r'<input[^>]*name="password"[^>]*>', page).group(0)
    assert 'type="password"' in field and "value=" not in field
    assert "Set. Leave blank to keep it" in page
    assert 'value="apiuser-1@apiconnector.com"' in page  # the API user is not a secret


def test_a_blank_secret_keeps_the_stored_one_and_a_new_one_replaces_it(admin_client, world):
    create_dotdigital(admin_client, world)
    conn = Connection.objects.get()
    edit = url(world, conn.pk, "edit")
    r = admin_client.post(
        edit, {"name": "DD main", "api_user": "apiuser-1@apiconnector.com", "password": ""}
    )
    assert r.status_code == 302
    conn.refresh_from_db()
    assert (conn.name, conn.credentials["password"]) == ("DD main", DD_PASSWORD)
    renamed = ConfigChange.objects.first()
    assert renamed.changes == [{"field": "name", "before": "DotDigital", "after": "DD main"}]

    admin_client.post(
        edit,
        {"name": "DD main", "api_user": "apiuser-1@apiconnector.com", "password": "brand-new-pass"},
    )
    conn.refresh_from_db()
    assert conn.credentials["password"] == "brand-new-pass"
    row = ConfigChange.objects.first()
    assert row.changes == [{"field": "credentials.password", "secret": True}]
    history = admin_client.get(url(world, conn.pk)).content.decode()
    assert "credentials.password" in history and "changed" in history
    assert "brand-new-pass" not in history and DD_PASSWORD not in history


def test_saving_unchanged_writes_no_audit_row(admin_client, world):
    create_dotdigital(admin_client, world)
    conn = Connection.objects.get()
    admin_client.post(
        url(world, conn.pk, "edit"),
        {"name": "DotDigital", "api_user": "apiuser-1@apiconnector.com"},
    )
    assert ConfigChange.objects.count() == 1


@pytest.mark.parametrize(
    ("kind", "data", "field", "message"),
    [
        (
            "dotdigital",
            {"name": "x", "api_user": "not-an-email", "password": "p"},
            "api_user",
            "valid email",
        ),
        ("dotdigital", {"name": "x", "api_user": "a@apiconnector.com"}, "password", "required"),
        (
            "dotdigital",
            {"name": "", "api_user": "a@apiconnector.com", "password": "p"},
            "name",
            "required",
        ),
        (
            "orderwise",
            {"name": "x", "base_url": "ftp://ow", "username": "u", "password": "p"},
            "base_url",
            "valid URL",
        ),
        (
            "brightpearl",
            {
                "name": "x",
                "datacentre": "eu w1",
                "account_code": "acme",
                "app_ref": "r",
                "account_token": "t",
            },
            "datacentre",
            "Letters, digits",
        ),
    ],
)
def test_bad_input_is_reported_on_its_field(admin_client, world, kind, data, field, message):
    r = admin_client.post(url(world, "new", kind), data)
    assert r.status_code == 400
    assert message in str(r.context["form"].errors[field])
    assert f'id="id_{field}_error"' in r.content.decode()
    assert not Connection.objects.exists()
    assert "p" not in [v for k, v in r.context["form"].initial.items() if k == "password"]


def test_a_duplicate_name_is_reported_on_the_name(admin_client, world):
    make_connection(world.workspace, "canonical", name="WMS")
    r = admin_client.post(url(world, "new", "canonical"), {"name": "wms"})
    assert r.status_code == 400
    assert r.context["form"].errors["name"] == [
        "Another connection in this workspace has that name."
    ]


def test_moving_where_the_secret_is_sent_requires_typing_it_again(admin_client, world):
    create_dotdigital(admin_client, world)
    conn = Connection.objects.get()
    data = {
        "name": "DotDigital",
        "api_user": "apiuser-1@apiconnector.com",
        "discovery_url": "https://evil.example.com",
    }
    r = admin_client.post(url(world, conn.pk, "edit"), data)
    assert r.status_code == 400
    assert "Type it again" in str(r.context["form"].errors["password"])
    conn.refresh_from_db()
    assert "discovery_url" not in conn.options
    r = admin_client.post(url(world, conn.pk, "edit"), {**data, "password": "typed-again"})
    assert r.status_code == 302


def test_a_source_connection_shows_its_webhook_token_once(admin_client, world):
    r = admin_client.post(
        url(world, "new", "mintsoft"),
        {"name": "Mintsoft", "base_url": "https://api.mintsoft.co.uk", "api_key": "mk-123456"},
    )
    conn = Connection.objects.get()
    assert conn.options == {"base_url": "https://api.mintsoft.co.uk"}
    assert conn.credentials == {"api_key": "mk-123456"}
    sealed = admin_client.session[NEW_TOKEN_SESSION_KEY]["token"]
    token = decrypt(sealed)
    assert token not in sealed  # the session table never holds it in plain text
    assert Connection.for_webhook_token(token) == conn
    first = admin_client.get(r["Location"]).content.decode()
    assert f"http://testserver/hooks/{token}/" in first
    assert NEW_TOKEN_SESSION_KEY not in admin_client.session
    again = admin_client.get(r["Location"]).content.decode()
    assert token not in again and "Webhook URL: copy it now" not in again
    assert "mk-123456" not in first and "mk-123456" not in again


def test_rotation_shows_a_new_token_once_and_the_old_one_stops_working(admin_client, world):
    conn = make_connection(world.workspace, "canonical")
    old = conn.rotate_webhook_token()
    r = admin_client.post(url(world, conn.pk, "rotate-token"))
    assert r.status_code == 302
    assert Connection.for_webhook_token(old) is None
    page = admin_client.get(r["Location"]).content.decode()
    new = re.search(r'id="webhook-token">([^<]+)<', page).group(1)
    assert new != old and Connection.for_webhook_token(new) == conn
    assert new not in admin_client.get(r["Location"]).content.decode()
    row = ConfigChange.objects.get()
    assert row.action == "token_rotated" and new not in str(row.changes) + row.note


def test_a_dotdigital_connection_has_no_token_to_rotate(admin_client, world):
    conn = make_connection(world.workspace, "dotdigital")
    assert admin_client.post(url(world, conn.pk, "rotate-token")).status_code == 404


def test_a_member_sees_read_only_pages_and_cannot_post(member_client, world):
    conn = make_connection(world.workspace, "canonical", credentials=Secrets(x="y"))
    detail = member_client.get(url(world, conn.pk)).content.decode()
    assert (
        "Test connection" not in detail and "Rotate token" not in detail and "/edit/" not in detail
    )
    assert "only workspace admins change connections" in detail
    assert member_client.get(url(world)).status_code == 200
    for target in (
        [conn.pk, "edit"],
        [conn.pk, "test"],
        [conn.pk, "rotate-token"],
        ["new", "canonical"],
    ):
        assert member_client.post(url(world, *target), {"name": "hijack"}).status_code == 403
    conn.refresh_from_db()
    assert conn.name != "hijack" and not ConfigChange.objects.exists()


def test_an_outsider_gets_404_everywhere(client, world):
    conn = make_connection(world.workspace, "canonical")
    client.force_login(world.outsider)
    for target in ([], [conn.pk], [conn.pk, "edit"], ["new", "canonical"]):
        assert client.get(url(world, *target)).status_code == 404
    for target in ([conn.pk, "edit"], [conn.pk, "test"], [conn.pk, "rotate-token"]):
        assert client.post(url(world, *target)).status_code == 404
    # and a connection of another workspace is not found through one's own
    other = make_connection(world.other, "canonical")
    client.force_login(world.admin)
    assert client.get(url(world, other.pk)).status_code == 404
