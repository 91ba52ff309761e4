"""An import's first poll comes a little before its kind's last imports were seen finished, not
at 0.3 s and every 0.3 s after: most are seen finished at the first or second poll."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.models import DeliveryBatch
from monitoring.pipeline.confirm import poll_interval
from monitoring.pipeline.sending import FIRST_POLL_MIN, first_poll_after
from tests.factories import make_connection, make_workspace

pytestmark = pytest.mark.django_db


def imports_seen_finished_after(destination, seconds, lane="realtime", kind="contacts"):
    now = timezone.now()
    for n, took in enumerate(seconds):
        DeliveryBatch.objects.create(
            workspace=destination.workspace,
            destination=destination,
            kind=kind,
            lane=lane,
            import_id=f"{lane}-{kind}-{n}-{took}",
            state=DeliveryBatch.State.FINISHED,
            submitted_at=now - timedelta(seconds=60 - n),
            finished_at=now - timedelta(seconds=60 - n) + timedelta(seconds=took),
        )


def test_a_destinations_first_import_is_polled_after_the_least_wait():
    destination = make_connection(make_workspace())
    assert first_poll_after(destination.pk, "realtime", "contacts") == FIRST_POLL_MIN


def test_an_import_is_first_polled_at_three_quarters_of_the_quickest_recent_one_of_its_kind():
    destination = make_connection(make_workspace())
    imports_seen_finished_after(destination, [1.45, 1.2, 1.6])
    imports_seen_finished_after(destination, [0.5], kind="insight")  # another kind
    imports_seen_finished_after(destination, [0.6], lane="bulk")  # another lane
    assert first_poll_after(destination.pk, "realtime", "contacts") == pytest.approx(0.9)
    assert first_poll_after(destination.pk, "realtime", "insight") == pytest.approx(0.375)
    assert first_poll_after(destination.pk, "bulk", "contacts") == pytest.approx(0.45)


def test_only_the_last_ten_imports_teach_the_first_poll():
    destination = make_connection(make_workspace())
    imports_seen_finished_after(destination, [0.8] + [2.0] * 10)  # DotDigital slower today
    assert first_poll_after(destination.pk, "realtime", "contacts") == pytest.approx(1.5)


def test_early_polls_are_spread_so_all_imports_in_flight_stay_within_our_share_of_the_status_tier():
    assert poll_interval(1) == pytest.approx(0.2)
    assert poll_interval(1, in_flight=8) == pytest.approx(0.5)
    assert poll_interval(12) == 5.0


def test_an_idle_confirmer_waits_for_the_next_imports_poll_time_within_its_bounds():
    from monitoring.pipeline.lanes import CONFIRM_IDLE, CONFIRM_IDLE_MAX, Confirmer

    destination = make_connection(make_workspace())
    confirmer = Confirmer(destination.pk, "realtime")
    assert confirmer.idle_wait() == CONFIRM_IDLE_MAX, "nothing in flight: until nudged"

    def in_flight(due_in: float, n: int, lane: str = "realtime") -> None:
        DeliveryBatch.objects.create(
            workspace=destination.workspace,
            destination=destination,
            kind="contacts",
            lane=lane,
            import_id=f"due-{n}",
            next_attempt_at=timezone.now() + timedelta(seconds=due_in),
        )

    in_flight(0.2, 1)
    in_flight(0.1, 2, lane="bulk")  # another lane's
    assert confirmer.idle_wait() == pytest.approx(0.2, abs=0.05)
    in_flight(-1.0, 3)  # overdue (leased by another poller, say)
    assert confirmer.idle_wait() == CONFIRM_IDLE


def test_an_idle_confirmer_looks_again_before_any_new_import_is_due_its_first_poll():
    from monitoring.pipeline.lanes import CONFIRM_IDLE_MAX

    assert CONFIRM_IDLE_MAX < FIRST_POLL_MIN
