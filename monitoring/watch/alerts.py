"""Lag and stalled alerts: triggered → acknowledged → resolved, one notice per change.

Modelled on healthchecks (`Check.get_status` → `Flip` → `sendalerts`): `check_flow` compares a
flow's health with its `FlowWatch` and changes the alert's state through `_change`, which writes
one `AlertChange` (the history row, with its actor) and one `AlertNotice`, then sends the notice
by e-mail to the owning team and to the webhook (Slack-compatible `{"text": ...}`). An open alert
is also an inbox occurrence (`lag` / `stalled_flow`, event key `alert:<pk>`), cleared on resolve;
acknowledging the inbox group acknowledges the alert (`on_group_acknowledged`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import requests
from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from exceptions_inbox.kinds import register_hooks as register
from exceptions_inbox.models import ExceptionGroup, Occurrence
from exceptions_inbox.recording import clear_occurrences, record_occurrence
from monitoring.models import Alert, AlertChange, AlertNotice, Flow, FlowWatch
from monitoring.watch.flow_health import (
    FlowHealth,
    flow_health,
    fmt_seconds,
    is_stalled,
    record_sample,
)
from outbound import record as outbound

log = logging.getLogger(__name__)
WEBHOOK_TIMEOUT = 5.0
Change = AlertChange.Kind


def check_flow(h: FlowHealth) -> list[str]:
    """Apply the flow's rules to its health at `h.now`; returns the changes made."""
    watch, now = h.watch, h.now
    record_sample(h)
    changes: list[str] = []
    if not watch.enabled or not h.flow.is_active:
        return changes
    open_alerts = {a.kind: a for a in Alert.objects.filter(flow=h.flow).exclude(state="resolved")}
    # Lag: over the threshold for `lag_for_minutes` in a row.
    if h.is_lagging:
        if watch.lag_breach_since is None:
            FlowWatch.objects.filter(pk=watch.pk).update(lag_breach_since=now)
            watch.lag_breach_since = now
        lasting = now - watch.lag_breach_since >= timedelta(minutes=watch.lag_for_minutes)
        if (
            lasting
            and Alert.Kind.LAG not in open_alerts
            and trigger(h, Alert.Kind.LAG, lag_message(h))
        ):
            changes.append("lag triggered")
    else:
        if watch.lag_breach_since is not None:
            FlowWatch.objects.filter(pk=watch.pk).update(lag_breach_since=None)
            watch.lag_breach_since = None
        if Alert.Kind.LAG in open_alerts:
            resolve(
                open_alerts[Alert.Kind.LAG],
                now,
                "Latency and backlog are back under the threshold.",
            )
            changes.append("lag resolved")
    # Stalled: no events within the grace period during trading hours; resolved by an event.
    stalled_alert = open_alerts.get(Alert.Kind.STALLED)
    if stalled_alert is None and is_stalled(watch, h.last_in, now):
        message = (
            f"{h.flow.name}: no events for {watch.stalled_grace_minutes} min during trading hours"
            f" (last event {h.last_in:%Y-%m-%d %H:%M} UTC)."
            if h.last_in
            else f"{h.flow.name}: no events yet during trading hours."
        )
        if trigger(h, Alert.Kind.STALLED, message):
            changes.append("stalled triggered")
    elif stalled_alert is not None and h.last_in and h.last_in > stalled_alert.triggered_at:
        resolve(stalled_alert, now, f"Events flow again (last at {h.last_in:%H:%M} UTC).")
        changes.append("stalled resolved")
    # Escalation: nobody acknowledged within N minutes.
    for alert in Alert.objects.filter(
        flow=h.flow,
        state=Alert.State.TRIGGERED,
        escalated_at__isnull=True,
        triggered_at__lte=now - timedelta(minutes=watch.escalate_after_minutes),
    ):
        if escalate(alert, now):
            changes.append(f"{alert.kind} escalated")
    return changes


def lag_message(h: FlowHealth) -> str:
    parts = []
    if h.p95_hour is not None and h.p95_hour > h.watch.p95_limit:
        parts.append(
            f"p95 latency {fmt_seconds(h.p95_hour)} (limit {fmt_seconds(h.watch.p95_limit)})"
        )
    age = h.oldest_age
    if age is not None and age > h.watch.backlog_age_limit:
        parts.append(
            f"oldest waiting event {fmt_seconds(age)} old (limit {fmt_seconds(h.watch.backlog_age_limit)})"
        )
    return f"{h.flow.name} is lagging: {'; '.join(parts)}; backlog {h.backlog}."


def trigger(h: FlowHealth, kind: str, message: str) -> Alert | None:
    """Open an alert (once: the partial unique index makes a racing second check a no-op)."""
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                workspace_id=h.flow.workspace_id,
                flow=h.flow,
                kind=kind,
                team_slug=h.watch.owning_team,
                message=message,
                detail={
                    "p95_hour": h.p95_hour,
                    "backlog": h.backlog,
                    "oldest_age": h.oldest_age,
                    "last_in": h.last_in.isoformat() if h.last_in else None,
                },
                triggered_at=h.now,
            )
            notice = _change(alert, Change.TRIGGERED, h.now, note=message)
    except IntegrityError:
        return None
    record_occurrence(
        workspace=h.flow.workspace,
        kind=kind,
        event_key=alert.event_key,
        stage="watch",
        message=message,
        title=f"{alert.get_kind_display()}: {h.flow.name}",
        flow_key=h.flow.key,
        flow_label=h.flow.name,
        subject_key=h.flow.key,
        subject_label=h.flow.name,
        detail={"alert": alert.pk, **alert.detail},
        team_slug=alert.team_slug,
    )
    send_notice(notice)
    return alert


