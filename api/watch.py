"""Reconciliation runs (list, one with its differences, start one) and alerts (list, one with
its changes, acknowledge), through `monitoring.watch`'s own functions, as the pages call them."""

from __future__ import annotations

from typing import Any, Literal

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Field as NinjaField
from ninja import Query, Schema, Status

from api.core import (
    ACT,
    MAX_PAGE,
    READ,
    RowId,
    api,
    cursor_int,
    decode_cursor,
    encode_cursor,
    key_access,
    require_act,
)
from api.schemas import (
    AlertDetail,
    AlertOut,
    AlertPage,
    DifferenceOut,
    RunDetail,
    RunOut,
    RunPage,
    Text,
)
from monitoring.models import Alert, Flow, ReconciliationRun
from monitoring.watch import alerts, reconcile


class ListFilters(Schema):
    limit: int = NinjaField(default=100, ge=1, le=MAX_PAGE)
    cursor: Text | None = NinjaField(default=None, max_length=200)


class AlertFilters(ListFilters):
    state: Literal["triggered", "acknowledged", "resolved"] | None = None


def _page(qs: Any, filters: ListFilters, out: Any) -> dict[str, Any]:
    """Newest first by id, paged by a keyset cursor on it."""
    after = decode_cursor(filters.cursor, 1)
    if after is not None:
        qs = qs.filter(pk__lt=cursor_int(after[0]))
    rows = list(qs.order_by("-pk")[: filters.limit + 1])
    more = len(rows) > filters.limit
    rows = rows[: filters.limit]
    return {
        "items": [out(r) for r in rows],
        "next_cursor": encode_cursor(rows[-1].pk) if more else None,
    }


def run_out(run: ReconciliationRun) -> dict[str, Any]:
    return {name: getattr(run, name) for name in RunOut.model_fields if hasattr(run, name)} | {
        "id": run.pk,
        "flow_id": run.flow_id,
    }


@api.get(
    "/w/{ws}/reconciliation/runs",
    response={200: RunPage, **READ},
    tags=["reconciliation"],
    summary="Reconciliation runs",
)
def list_runs(request: HttpRequest, ws: str, filters: Query[ListFilters]) -> dict[str, Any]:
    ka = key_access(request, ws)
    return _page(ReconciliationRun.objects.filter(workspace=ka.workspace), filters, run_out)


@api.get(
    "/w/{ws}/reconciliation/runs/{run_id}",
    response={200: RunDetail, **READ},
    tags=["reconciliation"],
    summary="One reconciliation run",
)
def get_run(request: HttpRequest, ws: str, run_id: RowId) -> dict[str, Any]:
    """The run's counts and its differences (at most 500)."""
    ka = key_access(request, ws)
    run = get_object_or_404(ReconciliationRun, workspace=ka.workspace, pk=run_id)
    diffs = run.differences.order_by("kind", "subject", "pk")[:MAX_PAGE]
    return run_out(run) | {
        "differences": [
            {name: getattr(d, name) for name in DifferenceOut.model_fields if hasattr(d, name)}
            | {"id": d.pk, "team": d.team_slug}
            for d in diffs
        ]
    }


@api.post(
    "/w/{ws}/flows/{flow_id}/reconciliation/runs",
    response={202: RunOut, **ACT},
    tags=["reconciliation"],
    summary="Start a reconciliation run",
)
def start_run(request: HttpRequest, ws: str, flow_id: RowId) -> Any:
    """Reconcile the flow now (finance's, or an admin's, as on the page): the flow's unfinished
    run, or a new one, compared by a worker. A flow without a DotDigital connection fails at once
    (the run says why)."""
    ka = key_access(request, ws)
    flow = get_object_or_404(Flow, workspace=ka.workspace, pk=flow_id)
    require_act(ka, "finance")
    run = reconcile.start_run(flow)
    if run.state == ReconciliationRun.State.RUNNING:
        reconcile.queue_run(flow)
    return Status(202, run_out(run))


def alert_out(alert: Alert) -> dict[str, Any]:
    data = {name: getattr(alert, name) for name in AlertOut.model_fields if hasattr(alert, name)}
    by = alert.acknowledged_by
    return data | {
        "id": alert.pk,
        "flow_id": alert.flow_id,
        "team": alert.team_slug,
        "acknowledged_by": by.get_username() if by else None,
    }


@api.get("/w/{ws}/alerts", response={200: AlertPage, **READ}, tags=["alerts"], summary="Alerts")
def list_alerts(request: HttpRequest, ws: str, filters: Query[AlertFilters]) -> dict[str, Any]:
    ka = key_access(request, ws)
    qs = Alert.objects.filter(workspace=ka.workspace).select_related("acknowledged_by")
    if filters.state:
        qs = qs.filter(state=filters.state)
    return _page(qs, filters, alert_out)


def _alert_detail(alert: Alert) -> dict[str, Any]:
    changes = alert.changes.select_related("actor").order_by("at", "pk")
    return alert_out(alert) | {
        "changes": [
            {
                "kind": c.kind,
                "at": c.at,
                "actor": c.actor.get_username() if c.actor else None,
                "note": c.note,
            }
            for c in changes
        ]
    }


@api.get(
    "/w/{ws}/alerts/{alert_id}",
    response={200: AlertDetail, **READ},
    tags=["alerts"],
    summary="One alert",
)
def get_alert(request: HttpRequest, ws: str, alert_id: RowId) -> dict[str, Any]:
    ka = key_access(request, ws)
    return _alert_detail(get_object_or_404(Alert, workspace=ka.workspace, pk=alert_id))


@api.post(
    "/w/{ws}/alerts/{alert_id}/acknowledge",
    response={200: AlertDetail, **ACT},
    tags=["alerts"],
    summary="Acknowledge an alert",
)
def acknowledge_alert(request: HttpRequest, ws: str, alert_id: RowId) -> Any:
    """Stop the alert's escalation (its owning team's, or an admin's); 409 when it is not
    triggered (acknowledged already, or resolved)."""
    ka = key_access(request, ws)
    alert = get_object_or_404(Alert, workspace=ka.workspace, pk=alert_id)
    require_act(ka, alert.team_slug)
    if not alerts.acknowledge(alert, ka.key.actor):
        return Status(409, {"error": "not_applied", "detail": f"The alert is {alert.state}."})
    return Status(200, _alert_detail(alert))
