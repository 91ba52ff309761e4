"""Mail about the inbox: one mail per person for their new assignments, one digest per team a day.

Both work from rows: `AssignmentNotice` is an outbox (a row per assignment, mailed in one batch
per person, never per occurrence); `TeamDigest` is claimed by creating it, so a team gets one
digest a day however many workers run the task.
"""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from accounts.models import Team
from exceptions_inbox.listing import bounded_count
from exceptions_inbox.models import AssignmentNotice, ExceptionGroup, TeamDigest

DIGEST_LIST = 20
DIGEST_COUNT_CAP = 10_000  # a daily task can afford to count further than a page


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def group_url(group: ExceptionGroup) -> str:
    path = reverse("exceptions_inbox:group", kwargs={"ws": group.workspace.slug, "pk": group.pk})
    return f"{getattr(settings, 'SYNCDESK_SITE_URL', '').rstrip('/')}{path}"


def send_assignment_notices() -> int:
    """Mail each person with unsent assignment notices once, listing every group assigned to
    them since their last mail. Returns how many mails went out.

    Each person's rows are locked, mailed and marked in one transaction: a failed send leaves them
    unsent for the next sweep; a row whose group has since gone to someone else is marked without
    mailing.
    """
    people = (
        AssignmentNotice.objects.filter(sent_at=None)
        .values_list("assignee_id", flat=True)
        .distinct()
    )
    sent = 0
    for person_id in list(people):
        with transaction.atomic():
            rows = list(
                AssignmentNotice.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(assignee_id=person_id, sent_at=None)
                .select_related("group__workspace", "assigned_by", "assignee")
                .order_by("created")
            )
            if not rows:
                continue
            now = timezone.now()
            AssignmentNotice.objects.filter(pk__in=[r.pk for r in rows]).update(sent_at=now)
            current = {
                r.group_id: r for r in rows if r.group.assignee_id == person_id
            }  # one line per group, however often it was reassigned meanwhile
            person = rows[0].assignee
            if not current or not person.email:
                continue
            notices = sorted(current.values(), key=lambda r: r.created)
            body = render_to_string(
                "exceptions_inbox/email/assigned.txt",
                {
                    "person": person,
                    "lines": [(n, group_url(n.group)) for n in notices],
                },
            )
            count = len(notices)
            subject = (
                f"Assigned to you: {notices[0].group.title}"
                if count == 1
                else f"{count} exceptions assigned to you"
            )
            EmailMessage(subject, body, to=[person.email]).send()
            sent += 1
    return sent


def send_team_digests(*, not_before_hour: int = 0) -> int:
    """Each team with members and something open gets one digest a day (the day in its
    workspace's time zone, from `not_before_hour` local time): how much is open, what is new in
    the last 24 hours and what regressed. Returns how many teams were mailed."""
    now = timezone.now()
    since = now - timedelta(days=1)
    teams = Team.objects.filter(members__isnull=False).distinct().select_related("workspace")
    mailed = 0
    for team in teams:
        local = now.astimezone(_zone(team.workspace.timezone))
        if local.hour < not_before_hour:
            continue
        day = local.date()
        recipients = list(
            team.members.filter(is_active=True).exclude(email="").values_list("email", flat=True)
        )
        if not recipients:
            continue
        unresolved = ExceptionGroup.objects.filter(
            team=team,
            state__in=[ExceptionGroup.State.OPEN, ExceptionGroup.State.ACKNOWLEDGED],
        ).select_related("workspace")
        open_count = bounded_count(unresolved, DIGEST_COUNT_CAP)
        if not open_count:
            continue
        new = list(unresolved.filter(first_seen__gte=since).order_by("-last_seen")[:DIGEST_LIST])
        regressed = list(unresolved.filter(is_regression=True).order_by("-last_seen")[:DIGEST_LIST])
        try:
            with transaction.atomic():
                digest = TeamDigest.objects.create(team=team, day=day)
        except IntegrityError:  # already sent today (or being sent by another worker)
            continue
        inbox = reverse("exceptions_inbox:inbox", kwargs={"ws": team.workspace.slug})
        body = render_to_string(
            "exceptions_inbox/email/digest.txt",
            {
                "team": team,
                "day": day,
                "open_count": open_count,
                "capped": open_count >= DIGEST_COUNT_CAP,
                "new": [(g, group_url(g)) for g in new],
                "new_count": bounded_count(
                    unresolved.filter(first_seen__gte=since), DIGEST_COUNT_CAP
                ),
                "regressed": [(g, group_url(g)) for g in regressed],
                "regressed_count": bounded_count(
                    unresolved.filter(is_regression=True), DIGEST_COUNT_CAP
                ),
                "inbox_url": f"{getattr(settings, 'SYNCDESK_SITE_URL', '').rstrip('/')}{inbox}",
            },
        )
        subject = f"{team.workspace.name} · {team.name}: {open_count} open exception(s)"
        messages = [EmailMessage(subject, body, to=[address]) for address in recipients]
        try:
            get_connection().send_messages(messages)
        except Exception:
            digest.delete()  # pushed back: the next run tries again
            raise
        TeamDigest.objects.filter(pk=digest.pk).update(
            sent_at=timezone.now(), recipients=len(recipients)
        )
        mailed += 1
    return mailed
