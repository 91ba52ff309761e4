"""Sending webhook deliveries, on the `webhooks` queue's workers only.

`deliver_due` claims one due row at a time with a conditional update (a lease, so two workers
never send the same row at once, and a worker killed mid-POST only delays it by the lease), POSTs
it with a short timeout, records the attempt and the outcome. A failure (no answer, or anything
but 2xx) is retried with growing backoff and jitter, up to `MAX_ATTEMPTS`; the subscription counts
failed attempts in a row, and at `PAUSE_AFTER` it is paused with an alert (an inbox occurrence of
kind `webhook_paused` for the admins, and a mail to them). A paused subscription's pending rows
wait; resuming sends them.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timedelta

import requests
from django.contrib.auth.models import User
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from exceptions_inbox.recording import clear_occurrences, record_occurrence
from outbound.models import TEST_EVENT, Attempt, Delivery, Subscription
from outbound.record import envelope, wake_after_commit
from outbound.signing import signature_header

log = logging.getLogger(__name__)

TIMEOUT = (3.05, 5.0)  # connect, read: a slow receiver costs a worker seconds, never the engine
LEASE = timedelta(seconds=30)  # longer than one POST can take with TIMEOUT
BACKOFF = (30, 120, 600, 1800, 3600, 3 * 3600, 6 * 3600)  # seconds after the 1st, 2nd, ... failure
MAX_ATTEMPTS = len(BACKOFF) + 1
PAUSE_AFTER = 5  # failed attempts in a row (any deliveries) that pause the subscription
BATCH_SECONDS = 120.0  # one task sends for at most this long, under the soft time limit
KEEP_LOG = timedelta(days=30)
PAUSED_KIND = "webhook_paused"
USER_AGENT = "Syncdesk-Webhooks/1"


def backoff(failed_attempts: int) -> timedelta:
    """The wait after the n-th failure: the table's step plus up to a quarter more, at random, so
    a receiver coming back is not met by every delivery at once."""
    base = BACKOFF[min(failed_attempts, len(BACKOFF)) - 1]
    return timedelta(seconds=base * (1 + random.random() / 4))


def _due(now: datetime) -> Q:
    return Q(state=Delivery.State.PENDING, next_attempt_at__lte=now) & (
        Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    )


def claim_one(now: datetime) -> int | None:
    """The id of one due delivery now leased to this worker, or None."""
    candidates = (
        Delivery.objects.filter(_due(now))
        .filter(Q(subscription__state=Subscription.State.ACTIVE) | Q(event=TEST_EVENT))
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:5]
    )
    for pk in list(candidates):
        if Delivery.objects.filter(_due(now), pk=pk).update(lease_until=now + LEASE):
            return pk
    return None


def deliver_due(budget: float = BATCH_SECONDS, limit: int | None = None) -> int:
    """Send due deliveries one by one until none is due, `budget` seconds passed or `limit` were
    sent; returns how many were attempted."""
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < budget and (limit is None or sent < limit):
        pk = claim_one(timezone.now())
        if pk is None:
            break
        send(pk)
        sent += 1
    return sent


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    """POST and read at most 500 characters of the answer: its status and that excerpt."""
    with requests.post(
        url, data=body, headers=headers, timeout=TIMEOUT, allow_redirects=False, stream=True
    ) as response:
        excerpt = response.raw.read(500, decode_content=True) or b""
        return response.status_code, excerpt.decode("utf-8", "replace")


def send(pk: int) -> Attempt | None:
    """One attempt of a claimed delivery, its attempt row and its outcome."""
    delivery = Delivery.objects.select_related("subscription__workspace").filter(pk=pk).first()
    if delivery is None or delivery.state != Delivery.State.PENDING:
        return None
    subscription = delivery.subscription
    body = delivery.body.encode()
    timestamp = int(timezone.now().timestamp())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Syncdesk-Event": delivery.event,
        "Syncdesk-Delivery": str(delivery.event_id),
        "Syncdesk-Timestamp": str(timestamp),
        "Syncdesk-Signature": signature_header(subscription.signing_secret, timestamp, body),
    }
    status: int | None = None
    excerpt = error = ""
    started = time.monotonic()
    try:
        status, excerpt = post(subscription.url, body, headers)
    except requests.RequestException as exc:
        # The class only: requests' messages repeat the URL, which may carry the receiver's token.
        error = type(exc).__name__
    duration_ms = int((time.monotonic() - started) * 1000)
    if status is not None and not 200 <= status < 300:
        error = f"HTTP {status}"
    attempt = Attempt.objects.create(
        delivery=delivery,
        status_code=status,
        duration_ms=duration_ms,
        error=error,
        response_excerpt=excerpt[:500],
    )
    if error:
        _failed(delivery, status, error)
    else:
        _delivered(delivery, status)
    return attempt


def _delivered(delivery: Delivery, status: int | None) -> None:
    now = timezone.now()
    Delivery.objects.filter(pk=delivery.pk).update(
        state=Delivery.State.DELIVERED,
        attempts=F("attempts") + 1,
        delivered_at=now,
        last_status=status,
        last_error="",
        lease_until=None,
    )
    if not delivery.is_test:
        Subscription.objects.filter(pk=delivery.subscription_id).update(
            consecutive_failures=0, last_success_at=now
        )


def _failed(delivery: Delivery, status: int | None, error: str) -> None:
    """Back off, or give up after MAX_ATTEMPTS; count the failure against the subscription and
    pause it at PAUSE_AFTER in a row. A test is tried once and counts for nothing."""
    now = timezone.now()
    attempts = delivery.attempts + 1
    final = delivery.is_test or attempts >= MAX_ATTEMPTS
    Delivery.objects.filter(pk=delivery.pk).update(
        state=Delivery.State.FAILED if final else Delivery.State.PENDING,
        attempts=attempts,
        next_attempt_at=now if final else now + backoff(attempts),
        last_status=status,
        last_error=error[:300],
        lease_until=None,
    )
    if delivery.is_test:
        return
    subscription = delivery.subscription
    Subscription.objects.filter(pk=subscription.pk).update(
        consecutive_failures=F("consecutive_failures") + 1, last_failure_at=now
    )
    subscription.refresh_from_db(fields=["consecutive_failures", "state"])
    if subscription.is_active and subscription.consecutive_failures >= PAUSE_AFTER:
        pause(
            subscription,
            f"Paused after {subscription.consecutive_failures} failed attempts in a row"
            f" (last: {error}).",
            alert=True,
        )


def pause(subscription: Subscription, reason: str, *, alert: bool = False) -> bool:
    """Stop sending (pending rows wait). With `alert`, the admins are told: an inbox occurrence
    and a mail. False when it was paused already."""
    now = timezone.now()
    with transaction.atomic():
        changed = Subscription.objects.filter(
            pk=subscription.pk, state=Subscription.State.ACTIVE
        ).update(state=Subscription.State.PAUSED, paused_reason=reason[:300], paused_at=now)
        if not changed:
            return False
        subscription.refresh_from_db()
        if alert:
            _alert(subscription, reason)
    return True


def _alert(subscription: Subscription, reason: str) -> None:
    workspace = subscription.workspace
    record_occurrence(
        workspace=workspace,
        kind=PAUSED_KIND,
        event_key=f"webhook:{subscription.pk}",
        stage="outbound",
        message=reason,
        title=f"Webhook paused: {subscription.name}",
        subject_key=f"webhook:{subscription.pk}",
        subject_label=subscription.name,
        detail={"subscription": subscription.pk, "host": subscription.host},
    )
    admins = sorted(
        set(
            User.objects.filter(
                memberships__workspace=workspace, memberships__role="admin", is_active=True
            )
            .exclude(email="")
            .values_list("email", flat=True)
        )
    )
    if not admins:
        return
    subject = f"[Syncdesk] Webhook paused: {subscription.name}"
    text = f"{reason} Fix the receiver at {subscription.host}, then resume the webhook."
    transaction.on_commit(lambda: _mail(subject, text, admins), robust=True)


def _mail(subject: str, text: str, recipients: list[str]) -> None:
    try:
        send_mail(subject, text, None, recipients)
    except Exception:  # SMTP refused or down: the inbox occurrence still stands
        log.warning("could not mail the webhook pause notice", exc_info=True)


def resume(subscription: Subscription) -> bool:
    """Send again: the failure count restarts, pending rows are due now, the alert clears."""
    now = timezone.now()
    with transaction.atomic():
        changed = Subscription.objects.filter(
            pk=subscription.pk, state=Subscription.State.PAUSED
        ).update(
            state=Subscription.State.ACTIVE,
            paused_reason="",
            paused_at=None,
            consecutive_failures=0,
        )
        if not changed:
            return False
        Delivery.objects.filter(subscription=subscription, state=Delivery.State.PENDING).update(
            next_attempt_at=now
        )
        subscription.refresh_from_db()
        wake_after_commit()
    clear_occurrences(subscription.workspace, [f"webhook:{subscription.pk}"])
    return True


def remove(subscription: Subscription) -> None:
    """Delete it with its log; a pause alert of it is cleared (nothing is left to fix)."""
    key = f"webhook:{subscription.pk}"
    subscription.delete()
    clear_occurrences(subscription.workspace, [key])


def queue_test(subscription: Subscription, actor: User) -> Delivery:
    """A `webhook.test` delivery, sent once by the workers (paused or not), counting for nothing."""
    data = {
        "message": "A test from Syncdesk.",
        "actor": {"id": actor.pk, "username": actor.get_username()},
    }
    event_id, body = envelope(TEST_EVENT, subscription.workspace.slug, data)
    delivery = Delivery.objects.create(
        subscription=subscription, event_id=event_id, event=TEST_EVENT, body=body
    )
    wake_after_commit()
    return delivery


def prune_log(now: datetime | None = None) -> int:
    """Delivered and failed rows older than KEEP_LOG go (with their attempts)."""
    cutoff = (now or timezone.now()) - KEEP_LOG
    deleted, _ = (
        Delivery.objects.filter(created__lt=cutoff).exclude(state=Delivery.State.PENDING).delete()
    )
    return deleted
