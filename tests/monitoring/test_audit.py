"""manage.py syncdesk_audit: every event in a category, and a failure when one is not."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from exceptions_inbox.models import Occurrence
from monitoring.models import SourceEvent
from tests.monitoring.engine import stage


@pytest.fixture
def mixed(erp, wms):
    erp.post([erp.order("SO-1"), erp.order("SO-2", currency="EUR")])
    wms.post(wms.dispatch("SO-404"))  # an orphan: held with a deadline
    erp.flow.event_types = ["order.created"]
    erp.flow.save()
    erp.post(erp.product("SKU-1"))  # no flow takes it: skipped
    stage()


def test_it_counts_every_event_into_a_category(mixed, capsys):
    call_command("syncdesk_audit")
    out = capsys.readouterr().out
    assert "All 4 events accounted for." in out
    lines = {line[:20].strip(): line[20:].strip() for line in out.splitlines()}
    assert lines["ready to deliver"] == "1"
    assert lines["held"] == "1"
    assert lines["skipped"] == "1"
    assert lines["failed"] == "1"
    assert "currency_mismatch" in out


def test_it_fails_when_an_event_falls_outside_every_category(mixed):
    # A failed event whose occurrence was closed without skipping it: lost from sight.
    Occurrence.objects.update(state=Occurrence.State.CLEARED)
    with pytest.raises(CommandError, match="1 event\\(s\\) fall outside every category"):
        call_command("syncdesk_audit")


def test_it_fails_on_a_held_event_without_a_deadline(mixed):
    SourceEvent.objects.filter(state="held").update(hold_deadline=None)
    with pytest.raises(CommandError, match="outside every category"):
        call_command("syncdesk_audit")


def test_it_fails_when_work_is_still_in_progress_after_settling(erp):
    erp.post(erp.order("SO-1"))  # received, and no worker stages it
    with pytest.raises(CommandError, match="still in progress after settling"):
        call_command("syncdesk_audit", "--settle", "0.1")


def test_ready_events_count_as_in_progress_when_delivery_is_expected(erp):
    erp.post(erp.order("SO-1"))
    stage()
    call_command("syncdesk_audit", "--settle", "0.1")
    with pytest.raises(CommandError, match="still in progress"):
        call_command("syncdesk_audit", "--settle", "0.1", "--expect-delivery")