def acknowledge(
    alert: Alert, actor: User | None, now: datetime | None = None, note: str = ""
) -> bool:
    """Stop the escalation clock; False when the alert was not triggered (already done)."""
    now = now or timezone.now()
    with transaction.atomic():
        changed = Alert.objects.filter(pk=alert.pk, state=Alert.State.TRIGGERED).update(
            state=Alert.State.ACKNOWLEDGED, acknowledged_at=now, acknowledged_by=actor
        )
        if not changed:
            return False
        notice = _change(alert, Change.ACKNOWLEDGED, now, actor=actor, note=note)
    alert.refresh_from_db()
    send_notice(notice)
    return True


def resolve(alert: Alert, now: datetime, note: str, actor: User | None = None) -> bool:
    """Recovery: one notice, and the inbox occurrence is cleared."""
    with transaction.atomic():
        changed = (
            Alert.objects.filter(pk=alert.pk)
            .exclude(state=Alert.State.RESOLVED)
            .update(state=Alert.State.RESOLVED, resolved_at=now)
        )
        if not changed:
            return False
        notice = _change(alert, Change.RESOLVED, now, actor=actor, note=note)
    alert.refresh_from_db()
    clear_occurrences(alert.workspace, [alert.event_key])
    send_notice(notice)
    return True


def escalate(alert: Alert, now: datetime) -> bool:
    with transaction.atomic():
        changed = Alert.objects.filter(
            pk=alert.pk, state=Alert.State.TRIGGERED, escalated_at__isnull=True
        ).update(escalated_at=now)
        if not changed:
            return False
        minutes = int((now - alert.triggered_at).total_seconds() // 60)
        notice = _change(
            alert, Change.ESCALATED, now, note=f"Not acknowledged after {minutes} min."
        )
    alert.refresh_from_db()
    send_notice(notice)
    return True


def _change(
    alert: Alert, kind: str, now: datetime, *, actor: User | None = None, note: str = ""
) -> AlertNotice:
    """The history row and its one notice (sent after the transaction by `send_notice`)."""
    change = AlertChange.objects.create(alert=alert, kind=kind, at=now, actor=actor, note=note)
    outbound.alert_event(kind, alert, now, actor=actor, note=note)
    flow = alert.flow
    who = f" by {actor.get_username()}" if actor else ""
    label = {
        Change.TRIGGERED: "ALERT",
        Change.ACKNOWLEDGED: "Acknowledged",
        Change.ESCALATED: "ESCALATED",
        Change.RESOLVED: "Recovered",
    }[AlertChange.Kind(kind)]
    subject = f"[Syncdesk] {label}: {alert.get_kind_display()} on {flow.name}"
    text = f"{label}{who}: {alert.get_kind_display().lower()} on {flow.name}. {note}".strip()
    teams = [alert.team_slug] + (["admins"] if kind == Change.ESCALATED else [])
    return AlertNotice.objects.create(
        change=change,
        subject=subject[:200],
        text=text,
        recipients=recipients(alert, teams),
        webhook_url=webhook_for(flow),
        created=now,
    )


def recipients(alert: Alert, team_slugs: Sequence[str]) -> list[str]:
    return sorted(
        set(
            User.objects.filter(
                teams__workspace_id=alert.workspace_id, teams__slug__in=team_slugs, is_active=True
            )
            .exclude(email="")
            .values_list("email", flat=True)
        )
    )


def webhook_for(flow: Flow) -> str:
    watch = FlowWatch.objects.filter(flow=flow).only("webhook_url").first()
    return (watch.webhook_url if watch else "") or getattr(settings, "ALERT_WEBHOOK_URL", "")


def post_webhook(url: str, body: dict[str, Any]) -> int:
    """POST the notice (the one seam tests patch)."""
    response = requests.post(url, json=body, timeout=WEBHOOK_TIMEOUT)
    return response.status_code


def send_notice(notice: AlertNotice) -> None:
    """E-mail the team and call the webhook; the outcome is recorded on the notice."""
    errors = []
    fields: dict[str, Any] = {}
    if notice.recipients:
        try:
            send_mail(notice.subject, notice.text, None, notice.recipients)
            fields["emailed_at"] = timezone.now()
        except Exception as exc:  # SMTP refused or down: recorded, the alert still stands
            errors.append(f"e-mail: {type(exc).__name__}: {exc}")
    if notice.webhook_url:
        try:
            fields["webhook_status"] = post_webhook(notice.webhook_url, {"text": notice.text})
        except requests.RequestException as exc:
            errors.append(f"webhook: {type(exc).__name__}")
    fields["error"] = "; ".join(errors)
    AlertNotice.objects.filter(pk=notice.pk).update(**fields)


def on_group_acknowledged(group: ExceptionGroup, actor: User | None) -> None:
    """The inbox hook: acknowledging a lag or stalled group acknowledges its open alerts."""
    keys = Occurrence.objects.filter(group=group, event_key__startswith="alert:").values_list(
        "event_key", flat=True
    )
    ids = [int(k.split(":", 1)[1]) for k in keys if k.split(":", 1)[1].isdigit()]
    for alert in Alert.objects.filter(pk__in=ids, state=Alert.State.TRIGGERED):
        acknowledge(alert, actor, note="Acknowledged in the inbox.")


def register_hooks() -> None:
    for kind in (Alert.Kind.LAG, Alert.Kind.STALLED):
        register(str(kind), on_acknowledge=on_group_acknowledged)


def check_all(now: datetime | None = None) -> list[str]:
    """Check every active flow (the periodic loop); returns the changes made."""
    flows = Flow.objects.filter(is_active=True).select_related("workspace")
    changes: list[str] = []
    for h in flow_health(flows, now):
        changes.extend(f"{h.flow.pk}: {c}" for c in check_flow(h))
    return changes
