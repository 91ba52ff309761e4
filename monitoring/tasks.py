"""Every Celery task of monitoring: thin, taking ids, calling the pipeline (or watch and privacy).

Messages only wake workers; the rows are the work. The pipeline wakes these tasks by name
(monitoring/pipeline/wake.py), and beat's sweepers (`sweep_engine`, `sweep_delivery`, every few
seconds) wake whatever a lost message forgot. Task names are fixed: beat schedules and the
database name them.
"""

from __future__ import annotations

import socket

from celery import shared_task
from django.utils import timezone

from connectors.dotdigital.client import DotDigitalClient
from monitoring.models import Flow, WorkerHeartbeat
from monitoring.pipeline import consent, lanes, programs, sources
from monitoring.privacy import retention
from monitoring.watch import alerts, reconcile, schedules

# A reconciliation works in slices shorter than the soft time limit (300 s): the slice's progress
# is saved and the task queued again to continue it. Within a slice a call waits on the shared
# rate budget up to RECONCILE_MAX_WAIT; longer waits are the run's own (reconcile_dotdigital).
RECONCILE_SLICE = 240.0
RECONCILE_MAX_WAIT = 10.0


@shared_task(name="monitoring.record_heartbeat")
def record_heartbeat(queue: str) -> None:
    """Beat sends one to each queue; the worker that takes it records that the lane is served."""
    WorkerHeartbeat.objects.update_or_create(
        queue=queue, defaults={"hostname": socket.gethostname(), "seen_at": timezone.now()}
    )


# -- staging and fetching -------------------------------------------------------------------------


@shared_task(name="monitoring.stage_events")
def stage_events(flow_id: int | None = None, lane: str | None = None) -> int:
    """Stage the flow's due events of the lane and plan them (one task per flow and lane at a
    time; both lanes, realtime first, when no lane is named)."""
    return lanes.stage_flow(flow_id, lane)


@shared_task(name="monitoring.fetch_notifications")
def fetch_notifications(notification_ids: list[int] | None = None) -> int:
    return sources.run_fetch(notification_ids)


@shared_task(name="monitoring.poll_flow")
def poll_flow(flow_id: int) -> int:
    return sources.poll_flow(flow_id)


@shared_task(name="monitoring.sweep_engine")
def sweep_engine() -> dict[str, int]:
    """Beat: wake staging for every flow with due rows and fetching for due notifications."""
    return lanes.wake_due_staging()


# -- delivery and confirmation --------------------------------------------------------------------


@shared_task(name="monitoring.deliver_realtime")
def deliver_realtime(destination_id: int) -> dict[str, int]:
    """Plan, send and confirm the realtime lane of one DotDigital connection."""
    return lanes.serve_lane(destination_id, "realtime")


@shared_task(name="monitoring.deliver_bulk")
def deliver_bulk(destination_id: int) -> dict[str, int]:
    """Plan, send and confirm the bulk lane of one DotDigital connection."""
    return lanes.serve_lane(destination_id, "bulk")


@shared_task(name="monitoring.sweep_delivery")
def sweep_delivery() -> int:
    """Beat: wake each lane with work whose runner is not running."""
    return lanes.wake_due_lanes()


@shared_task(name="monitoring.pull_suppressions")
def pull_suppressions() -> int:
    """Beat: DotDigital's opt-outs and bounces into Syncdesk's state, for every active account."""
    return consent.pull_all_suppressions()


@shared_task(name="monitoring.expire_list_memberships")
def expire_list_memberships() -> int:
    """Beat: take contacts off lists when their time is up (e.g. "Dispatched today")."""
    return programs.expire_and_wake()


@shared_task(name="monitoring.enrol_programs")
def enrol_programs() -> int:
    """Beat: direct enrolments, batched within the hourly cap, each sent at most once."""
    return programs.enrol_all()


# -- watch: flow health, reconciliation, the opt-out round trip ----------------------------------


@shared_task(name="monitoring.check_flows")
def check_flows() -> dict[str, int]:
    """Beat, every minute: each flow's health against its alert rules, and each flow's own jobs
    (reconciliation, the opt-out round trip) registered in the engine's `Schedule`."""
    registered = schedules.ensure_schedules()
    changes = alerts.check_all()
    return {"changes": len(changes), "schedules": registered}


@shared_task(name="monitoring.reconcile_flow")
def reconcile_flow(flow_id: int) -> dict[str, int]:
    """Beat (nightly) or "reconcile now": continue the flow's run, or start one, for a slice;
    a run paused or out of time is queued again to continue where it stopped."""
    flow = Flow.objects.select_related("workspace", "destination").filter(pk=flow_id).first()
    if flow is None:
        return {}
    client = None
    if flow.destination is not None:
        client = DotDigitalClient.for_connection(flow.destination, max_wait=RECONCILE_MAX_WAIT)
    run = reconcile.run_reconciliation(flow, client=client, slice_seconds=RECONCILE_SLICE)
    later = reconcile.paused_for(run)
    if later is not None:
        reconcile.queue_run(flow, later)
    return {"run": run.pk, "mismatched": run.mismatched, "missing": run.missing}


@shared_task(name="monitoring.write_back_opt_outs")
def write_back_opt_outs(flow_id: int) -> dict[str, int]:
    flow = Flow.objects.select_related("workspace", "source").filter(pk=flow_id).first()
    if flow is None:
        return {}
    queued, written = reconcile.round_trip(flow)
    return {"queued": queued, "written": written}


# -- privacy --------------------------------------------------------------------------------------


@shared_task(name="monitoring.sweep_retention")
def sweep_retention() -> int:
    """Beat, hourly: redact payloads past retention, in batches (safe to run twice at once)."""
    return retention.sweep_retention().total
