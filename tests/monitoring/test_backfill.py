"""Backfill and catalogue states of a push-only flow, set through the webhook's control URL."""

from __future__ import annotations

import json

from django_celery_beat.models import PeriodicTask

from monitoring.models import Schedule, SourceEvent
from monitoring.pipeline.flows import mirror_schedule, remove_schedule
from tests.monitoring.engine import stage


def control(source, action, client):
    return client.post(
        f"/hooks/{source.token}/control/",
        data=json.dumps({"action": action}),
        content_type="application/json",
    )


def test_a_posted_backfill_is_marked_complete_by_an_api_call_with_its_counts(erp, client):
    assert not erp.flow.sends_aggregates
    assert control(erp, "backfill_started", client).status_code == 200
    erp.post({"events": [erp.order("SO-1"), erp.order("SO-2")], "backfill": True})
    erp.post(erp.order("SO-3"))  # live traffic meanwhile
    assert SourceEvent.objects.filter(is_backfill=True).count() == 2
    assert set(SourceEvent.objects.filter(is_backfill=True).values_list("lane", flat=True)) == {
        "bulk"
    }
    answer = control(erp, "backfill_complete", client).json()
    assert answer["flows"][0]["counts"] == {"order.created": 2}
    erp.flow.refresh_from_db()
    assert erp.flow.sends_aggregates and erp.flow.backfill_completed_by == "api"


def test_the_catalogue_counts_as_loaded_after_the_first_full_product_snapshot(erp, client):
    erp.flow.masters_products = True
    erp.flow.save()
    erp.post({"events": [erp.product("A"), erp.product("B")], "backfill": True})
    assert control(erp, "catalogue_loaded", client).json()["flows"][0]["catalogue_events"] == 2
    line = {"sku": "C", "quantity": 1, "line_total": {"amount": "30.00", "currency": "GBP"}}
    erp.post(erp.order("SO-1", lines=[line]))
    stage()  # the snapshot is staged before any SKU is checked against it
    assert SourceEvent.objects.get(event_type="order.created").failed_kind == "sku_mapping_gap"


def test_the_control_url_answers_404_to_an_unknown_token_and_400_to_an_unknown_action(erp, client):
    assert (
        client.post("/hooks/nope/control/", data="{}", content_type="application/json").status_code
        == 404
    )
    assert control(erp, "explode", client).status_code == 400


def test_a_schedule_is_mirrored_into_celery_beat_by_one_function(erp):
    schedule = Schedule.objects.create(
        workspace=erp.workspace,
        flow=erp.flow,
        name="poll",
        task="monitoring.poll_flow",
        args=[erp.flow.pk],
        every_seconds=60,
    )
    mirror_schedule(schedule)
    task = PeriodicTask.objects.get(name=schedule.beat_name)
    assert task.task == "monitoring.poll_flow" and task.interval.every == 60
    assert json.loads(task.args) == [erp.flow.pk]
    schedule.crontab = "0 3 * * *"
    schedule.enabled = False
    schedule.save()
    mirror_schedule(schedule)
    task.refresh_from_db()
    assert task.crontab.hour == "3" and task.interval is None and not task.enabled
    remove_schedule(schedule)
    assert not PeriodicTask.objects.filter(name=schedule.beat_name).exists()


def test_a_new_flow_gets_the_default_field_mappings(erp):
    targets = set(erp.flow.field_mappings.values_list("target", flat=True))
    assert {"ORDER_COUNT", "LTV", "LAST_ORDER_DATE", "LAST_DISPATCH_DATE", "REFUNDED"} <= targets
    assert erp.flow.field_mappings.get(target="LTV").is_aggregate
