"""A schedule's beat entry goes with the schedule however it is deleted: by our pages
(`remove_schedule`, tested with the pages), by its flow's cascade in code, or by a queryset.

(The Django admin registers neither flows nor schedules, and refuses to delete a workspace whose
connections a flow uses: `Flow.source` is PROTECT.)"""

from __future__ import annotations

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from monitoring.models import Flow, Schedule
from monitoring.pipeline.flows import mirror_schedule
from tests.factories import make_connection


@pytest.fixture
def scheduled(world) -> Schedule:
    source = make_connection(world.workspace, "canonical", name="WMS")
    flow = Flow.objects.create(workspace=world.workspace, name="WMS", source=source)
    schedule = Schedule.objects.create(
        workspace=world.workspace,
        flow=flow,
        name="poll wms",
        task="monitoring.poll_flow",
        args=[flow.pk],
        every_seconds=120,
    )
    mirror_schedule(schedule)
    assert PeriodicTask.objects.filter(name=schedule.beat_name).exists()
    return schedule


def test_deleting_a_flow_by_cascade_removes_its_beat_entries(scheduled):
    beat_name = scheduled.beat_name
    Flow.objects.filter(pk=scheduled.flow_id).delete()  # no page, no remove_schedule
    assert not Schedule.objects.exists()
    assert not PeriodicTask.objects.filter(name=beat_name).exists()


def test_deleting_schedules_in_bulk_removes_only_their_beat_entries(scheduled):
    beat_name = scheduled.beat_name
    other = PeriodicTask.objects.create(
        name="celery's own",
        task="x",
        interval=IntervalSchedule.objects.create(every=60, period="seconds"),
    )
    Schedule.objects.all().delete()  # a queryset: no remove_schedule either
    assert not PeriodicTask.objects.filter(name=beat_name).exists()
    assert PeriodicTask.objects.filter(pk=other.pk).exists()
