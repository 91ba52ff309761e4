"""Flows' lifecycle: defaults for a new flow, backfill and catalogue states, and schedules
mirrored into django-celery-beat."""

from __future__ import annotations

import json

from django.db import transaction
from django.db.models import Count
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from monitoring.models import FieldMapping, Flow, Schedule, SourceEvent

# What a new flow sends to DotDigital until someone configures it (planning reads these).
DEFAULT_MAPPINGS: tuple[tuple[str, str, str, bool], ...] = (
    ("FIRSTNAME", "customer.first_name", FieldMapping.Type.STRING, False),
    ("LASTNAME", "customer.last_name", FieldMapping.Type.STRING, False),
    ("ORDER_COUNT", "customer.order_count", FieldMapping.Type.NUMERIC, True),
    ("LTV", "customer.lifetime_value", FieldMapping.Type.NUMERIC, True),
    ("LAST_ORDER_DATE", "customer.last_order_at", FieldMapping.Type.DATE, True),
    ("LAST_DISPATCH_DATE", "customer.last_dispatch_at", FieldMapping.Type.DATE, True),
    ("REFUNDED", "customer.refunded", FieldMapping.Type.BOOLEAN, True),
)


def install_defaults(flow: Flow) -> None:
    """The default field mappings of a flow (idempotent)."""
    FieldMapping.objects.bulk_create(
        [
            FieldMapping(
                flow=flow, target=target, source_path=path, type=kind, is_aggregate=aggregate
            )
            for target, path, kind, aggregate in DEFAULT_MAPPINGS
        ],
        ignore_conflicts=True,
    )


def start_backfill(flow: Flow) -> None:
    Flow.objects.filter(pk=flow.pk).exclude(backfill_state=Flow.Backfill.COMPLETE).update(
        backfill_state=Flow.Backfill.RUNNING
    )
    flow.refresh_from_db(fields=["backfill_state"])


def mark_backfill_complete(flow: Flow, *, by: str) -> dict[str, int]:
    """The flow's history is in (the poller reached the present, or an admin or API call says so
    for a push-only source): aggregates may be sent from now on. Records the counts per type."""
    counts = dict(
        SourceEvent.objects.filter(flow=flow, is_backfill=True)
        .values_list("event_type")
        .annotate(n=Count("pk"))
        .values_list("event_type", "n")
    )
    Flow.objects.filter(pk=flow.pk).update(
        backfill_state=Flow.Backfill.COMPLETE,
        backfill_completed_at=timezone.now(),
        backfill_completed_by=by[:150],
        backfill_counts=counts,
    )
    flow.refresh_from_db(
        fields=[
            "backfill_state",
            "backfill_completed_at",
            "backfill_completed_by",
            "backfill_counts",
        ]
    )
    return counts


def mark_catalogue_loaded(flow: Flow) -> int:
    """The flow's first full product snapshot is posted: SKU checks start once it is staged."""
    count = SourceEvent.objects.filter(flow=flow, event_type="product.updated").count()
    Flow.objects.filter(pk=flow.pk).update(
        catalogue_loaded_at=timezone.now(), catalogue_count=count
    )
    flow.refresh_from_db(fields=["catalogue_loaded_at", "catalogue_count"])
    return count


@transaction.atomic
def mirror_schedule(schedule: Schedule) -> None:
    """Make django-celery-beat's PeriodicTask match the Schedule (created, changed or disabled);
    the one place that writes beat's tables for Syncdesk's jobs."""
    fields: dict[str, object] = {
        "task": schedule.task,
        "args": json.dumps(schedule.args),
        "queue": schedule.queue,
        "enabled": schedule.enabled,
        "interval": None,
        "crontab": None,
    }
    if schedule.crontab:
        minute, hour, day_of_month, month_of_year, day_of_week = schedule.crontab.split()
        fields["crontab"], _ = CrontabSchedule.objects.get_or_create(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month_of_year,
            day_of_week=day_of_week,
            timezone="UTC",
        )
    else:
        fields["interval"], _ = IntervalSchedule.objects.get_or_create(
            every=schedule.every_seconds or 60, period=IntervalSchedule.SECONDS
        )
    task, _ = PeriodicTask.objects.update_or_create(name=schedule.beat_name, defaults=fields)
    if schedule.periodic_task_id != task.pk:
        Schedule.objects.filter(pk=schedule.pk).update(periodic_task_id=task.pk)
        schedule.periodic_task_id = task.pk


def remove_schedule(schedule: Schedule) -> None:
    PeriodicTask.objects.filter(name=schedule.beat_name).delete()
    schedule.delete()
