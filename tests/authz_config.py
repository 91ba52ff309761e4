"""Authorization rows for the engine's configuration pages (merged into tests/authz.py's RULES)."""

from __future__ import annotations

from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile

from exceptions_inbox.models import RoutingRule
from monitoring.models import DirectEnrolment, FieldMapping, Flow, Schedule, SkuAlias
from tests.authz import ADMIN_FORM_POST, GET_ONLY, LOGIN, WORKSPACE_PAGE, Rule, each
from tests.factories import make_connection

POST_ONLY = each(LOGIN, 405, 405, 405, 405)
ADMIN_ONLY_FORM = each(LOGIN, 404, 403, 403, 200)
# A DotDigital connection nobody answers for (a closed local port): calls fail at once.
UNREACHABLE = {"api_endpoint": "http://127.0.0.1:9", "discovery_url": "http://127.0.0.1:9"}


def _ws(world: Any) -> dict[str, Any]:
    return {"ws": world.workspace.slug}


def _flow(world: Any) -> Flow:
    source = make_connection(world.workspace, "canonical", name="authz source")
    return Flow.objects.create(workspace=world.workspace, name="authz flow", source=source)


def _flow_kwargs(world: Any) -> dict[str, Any]:
    return {"ws": world.workspace.slug, "pk": _flow(world).pk}


def _mapping_kwargs(world: Any) -> dict[str, Any]:
    flow = _flow(world)
    mapping = FieldMapping.objects.create(
        flow=flow, target="FIRSTNAME", source_path="customer.first_name"
    )
    return {"ws": world.workspace.slug, "pk": flow.pk, "mapping": mapping.pk}


def _flow_settings(world: Any) -> dict[str, Any]:
    return {
        "form": "flow",
        "name": "authz flow",
        "is_active": "on",
        "guest_policy": "merge",
        "join_key": "order_number",
        "orphan_hold_seconds": 3600,
        "scan_hold_seconds": 3600,
        "lag_threshold_seconds": 900,
    }


def _new_flow(world: Any) -> dict[str, Any]:
    source = make_connection(world.workspace, "canonical")
    return {**_flow_settings(world), "name": "A new flow", "source": source.pk}


def _mapping(world: Any) -> dict[str, Any]:
    return {
        "target": "FIRST_NAME",
        "source_path": "customer.first_name",
        "type": "string",
        "transform": "trim",
        "enabled": "on",
    }


def _alias_kwargs(world: Any) -> dict[str, Any]:
    alias = SkuAlias.objects.create(workspace=world.workspace, alias_key="hat-1", sku="HAT-1")
    return {"ws": world.workspace.slug, "pk": alias.pk}


def _csv(world: Any) -> dict[str, Any]:
    return {"file": SimpleUploadedFile("a.csv", b"alias,sku,flow\nhat 1,HAT-1,\n")}


def _schedule_kwargs(world: Any) -> dict[str, Any]:
    schedule = Schedule.objects.create(
        workspace=world.workspace,
        name="authz pull",
        task="monitoring.pull_suppressions",
        every_seconds=600,
    )
    return {"ws": world.workspace.slug, "pk": schedule.pk}


def _schedule(world: Any) -> dict[str, Any]:
    return {
        "name": "authz pull",
        "task": "monitoring.pull_suppressions",
        "every_seconds": 900,
        "queue": "bulk",
        "enabled": "on",
    }


def _routing(world: Any) -> dict[str, Any]:
    return {"kind": "sku_mapping_gap", "team": world.workspace.teams.get(slug="ops").pk}


def _rule_kwargs(world: Any) -> dict[str, Any]:
    rule = RoutingRule.objects.create(
        workspace=world.workspace,
        kind="sku_mapping_gap",
        team=world.workspace.teams.get(slug="ops"),
    )
    return {"ws": world.workspace.slug, "pk": rule.pk}


def _destination_kwargs(world: Any) -> dict[str, Any]:
    conn = make_connection(world.workspace, "dotdigital", name="authz DD", options=UNREACHABLE)
    return {"ws": world.workspace.slug, "pk": conn.pk}


def _enrolment_kwargs(world: Any) -> dict[str, Any]:
    conn = make_connection(world.workspace, "dotdigital", name="authz DD", options=UNREACHABLE)
    row = DirectEnrolment.objects.create(
        workspace=world.workspace, destination=conn, program_id=7, event_type="order.created"
    )
    return {"ws": world.workspace.slug, "pk": row.pk}


def _flow_to_dd_kwargs(world: Any) -> dict[str, Any]:
    flow = _flow(world)
    flow.destination = make_connection(
        world.workspace, "dotdigital", name="authz DD", options=UNREACHABLE
    )
    flow.save(update_fields=["destination"])
    return {"ws": world.workspace.slug, "pk": flow.pk}


