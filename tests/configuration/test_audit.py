"""The audit API (accounts.audit) and the audit page."""

from __future__ import annotations

from accounts import audit
from accounts.fields import Secrets
from accounts.models import ConfigChange
from tests.factories import make_connection


def test_it_diffs_plain_fields_key_by_key():
    changes = audit.diff(
        {"name": "A", "options": {"base_url": "https://a", "keep": 1}},
        {"name": "B", "options": {"base_url": "https://b", "keep": 1, "new": True}},
    )
    assert changes == [
        {"field": "name", "before": "A", "after": "B"},
        {"field": "options.base_url", "before": "https://a", "after": "https://b"},
        {"field": "options.new", "before": None, "after": True},
    ]


def test_it_names_a_changed_secret_without_its_value():
    changes = audit.diff(
        {"credentials": {"api_user": "u@x", "password": "old-hunter2"}},
        {"credentials": {"api_user": "u@x", "password": "new-hunter2"}},
        secret_fields=["credentials.password"],
    )
    assert changes == [{"field": "credentials.password", "secret": True}]


def test_it_sees_no_change_when_a_secret_is_unchanged():
    same = {"credentials": {"password": "hunter2"}}
    assert audit.diff(same, same, secret_fields=["credentials"]) == []


def test_a_snapshot_never_holds_a_secret(world):
    conn = make_connection(world.workspace, credentials=Secrets(password="s3cret-value"))
    snap = audit.snapshot(conn, ["name", "credentials"], secret_fields=["credentials"])
    assert "s3cret-value" not in repr(snap) and "s3cret-value" not in str(snap)
    assert isinstance(snap["credentials.password"], audit.Hidden)


def test_record_change_writes_actor_diff_and_object(world):
    conn = make_connection(world.workspace, name="Before")
    before = audit.snapshot(conn, ["name"])
    conn.name = "After"
    conn.save()
    row = audit.record_change(
        world.workspace, world.admin, conn, "changed", before, audit.snapshot(conn, ["name"])
    )
    assert row is not None
    assert (row.actor, row.actor_name, row.object_type, row.object_id) == (
        world.admin,
        "admin",
        "connectors.connection",
        str(conn.pk),
    )
    assert row.lines() == [("name", "Before", "After", False)]
    assert list(audit.history_of(conn)) == [row]


def test_record_change_skips_a_change_that_changed_nothing(world):
    conn = make_connection(world.workspace)
    snap = audit.snapshot(conn, ["name"])
    assert audit.record_change(world.workspace, world.admin, conn, "changed", snap, snap) is None
    assert not ConfigChange.objects.exists()


def test_record_change_hides_secrets_passed_raw(world):
    row = audit.record_change(
        world.workspace,
        None,
        "A label",
        "created",
        None,
        {"credentials": {"token": "raw-secret-123"}},
        secret_fields=["credentials"],
    )
    assert row is not None and row.actor is None and row.who == "Syncdesk"
    assert "raw-secret-123" not in str(row.changes)
    assert row.lines() == [("credentials.token", "", "changed", True)]


def test_the_teams_page_writes_an_audit_row(admin_client, world):
    url = f"/w/{world.workspace.slug}/config/teams/"
    r = admin_client.post(url, {"action": "add", "team": "finance", "user": world.member.pk})
    assert r.status_code == 302
    row = ConfigChange.objects.get()
    assert (row.action, row.object_type, row.actor) == (
        "member_added",
        "accounts.team",
        world.admin,
    )
    assert row.changes == [{"field": "members", "before": [], "after": ["member"]}]
    # adding them again changes nothing and writes nothing
    admin_client.post(url, {"action": "add", "team": "finance", "user": world.member.pk})
    assert ConfigChange.objects.count() == 1
    admin_client.post(url, {"action": "remove", "team": "finance", "user": world.member.pk})
    assert ConfigChange.objects.first().action == "member_removed"
    page = admin_client.get(url).content.decode()
    assert "Member removed" in page and "Member added" in page


def test_the_audit_page_lists_and_filters(member_client, world):
    conn = make_connection(world.workspace, name="Mintsoft Leeds")
    audit.record_change(world.workspace, world.admin, conn, "created", None, {"name": "x"})
    audit.record_change(world.workspace, world.admin, "Marketing", "member_added")
    audit.record_change(world.other, None, "Elsewhere", "created")
    url = f"/w/{world.workspace.slug}/config/audit/"
    page = member_client.get(url).content.decode()
    assert "Mintsoft Leeds" in page and "Marketing" in page and "Elsewhere" not in page
    filtered = member_client.get(url, {"object_type": "connectors.connection"}).content.decode()
    assert "Mintsoft Leeds" in filtered and "Marketing" not in filtered
    by_text = member_client.get(url, {"q": "market"}).content.decode()
    assert "Marketing" in by_text and "Mintsoft Leeds" not in by_text


def test_the_audit_page_answers_htmx_with_its_results_only(member_client, world):
    audit.record_change(world.workspace, world.admin, "Marketing", "member_added")
    r = member_client.get(f"/w/{world.workspace.slug}/config/audit/", HTTP_HX_REQUEST="true")
    body = r.content.decode()
    assert r.status_code == 200 and 'id="results"' in body and "<html" not in body


def test_the_audit_page_reports_a_bad_filter_on_the_field(member_client, world):
    r = member_client.get(f"/w/{world.workspace.slug}/config/audit/", {"actor": world.outsider.pk})
    assert r.status_code == 400
    assert "That person is not in this workspace." in r.content.decode()
