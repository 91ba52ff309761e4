"""Thin tasks: beat sends them on a schedule (config/settings.py); each calls one function."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from exceptions_inbox import actions, notifications


@shared_task(name="exceptions_inbox.wake_snoozed_groups")
def wake_snoozed_groups() -> int:
    """Snoozes whose time is up end (rows, not countdowns: the sweep runs every minute)."""
    return len(actions.wake_due_snoozes())


@shared_task(name="exceptions_inbox.send_assignment_notices")
def send_assignment_notices() -> int:
    """Woken after an assignment commits, and swept every minute for anything missed."""
    return notifications.send_assignment_notices()


@shared_task(name="exceptions_inbox.send_team_digests")
def send_team_digests() -> int:
    """Swept every 15 minutes; each team's digest goes once a day, from 07:00 in its workspace's
    time zone (INBOX_DIGEST_HOUR), so a missed beat only delays it."""
    hour = getattr(settings, "INBOX_DIGEST_HOUR", 7)
    return notifications.send_team_digests(not_before_hour=hour)
