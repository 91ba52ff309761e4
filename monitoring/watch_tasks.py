"""Celery tasks of monitoring: thin, taking ids, calling monitoring.watch.alerts / monitoring.watch.reconcile.

`check_flows` runs every minute from beat (config/settings.py): it checks each flow's health
against its alert rules (the `sendalerts` loop of healthchecks, as a periodic task) and makes
sure each flow's own jobs (reconciliation, the opt-out round trip) are registered in the
engine's `Schedule` (mirrored into django-celery-beat).
Imported by monitoring/tasks.py so Celery's autodiscovery registers them.
"""

from __future__ import annotations

import logging

from celery import shared_task

from monitoring.models import Flow

log = logging.getLogger(__name__)

__all__ = ["check_flows", "reconcile_flow", "write_back_opt_outs"]


@shared_task(name="monitoring.check_flows")
def check_flows() -> dict[str, int]:
    from monitoring.watch.alerts import check_all
    from monitoring.watch.schedules import ensure_schedules

    registered = ensure_schedules()
    changes = check_all()
    return {"changes": len(changes), "schedules": registered}


# Seconds a scheduled reconciliation may wait on DotDigital's rate limits.
RECONCILE_MAX_WAIT = 120.0


@shared_task(name="monitoring.reconcile_flow")
def reconcile_flow(flow_id: int) -> dict[str, int]:
    from monitoring.watch.reconcile import run_reconciliation

    flow = Flow.objects.select_related("workspace", "destination").filter(pk=flow_id).first()
    if flow is None:
        return {}
    client = None
    if flow.destination is not None:
        from connectors.dotdigital.client import DotDigitalClient

        # In the background a 429 is waited out as DotDigital says (within the task's time
        # limit), not a failed run; "reconcile now" on the page keeps the client's short wait.
        client = DotDigitalClient.for_connection(flow.destination, max_wait=RECONCILE_MAX_WAIT)
    run = run_reconciliation(flow, client=client)
    return {"run": run.pk, "mismatched": run.mismatched, "missing": run.missing}


@shared_task(name="monitoring.write_back_opt_outs")
def write_back_opt_outs(flow_id: int) -> dict[str, int]:
    from monitoring.watch.reconcile import round_trip

    flow = Flow.objects.select_related("workspace", "source").filter(pk=flow_id).first()
    if flow is None:
        return {}
    queued, written = round_trip(flow)
    return {"queued": queued, "written": written}
