"""Where the inbox and the alerts tell outbound webhooks that something happened.

`group_event` and `alert_event` are called by `exceptions_inbox` (recording and actions) and
`monitoring.watch.alerts` inside the transaction that makes the change, so a delivery row exists
exactly when the change commits. They only write rows and, after commit, wake the sender by task
name on its own queue: no receiver is called from here, and so nothing in the engine or a request
waits on one. This module imports no other app (objects are read by attribute), so the apps that
call it stay below nothing new.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from outbound.models import Delivery, Event, Subscription

log = logging.getLogger(__name__)

DELIVER_TASK = "outbound.deliver_webhooks"
QUEUE = "webhooks"
WAKE_EXPIRES = 300  # seconds: beat's sweep sends a fresh wake-up long before


def wake_sender() -> None:
    """Wake a webhook worker now. `send_task`, never an eager in-process call: the caller must not
    run a delivery (and wait on a receiver) even where Celery runs tasks eagerly."""
    try:
        current_app.send_task(DELIVER_TASK, queue=QUEUE, expires=WAKE_EXPIRES)
    except Exception:  # the broker is down: the rows wait for beat's sweep
        log.warning("could not wake the webhook sender; the sweep will", exc_info=True)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _site(path: str) -> str:
    return f"{getattr(settings, 'SYNCDESK_SITE_URL', '').rstrip('/')}{path}"


def envelope(event: str, workspace_slug: str, data: dict[str, Any]) -> tuple[uuid.UUID, str]:
    """The event's id and its JSON body (compact, keys in a fixed order: what is signed)."""
    event_id = uuid.uuid4()
    body = {
        "id": str(event_id),
        "type": event,
        "created": _iso(timezone.now()),
        "workspace": workspace_slug,
        "data": data,
    }
    return event_id, json.dumps(body, separators=(",", ":"), sort_keys=True)


def record(workspace_id: int, event: str, build: Callable[[], dict[str, Any]]) -> int:
    """A pending delivery for each active subscription of the workspace taking `event`; the sender
    is woken after commit. Returns how many rows were written.

    `build` makes the event's data, called only when someone subscribes: without subscriptions
    an event costs the engine one indexed query."""
    subscriptions = [
        s
        for s in Subscription.objects.filter(
            workspace_id=workspace_id, state=Subscription.State.ACTIVE
        )
        .select_related("workspace")
        .only("pk", "events", "workspace__slug")
        if event in s.events
    ]
    if not subscriptions:
        return 0
    data = build()
    rows = []
    for subscription in subscriptions:
        event_id, body = envelope(event, subscription.workspace.slug, data)
        rows.append(Delivery(subscription=subscription, event_id=event_id, event=event, body=body))
    Delivery.objects.bulk_create(rows)
    wake_after_commit()
    return len(rows)


def wake_after_commit() -> None:
    """One wake-up per transaction, however many events it records (a staging batch may open
    hundreds of groups). Django drops a callback whose savepoint rolls back, so the check
    sees only callbacks that will run."""
    pending = getattr(transaction.get_connection(), "run_on_commit", [])
    if any(entry[1] is wake_sender for entry in pending):
        return
    transaction.on_commit(wake_sender, robust=True)


def _user(user: Any) -> dict[str, Any] | None:
    if user is None:
        return None
    return {"id": user.pk, "username": user.get_username()}


def group_data(group: Any) -> dict[str, Any]:
    """An exception group as receivers see it."""
    path = reverse("exceptions_inbox:group", kwargs={"ws": group.workspace.slug, "pk": group.pk})
    return {
        "id": group.pk,
        "kind": group.kind,
        "title": group.title,
        "state": group.state,
        "team": group.team.slug if group.team_id else None,
        "assignee": _user(group.assignee) if group.assignee_id else None,
        "flow": {"key": group.flow_key, "label": group.flow_label} if group.flow_key else None,
        "subject": {"key": group.subject_key, "label": group.subject_label},
        "occurrence_count": group.occurrence_count,
        "open_count": group.open_count,
        "is_regression": group.is_regression,
        "first_seen": _iso(group.first_seen),
        "last_seen": _iso(group.last_seen),
        "url": _site(path),
    }


GROUP_EVENTS = {
    "created": Event.GROUP_OPENED,
    "regressed": Event.GROUP_REGRESSED,
    "assigned": Event.GROUP_ASSIGNED,
    "resolved": Event.GROUP_RESOLVED,
    "auto_resolved": Event.GROUP_RESOLVED,
}


def group_event(activity_kind: str, group: Any, *, actor: Any = None, note: str = "") -> int:
    """The group's history row of `activity_kind` was written: its event, when it has one."""
    event = GROUP_EVENTS.get(str(activity_kind))
    if event is None:
        return 0
    return record(
        group.workspace_id,
        event,
        lambda: {"group": group_data(group), "actor": _user(actor), "note": note},
    )


ALERT_EVENTS = {
    "triggered": Event.ALERT_TRIGGERED,
    "acknowledged": Event.ALERT_ACKNOWLEDGED,
    "resolved": Event.ALERT_RECOVERED,
}


def alert_event(
    change_kind: str, alert: Any, at: datetime, *, actor: Any = None, note: str = ""
) -> int:
    """The alert changed (`AlertChange.Kind`): its event, when it has one. The alert's state is
    the change's, since the caller may hold the row as it was before its update."""
    event = ALERT_EVENTS.get(str(change_kind))
    if event is None:
        return 0

    def build() -> dict[str, Any]:
        path = reverse("watch:alerts", kwargs={"ws": alert.workspace.slug})
        return {
            "alert": {
                "id": alert.pk,
                "kind": alert.kind,
                "state": str(change_kind),
                "flow": {"key": alert.flow.key, "name": alert.flow.name},
                "team": alert.team_slug,
                "message": alert.message,
                "triggered_at": _iso(alert.triggered_at),
                "changed_at": _iso(at),
                "url": _site(path),
            },
            "actor": _user(actor),
            "note": note,
        }

    return record(alert.workspace_id, event, build)
