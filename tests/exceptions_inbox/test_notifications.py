"""Mail: one per person per batch of assignments, one digest per team per day (locmem backend)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.core import mail
from django.utils import timezone

from exceptions_inbox import tasks
from exceptions_inbox.actions import Action, apply_action, apply_bulk
from exceptions_inbox.models import AssignmentNotice, ExceptionGroup, TeamDigest
from exceptions_inbox.recording import clear_occurrences
from tests.exceptions_inbox.factories import make_group
from tests.factories import make_member


@pytest.fixture(autouse=True)
def _locmem(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


def test_a_bulk_assignment_is_one_mail_to_the_assignee(world):
    groups = [make_group(world.workspace, sku=f"S-{n}", events=3) for n in range(5)]
    apply_bulk(groups, Action.ASSIGN, world.admin, assignee=world.teammate)
    assert tasks.send_assignment_notices() == 1
    [message] = mail.outbox
    assert message.to == ["teammate@example.com"]
    assert message.subject == "5 exceptions assigned to you"
    for group in groups:
        assert f"/w/acme/inbox/{group.pk}/" in message.body
    assert "by admin" in message.body
    # nothing left to send: the rows are marked
    assert tasks.send_assignment_notices() == 0
    assert len(mail.outbox) == 1


def test_new_occurrences_never_mail_the_assignee_again(world):
    group = make_group(world.workspace)
    apply_action(group, Action.ASSIGN, world.admin, assignee=world.teammate)
    tasks.send_assignment_notices()
    for _ in range(10):
        make_group(world.workspace)
    assert tasks.send_assignment_notices() == 0
    assert len(mail.outbox) == 1


def test_each_person_gets_their_own_mail(world):
    other = make_member(world.workspace, "otherops", teams=["ops"])
    a, b = make_group(world.workspace, sku="A"), make_group(world.workspace, sku="B")
    apply_action(a, Action.ASSIGN, world.admin, assignee=world.teammate)
    apply_action(b, Action.ASSIGN, world.admin, assignee=other)
    assert tasks.send_assignment_notices() == 2
    assert sorted(m.to[0] for m in mail.outbox) == ["otherops@example.com", "teammate@example.com"]
    assert {m.subject for m in mail.outbox} == {
        f"Assigned to you: {a.title}",
        f"Assigned to you: {b.title}",
    }


def test_assigning_yourself_mails_nobody(world):
    group = make_group(world.workspace)
    apply_action(group, Action.ASSIGN, world.teammate, assignee=world.teammate)
    assert not AssignmentNotice.objects.exists()


def test_a_group_reassigned_before_the_mail_goes_is_not_mentioned(world):
    other = make_member(world.workspace, "otherops", teams=["ops"])
    group = make_group(world.workspace)
    apply_action(group, Action.ASSIGN, world.admin, assignee=world.teammate)
    apply_action(group, Action.ASSIGN, world.admin, assignee=other)
    tasks.send_assignment_notices()
    assert [m.to for m in mail.outbox] == [["otherops@example.com"]]
    assert not AssignmentNotice.objects.filter(sent_at=None).exists()


def test_a_failed_send_leaves_the_notices_for_the_next_sweep(world, monkeypatch):
    group = make_group(world.workspace)
    apply_action(group, Action.ASSIGN, world.admin, assignee=world.teammate)

    def broken(self, *args, **kwargs):
        raise OSError("SMTP down")

    monkeypatch.setattr("django.core.mail.EmailMessage.send", broken)
    with pytest.raises(OSError):
        tasks.send_assignment_notices()
    assert AssignmentNotice.objects.filter(sent_at=None).count() == 1
    monkeypatch.undo()
    assert tasks.send_assignment_notices() == 1


def test_each_team_gets_one_daily_digest_of_what_is_open_new_and_regressed(world, time_machine):
    time_machine.move_to("2026-03-01T07:00:00Z", tick=False)
    old = make_group(world.workspace, sku="OLD-1")
    regressed = make_group(world.workspace, sku="REG-1")
    apply_action(regressed, Action.RESOLVE, world.teammate)
    time_machine.move_to("2026-03-03T06:00:00Z", tick=False)
    new = make_group(world.workspace, sku="NEW-1")
    make_group(world.workspace, sku="REG-1")  # comes back
    make_group(world.workspace, kind="order_total_mismatch", sku="SO-1")  # finance: no members
    time_machine.move_to("2026-03-03T07:00:00Z", tick=False)

    assert tasks.send_team_digests() == 1  # ops has a member with mail; finance has none
    [message] = mail.outbox
    assert message.to == ["teammate@example.com"]
    assert message.subject == "Acme · Ops: 3 open exception(s)"
    body = message.body
    assert "Open: 3" in body and "New in the last 24 hours: 1" in body
    assert "Regressed (came back after a resolve): 1" in body
    assert new.title in body and regressed.title in body
    assert f"/w/acme/inbox/{old.pk}/" not in body  # old and not regressed: counted, not listed
    assert TeamDigest.objects.get().day == date(2026, 3, 3)  # Europe/London

    # once a day, however often beat or a second worker runs it
    assert tasks.send_team_digests() == 0
    assert len(mail.outbox) == 1
    time_machine.shift(timedelta(days=1))
    assert tasks.send_team_digests() == 1


def test_a_team_with_nothing_open_gets_no_digest(world):
    group = make_group(world.workspace)
    clear_occurrences(world.workspace, group.occurrences.values_list("event_key", flat=True))
    assert ExceptionGroup.objects.get().state == "resolved"
    assert tasks.send_team_digests() == 0
    assert mail.outbox == []


def test_the_sweeper_wakes_snoozes_that_are_due(world, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    group = make_group(world.workspace)
    apply_action(group, Action.SNOOZE, world.teammate, until=timezone.now() + timedelta(hours=1))
    assert tasks.wake_snoozed_groups() == 0
    time_machine.shift(timedelta(minutes=61))
    assert tasks.wake_snoozed_groups() == 1
    group.refresh_from_db()
    assert group.state == "open"


def test_the_digest_waits_for_seven_in_the_workspaces_time_zone(world, time_machine):
    time_machine.move_to("2026-07-01T05:30:00Z", tick=False)  # 06:30 in London (BST)
    make_group(world.workspace)
    assert tasks.send_team_digests() == 0
    time_machine.move_to("2026-07-01T06:00:00Z", tick=False)  # 07:00 in London
    assert tasks.send_team_digests() == 1
