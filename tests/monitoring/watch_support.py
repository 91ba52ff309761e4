"""Plain factories for the monitoring tests (flows, events with their timestamps, alerts,
reconciliation rows)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone

from accounts.models import Workspace
from monitoring.models import (
    Alert,
    Flow,
    ReconciliationDifference,
    ReconciliationRun,
    SourceEvent,
)
from tests.factories import make_connection

_seq = itertools.count(1)


def make_flow(workspace: Workspace, *, destination: bool = True, **extra: Any) -> Flow:
    source = make_connection(workspace, "canonical", name=f"ERP {next(_seq)}")
    dest = (
        make_connection(workspace, "dotdigital", name=f"DotDigital {next(_seq)}")
        if destination
        else None
    )
    return Flow.objects.create(
        workspace=workspace,
        name=extra.pop("name", f"ERP → DotDigital {next(_seq)}"),
        source=source,
        destination=dest,
        **extra,
    )


def make_event(
    flow: Flow,
    *,
    state: str = SourceEvent.State.DELIVERED,
    occurred: datetime | None = None,
    source_delay: float = 1.0,
    queue: float = 2.0,
    dotdigital: float = 1.0,
    **extra: Any,
) -> SourceEvent:
    n = next(_seq)
    occurred = occurred or timezone.now() - timedelta(seconds=source_delay + queue + dotdigital)
    received = occurred + timedelta(seconds=source_delay)
    sent = received + timedelta(seconds=queue)
    delivered = sent + timedelta(seconds=dotdigital)
    done = state == SourceEvent.State.DELIVERED
    fields: dict[str, Any] = {
        "workspace_id": flow.workspace_id,
        "connection_id": flow.source_id,
        "flow": flow,
        "source_system": "demo-erp",
        "source_account": "erp-main",
        "source_event_id": f"demo-erp:{n}",
        "event_type": "order.created",
        "entity_type": "order",
        "entity_key": f"demo-erp:erp-main:order:{n}",
        "source_version": occurred,
        "envelope": {"event_type": "order.created", "data": {"order_number": f"SO-{n}"}},
        "occurred_at": occurred,
        "received_at": received,
        "staged_at": received if state != SourceEvent.State.RECEIVED else None,
        "sent_at": sent if done else None,
        "delivered_at": delivered if done else None,
        "state": state,
    }
    fields.update(extra)
    return SourceEvent.objects.create(**fields)


def make_alert(workspace: Workspace, **extra: Any) -> Alert:
    flow = make_flow(workspace, destination=False)
    return Alert.objects.create(
        workspace=workspace, flow=flow, kind=Alert.Kind.LAG, message="lagging", **extra
    )


def make_difference(workspace: Workspace, team: str = "finance") -> ReconciliationDifference:
    flow = make_flow(workspace, destination=False)
    run = ReconciliationRun.objects.create(workspace=workspace, flow=flow, state="finished")
    return ReconciliationDifference.objects.create(
        run=run,
        kind=ReconciliationDifference.Kind.FIELD,
        subject="jo@example.com",
        email="jo@example.com",
        field="LTV",
        engine_value="120.5",
        dotdigital_value="99",
        team_slug=team,
    )


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