def _lists(world: Any) -> dict[str, Any]:
    # DotDigital unreachable: the list names are typed.
    return {
        "dispatched_list": "Dispatched",
        "dispatched_keep_hours": 24,
        "recent_buyers_list": "Recent buyers",
        "recent_buyer_days": 30,
        "back_in_stock_list": "",
    }


def _cleaning(world: Any) -> dict[str, Any]:
    return {"flow": _flow(world).pk, "rules": "replace:_=-"}


RULES = {
    "config:flows": Rule(get=WORKSPACE_PAGE, post=GET_ONLY),
    "config:flow-create": Rule(get=ADMIN_ONLY_FORM, post=ADMIN_FORM_POST, post_data=_new_flow),
    "config:flow": Rule(
        get=WORKSPACE_PAGE, post=ADMIN_FORM_POST, kwargs=_flow_kwargs, post_data=_flow_settings
    ),
    "config:flow-delete": Rule(get=POST_ONLY, post=ADMIN_FORM_POST, kwargs=_flow_kwargs),
    "config:flow-backfill": Rule(
        get=POST_ONLY,
        post=ADMIN_FORM_POST,
        kwargs=_flow_kwargs,
        post_data=lambda world: {"action": "complete"},
    ),
    "config:mappings": Rule(
        get=WORKSPACE_PAGE, post=ADMIN_FORM_POST, kwargs=_flow_kwargs, post_data=_mapping
    ),
    "config:mapping": Rule(
        get=WORKSPACE_PAGE, post=ADMIN_FORM_POST, kwargs=_mapping_kwargs, post_data=_mapping
    ),
    "config:mapping-delete": Rule(get=POST_ONLY, post=ADMIN_FORM_POST, kwargs=_mapping_kwargs),
    # No DotDigital connection: the page says DotDigital did not create it, and redirects.
    "config:data-field-create": Rule(
        get=POST_ONLY,
        post=ADMIN_FORM_POST,
        kwargs=_flow_kwargs,
        post_data=lambda world: {"name": "TIER", "type": "string"},
    ),
    # A pasted event that is not one: the dry run shows why (200).
    "config:dry-run": Rule(
        get=WORKSPACE_PAGE,
        post=each(LOGIN, 404, 403, 403, 200),
        kwargs=_flow_kwargs,
        post_data=lambda world: {"pasted": '{"schema": "nope"}'},
    ),
    "config:aliases": Rule(
        get=WORKSPACE_PAGE,
        post=ADMIN_FORM_POST,
        kwargs=_ws,
        post_data=lambda world: {"alias_key": "hat 1", "sku": "HAT-1"},
    ),
    "config:alias-delete": Rule(get=POST_ONLY, post=ADMIN_FORM_POST, kwargs=_alias_kwargs),
    "config:sku-cleaning": Rule(get=POST_ONLY, post=ADMIN_FORM_POST, post_data=_cleaning),
    "config:aliases-import": Rule(get=POST_ONLY, post=ADMIN_FORM_POST, post_data=_csv),
    "config:aliases-export": Rule(get=WORKSPACE_PAGE, post=GET_ONLY),
    "config:schedules": Rule(get=WORKSPACE_PAGE, post=ADMIN_FORM_POST, post_data=_schedule),
    "config:schedule": Rule(
        get=WORKSPACE_PAGE, post=ADMIN_FORM_POST, kwargs=_schedule_kwargs, post_data=_schedule
    ),
    "config:schedule-toggle": Rule(get=POST_ONLY, post=ADMIN_FORM_POST, kwargs=_schedule_kwargs),
    "config:schedule-delete": Rule(get=POST_ONLY, post=ADMIN_FORM_POST, kwargs=_schedule_kwargs),
    "config:routing": Rule(get=WORKSPACE_PAGE, post=ADMIN_FORM_POST, post_data=_routing),
    "config:routing-delete": Rule(get=POST_ONLY, post=ADMIN_FORM_POST, kwargs=_rule_kwargs),
    "config:runbook": Rule(get=WORKSPACE_PAGE, post=GET_ONLY),
    "config:lists": Rule(get=WORKSPACE_PAGE, post=GET_ONLY),
    # DotDigital unreachable: the page says the list was not created, and redirects.
    "config:list-create": Rule(
        get=POST_ONLY,
        post=ADMIN_FORM_POST,
        kwargs=_destination_kwargs,
        post_data=lambda world: {"name": "Syncdesk - Dispatched today"},
    ),
    "config:flow-lists": Rule(
        get=POST_ONLY, post=ADMIN_FORM_POST, kwargs=_flow_to_dd_kwargs, post_data=_lists
    ),
    "config:enrolment-add": Rule(
        get=POST_ONLY,
        post=ADMIN_FORM_POST,
        kwargs=_destination_kwargs,
        post_data=lambda world: {"event_type": "order.created", "program": 42},
    ),
    "config:enrolment-toggle": Rule(get=POST_ONLY, post=ADMIN_FORM_POST, kwargs=_enrolment_kwargs),
}
