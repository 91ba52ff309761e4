"""Each flow's monitoring jobs, registered in the engine's `Schedule` (and so in beat)."""

from __future__ import annotations

from monitoring.models import Flow, Schedule
from monitoring.pipeline.flows import mirror_schedule

# name template, task, crontab or interval, queue
JOBS: tuple[tuple[str, str, str, int | None], ...] = (
    ("reconcile flow {pk}", "monitoring.reconcile_flow", "17 3 * * *", None),
    ("opt-outs to source of flow {pk}", "monitoring.write_back_opt_outs", "", 300),
)


def ensure_schedules() -> int:
    """Register the jobs of flows that have none yet; returns how many were created."""
    created = 0
    for flow in Flow.objects.filter(is_active=True).only("pk", "workspace_id"):
        for template, task, crontab, every in JOBS:
            schedule, made = Schedule.objects.get_or_create(
                workspace_id=flow.workspace_id,
                name=template.format(pk=flow.pk),
                defaults={
                    "flow": flow,
                    "task": task,
                    "args": [flow.pk],
                    "crontab": crontab,
                    "every_seconds": every,
                    "queue": "bulk",
                },
            )
            if made:
                mirror_schedule(schedule)
                created += 1
    return created
