"""SKU aliases (cleaned as staging matches them; CSV import with errors per line, and export),
schedules mirrored into beat and removed with their flow, routing rules and the runbook."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django_celery_beat.models import PeriodicTask

from accounts.models import ConfigChange
from exceptions_inbox.models import RoutingRule
from monitoring.models import Flow, Product, Schedule, SkuAlias
from tests.factories import make_connection


@pytest.fixture
def flow(world):
    source = make_connection(world.workspace, "canonical", name="WMS")
    return Flow.objects.create(workspace=world.workspace, name="WMS", source=source)


def csv_file(text: str) -> SimpleUploadedFile:
    return SimpleUploadedFile("aliases.csv", text.encode(), content_type="text/csv")


def test_an_alias_is_stored_as_staging_matches_it(admin_client, world, flow):
    r = admin_client.post(
        f"/w/{world.workspace.slug}/config/sku-aliases/",
        {"alias_key": "  Hat-1 Red ", "sku": "HAT-1/RED", "flow": flow.pk},
    )
    assert r.status_code == 302
    alias = SkuAlias.objects.get()
    assert (alias.alias_key, alias.sku, alias.flow) == ("hat-1 red", "HAT-1/RED", flow)
    change = ConfigChange.objects.get(object_type="monitoring.skualias")
    assert change.action == "created"
    assert {"field": "sku", "before": None, "after": "HAT-1/RED"} in change.changes


def test_an_alias_to_a_sku_outside_the_catalogue_is_refused_on_the_field(admin_client, world, flow):
    Product.objects.create(
        workspace=world.workspace,
        sku="HAT-1",
        sku_key="hat-1",
        product_key="p1",
        source_version="2024-01-01T00:00Z",
    )
    r = admin_client.post(
        f"/w/{world.workspace.slug}/config/sku-aliases/", {"alias_key": "hat one", "sku": "HAT-2"}
    )
    assert r.status_code == 400
    assert "HAT-2 is not in the catalogue" in r.context["form"].errors["sku"][0]
    assert 'id="id_sku_error"' in r.content.decode()


def test_csv_import_reports_each_bad_line_and_imports_nothing(admin_client, world, flow):
    text = "alias,sku,flow\nhat 1,HAT-1,WMS\n,HAT-2,\nhat 3,HAT-3,Nowhere\nhat 1,HAT-9,wms\n"
    r = admin_client.post(
        f"/w/{world.workspace.slug}/config/sku-aliases/import/", {"file": csv_file(text)}
    )
    assert r.status_code == 400
    errors = r.context["imported"].errors
    assert errors == [
        (3, "The alias is empty."),
        (4, "No flow is called “Nowhere”."),
        (5, "hat 1 is already on line 2."),
    ]
    assert "Line 4: No flow is called" in r.content.decode()
    assert not SkuAlias.objects.exists()


def test_csv_import_then_export_round_trips(admin_client, world, flow):
    text = "alias,sku,flow\nHat 1,HAT-1,WMS\nbeanie,HAT-1,\n=cmd,HAT-2,\n"
    r = admin_client.post(
        f"/w/{world.workspace.slug}/config/sku-aliases/import/", {"file": csv_file(text)}
    )
    assert r.status_code == 302
    assert SkuAlias.objects.count() == 3
    assert (
        ConfigChange.objects.filter(object_type="monitoring.skualias", action="created").count()
        == 3
    )
    exported = admin_client.get(f"/w/{world.workspace.slug}/config/sku-aliases/export/")
    body = b"".join(
        exported.streaming_content if exported.streaming else [exported.content]
    ).decode()
    assert body.splitlines() == [
        "alias,sku,flow",
        "'=cmd,HAT-2,",
        "beanie,HAT-1,",
        "hat 1,HAT-1,WMS",
    ]
    # importing the export changes nothing
    r = admin_client.post(
        f"/w/{world.workspace.slug}/config/sku-aliases/import/", {"file": csv_file(body)}
    )
    assert r.status_code == 302 and SkuAlias.objects.count() == 3


def test_a_schedule_is_mirrored_into_beat_enabled_and_disabled(admin_client, world, flow):
    ws = world.workspace.slug
    r = admin_client.post(
        f"/w/{ws}/config/schedules/",
        {
            "name": "poll wms",
            "flow": flow.pk,
            "task": "monitoring.poll_flow",
            "every_seconds": 120,
            "queue": "bulk",
            "enabled": "on",
        },
    )
    assert r.status_code == 302
    schedule = Schedule.objects.get()
    task = PeriodicTask.objects.get(name=schedule.beat_name)
    assert (task.task, task.args, task.enabled, task.interval.every) == (
        "monitoring.poll_flow",
        f"[{flow.pk}]",
        True,
        120,
    )
    admin_client.post(f"/w/{ws}/config/schedules/{schedule.pk}/toggle/")
    task.refresh_from_db()
    assert task.enabled is False
    r = admin_client.post(
        f"/w/{ws}/config/schedules/{schedule.pk}/",
        {
            "name": "poll wms",
            "flow": flow.pk,
            "task": "monitoring.poll_flow",
            "crontab": "*/5 8-20 * * 1-5",
            "queue": "bulk",
        },
    )
    assert r.status_code == 302
    task.refresh_from_db()
    assert task.crontab is not None and task.crontab.hour == "8-20" and task.interval is None
    changes = ConfigChange.objects.filter(object_type="monitoring.schedule").order_by("pk")
    assert [c.action for c in changes] == ["created", "changed", "changed"]
    assert {"field": "enabled", "before": True, "after": False} in changes[1].changes


def test_schedule_errors_are_on_their_fields(admin_client, world, flow):
    r = admin_client.post(
        f"/w/{world.workspace.slug}/config/schedules/",
        {
            "name": "x",
            "task": "monitoring.poll_flow",
            "crontab": "61 * * * *",
            "every_seconds": 60,
            "queue": "bulk",
        },
    )
    assert r.status_code == 400
    errors = r.context["form"].errors
    assert "flow" in errors and "crontab" in errors
    assert not PeriodicTask.objects.filter(name__startswith="syncdesk:").exists()


def test_schedules_are_removed_with_their_flow(admin_client, world, flow):
    ws = world.workspace.slug
    admin_client.post(
        f"/w/{ws}/config/schedules/",
        {
            "name": "poll wms",
            "flow": flow.pk,
            "task": "monitoring.poll_flow",
            "every_seconds": 120,
            "queue": "bulk",
            "enabled": "on",
        },
    )
    beat_name = Schedule.objects.get().beat_name
    assert PeriodicTask.objects.filter(name=beat_name).exists()
    r = admin_client.post(f"/w/{ws}/config/flows/{flow.pk}/delete/")
    assert r.status_code == 302
    assert not Flow.objects.exists() and not Schedule.objects.exists()
    assert not PeriodicTask.objects.filter(name=beat_name).exists()
    assert ConfigChange.objects.filter(object_type="monitoring.flow", action="deleted").exists()


def test_routing_rules_set_the_owner_and_the_runbook_follows(
    admin_client, member_client, world, flow
):
    ws = world.workspace.slug
    finance = world.workspace.teams.get(slug="finance")
    r = admin_client.post(
        f"/w/{ws}/config/routing/", {"kind": "sku_mapping_gap", "flow": flow.pk, "team": finance.pk}
    )
    assert r.status_code == 302
    rule = RoutingRule.objects.get()
    assert (rule.flow_key, rule.team) == (flow.key, finance)
    book = member_client.get(f"/w/{ws}/config/runbook/").content.decode()
    section = book.split('id="team-finance"')[1].split("</section>")[0]
    assert "SKU not in the catalogue" in section and "WMS" in section
    assert "How to respond" in book and "Every day" in book
    r = admin_client.post(f"/w/{ws}/config/routing/{rule.pk}/delete/")
    assert r.status_code == 302 and not RoutingRule.objects.exists()
    assert [
        c.action
        for c in ConfigChange.objects.filter(object_type="exceptions_inbox.routingrule").order_by(
            "pk"
        )
    ] == ["created", "deleted"]


def test_flow_settings_are_audited_and_errors_are_on_the_field(admin_client, world, flow):
    ws = world.workspace.slug
    data = {
        "form": "flow",
        "name": "WMS",
        "is_active": "on",
        "guest_policy": "exclude",
        "join_key": "channel_order_ref",
        "hold_dispatch_for_scan": "on",
        "orphan_hold_seconds": 3600,
        "scan_hold_seconds": 10,
        "lag_threshold_seconds": 600,
    }
    r = admin_client.post(f"/w/{ws}/config/flows/{flow.pk}/", data)
    assert r.status_code == 400
    assert "At least 60" in r.context["form"].errors["scan_hold_seconds"][0]
    r = admin_client.post(f"/w/{ws}/config/flows/{flow.pk}/", {**data, "scan_hold_seconds": 7200})
    assert r.status_code == 302
    flow.refresh_from_db()
    assert (flow.guest_policy, flow.hold_dispatch_for_scan, flow.scan_hold_seconds) == (
        "exclude",
        True,
        7200,
    )
    change = ConfigChange.objects.get(object_type="monitoring.flow")
    assert {"field": "guest_policy", "before": "merge", "after": "exclude"} in change.changes
    page = admin_client.get(f"/w/{ws}/config/flows/{flow.pk}/").content.decode()
    assert "<ins>exclude</ins>" in page


def test_alerting_webhook_is_write_only_and_audited_as_changed(admin_client, world, flow):
    ws = world.workspace.slug
    hook = "https://hooks.example.com/services/T000/B000/SeCrEtToKeN"
    data = {
        "form": "watch",
        "enabled": "on",
        "stalled_grace_minutes": 90,
        "trading_days": "0123456",
        "trading_start": "07:00",
        "trading_end": "22:00",
        "trading_timezone": "Europe/London",
        "lag_for_minutes": 5,
        "escalate_after_minutes": 30,
        "owning_team": "ops",
        "webhook_url": hook,
        "reconcile_sample": 0,
        "reconcile_source_days": 7,
    }
    bad = admin_client.post(
        f"/w/{ws}/config/flows/{flow.pk}/", {**data, "trading_timezone": "Mars/Base"}
    )
    assert "time zone" in bad.context["watch_form"].errors["trading_timezone"][0]
    assert hook not in bad.content.decode()
    r = admin_client.post(f"/w/{ws}/config/flows/{flow.pk}/", data)
    assert r.status_code == 302
    flow.watch.refresh_from_db()
    assert flow.watch.webhook_url == hook and flow.watch.stalled_grace_minutes == 90
    change = ConfigChange.objects.get(object_type="monitoring.flow")
    assert {"field": "webhook_url", "secret": True} in change.changes
    page = admin_client.get(f"/w/{ws}/config/flows/{flow.pk}/").content.decode()
    assert hook not in page and "SeCrEtToKeN" not in page


def test_reconciliation_sample_and_source_window_are_set_with_the_alerting(
    admin_client, world, flow
):
    ws = world.workspace.slug
    data = {
        "form": "watch",
        "enabled": "on",
        "stalled_grace_minutes": 60,
        "trading_days": "01234",
        "trading_start": "07:00",
        "trading_end": "22:00",
        "trading_timezone": "Europe/London",
        "lag_for_minutes": 5,
        "escalate_after_minutes": 30,
        "owning_team": "finance",
        "reconcile_sample": 500,
        "reconcile_source_days": -1,
    }
    bad = admin_client.post(f"/w/{ws}/config/flows/{flow.pk}/", data)
    assert "reconcile_source_days" in bad.context["watch_form"].errors
    r = admin_client.post(f"/w/{ws}/config/flows/{flow.pk}/", {**data, "reconcile_source_days": 30})
    assert r.status_code == 302
    flow.watch.refresh_from_db()
    assert (flow.watch.reconcile_sample, flow.watch.reconcile_source_days) == (500, 30)
    change = ConfigChange.objects.get(object_type="monitoring.flow")
    assert {"field": "reconcile_source_days", "before": 7, "after": 30} in change.changes


def test_a_flows_payload_retention_is_set_on_its_policies_page(admin_client, world, flow):
    ws = world.workspace.slug
    data = {
        "form": "flow",
        "name": "WMS",
        "is_active": "on",
        "guest_policy": "merge",
        "join_key": "order_number",
        "orphan_hold_seconds": 3600,
        "scan_hold_seconds": 3600,
        "lag_threshold_seconds": 900,
        "payload_retention_days": 0,
    }
    r = admin_client.post(f"/w/{ws}/config/flows/{flow.pk}/", data)
    assert r.status_code == 400
    assert "payload_retention_days" in r.context["form"].errors
    r = admin_client.post(f"/w/{ws}/config/flows/{flow.pk}/", {**data, "payload_retention_days": 7})
    assert r.status_code == 302
    flow.refresh_from_db()
    assert flow.payload_retention_days == 7
    change = ConfigChange.objects.get(object_type="monitoring.flow")
    assert {"field": "payload_retention_days", "before": None, "after": 7} in change.changes
    # blank: back to PAYLOAD_RETENTION_DAYS
    r = admin_client.post(
        f"/w/{ws}/config/flows/{flow.pk}/", {**data, "payload_retention_days": ""}
    )
    flow.refresh_from_db()
    assert flow.payload_retention_days is None
