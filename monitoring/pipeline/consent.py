"""Consent, as design.md says it must go.

- Only `consent.changed` events change a contact's email channel (contact upserts from orders
  carry no subscription change).
- DotDigital's suppressions are pulled on a schedule into `Suppression` rows with their
  `dateRemoved`, and again just before any subscribe is sent.
- A subscribe is never sent when DotDigital holds an opt-out newer than (or as new as) the
  source's `consent_at`, nor when the source's `consent_at` is not exact (a record's `updatedOn`,
  say): a stale flag must never re-subscribe someone who opted out (PECR/GDPR).
- Every subscribe carries `resubscribeWithNoChallenge: false` (`ContactWrite.body`), so even an
  allowed re-subscription of an opted-out contact asks the contact to confirm.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from django.utils import timezone

from connectors.dotdigital import errors
from connectors.dotdigital.client import DotDigitalClient
from connectors.dotdigital.types import ContactWrite, Outcome
from connectors.models import Connection
from monitoring.models import DestinationCache, Operation, Suppression
from monitoring.pipeline.normalise import normalise_email, parse_time
from monitoring.pipeline.sending import (
    SINGLE_MAX,
    Sending,
    each_call,
    handle_error,
    kill_point,
    single_room,
)

log = logging.getLogger(__name__)

CURSOR = "suppressions_cursor"
BEGINNING = datetime(2000, 1, 1, tzinfo=UTC)
OVERLAP = timedelta(minutes=1)  # re-read a little of the last window: upserts are idempotent
OPT_IN_TYPES = {"single": "single", "confirmed": "verifiedDouble", "unknown": "unknown"}


def pull_suppressions(destination: Connection, client: DotDigitalClient | None = None) -> int:
    """Bring DotDigital's opt-outs and bounces since the last pull into `Suppression` rows (the
    newest `dateRemoved` per email wins). Returns how many it read."""
    client = client or DotDigitalClient.for_connection(destination)
    row = DestinationCache.objects.filter(destination=destination, name=CURSOR).first()
    since = parse_time((row.value if row else {}).get("since")) or BEGINNING
    started = timezone.now()
    latest: dict[str, tuple[datetime, str, int]] = {}
    for item in client.suppressions_since(since):
        email = normalise_email(item.email)
        if not email:
            continue
        current = latest.get(email)
        if current is None or item.date_removed > current[0]:
            latest[email] = (item.date_removed, item.reason, item.contact_id)
    if latest:
        existing = {
            s.email: s
            for s in Suppression.objects.filter(destination=destination, email__in=list(latest))
        }
        rows = []
        for email, (removed, reason, contact_id) in latest.items():
            old = existing.get(email)
            if old is not None and old.date_removed >= removed:
                continue
            rows.append(
                Suppression(
                    workspace_id=destination.workspace_id,
                    destination=destination,
                    email=email,
                    contact_id=contact_id or None,
                    reason=reason[:60],
                    date_removed=removed,
                    pulled_at=started,
                )
            )
        Suppression.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["destination", "email"],
            update_fields=["contact_id", "reason", "date_removed", "pulled_at"],
        )
    DestinationCache.objects.update_or_create(
        destination=destination,
        name=CURSOR,
        defaults={"value": {"since": (started - OVERLAP).isoformat()}, "fetched_at": started},
    )
    return len(latest)


def pull_all_suppressions() -> int:
    """`pull_suppressions` for every active DotDigital connection; one that fails is logged and
    tried again on the next run. Returns how many suppressions it read."""
    total = 0
    for conn in Connection.objects.filter(
        kind=Connection.Kind.DOTDIGITAL, status=Connection.Status.ACTIVE
    ):
        try:
            total += pull_suppressions(conn)
        except errors.DotDigitalError as exc:
            log.warning("pulling suppressions of %s failed: %s", conn, exc)
    return total


def subscribe_blocked(destination: Connection, payload: dict[str, object]) -> str | None:
    """Why a source's opt-in must not be sent (None when it may)."""
    email = str(payload.get("email") or "")
    suppression = Suppression.objects.filter(destination=destination, email=email).first()
    if suppression is None:
        return None
    if not payload.get("exact"):
        return (
            f"Not re-subscribed: DotDigital holds an opt-out ({suppression.reason}, "
            f"{suppression.date_removed:%Y-%m-%d %H:%M} UTC) and the source's consent time is "
            "not exact."
        )
    consent_at = parse_time(str(payload.get("consent_at") or ""))
    if consent_at is None or consent_at <= suppression.date_removed:
        return (
            f"Not re-subscribed: DotDigital's opt-out ({suppression.reason}, "
            f"{suppression.date_removed:%Y-%m-%d %H:%M:%S} UTC) is newer than the source's "
            f"consent ({payload.get('consent_at')})."
        )
    return None


def _consent_writes(
    sending: Sending, ops: Sequence[Operation]
) -> list[tuple[Operation, ContactWrite]]:
    """The writes to send; a subscribe DotDigital's opt-out forbids is skipped, and a status that
    changes nothing in DotDigital is delivered, without a call."""
    writes: list[tuple[Operation, ContactWrite]] = []
    for op in ops:
        status = str(op.payload.get("status") or "")
        email = op.record_key
        if status == "subscribed":
            blocked = subscribe_blocked(sending.destination, op.payload)
            if blocked:
                sending.add(op, "skipped", reason=blocked, code="consent_stale")
                continue
            write = ContactWrite(
                email=email,
                email_status="subscribed",
                opt_in_type=OPT_IN_TYPES.get(str(op.payload.get("opt_in") or ""), "single"),
            )
        elif status == "unsubscribed":
            write = ContactWrite(email=email, email_status="unsubscribed")
        else:  # pending / not_subscribed: nothing for DotDigital to change
            sending.add(op, "delivered")
            continue
        writes.append((op, write))
    return writes


def send_consent(
    sending: Sending, ops: Sequence[Operation]
) -> list[tuple[Operation, ContactWrite]]:
    """Subscription changes. A subscribe DotDigital's opt-out forbids is decided here, before
    anything is sent, so it makes no call at all; the rest go as single calls (concurrently)
    while the single-call tier has room. Returns the writes left for a contact import, which
    takes the same body (`resubscribeWithNoChallenge: false` included): the sender puts them in
    the claim's contact import (`deliver._send_contacts`), not an import of their own."""
    subscribes = [op for op in ops if op.payload.get("status") == "subscribed"]
    if subscribes:
        try:
            pull_suppressions(sending.destination, sending.client)
        except errors.DotDigitalError as exc:
            handle_error(sending, subscribes, exc)
            ops = [op for op in ops if op not in subscribes]
            subscribes = []
    writes = _consent_writes(sending, ops)
    if not writes:
        return []
    realtime = sending.lane == "realtime"
    if realtime and len(writes) <= SINGLE_MAX and single_room(sending.client, len(writes)):
        answers = each_call(sending.client, sending.client.upsert_contact, [w for _, w in writes])
        rest: list[tuple[Operation, ContactWrite]] = []
        failed: list[tuple[Operation, errors.DotDigitalError]] = []
        for (op, write), answer in zip(writes, answers, strict=True):
            if isinstance(answer, errors.RateLimited) and answer.status is None:
                rest.append((op, write))  # the single tier is spent: in an import
            elif isinstance(answer, errors.DotDigitalError):
                failed.append((op, answer))
            elif answer.outcome is Outcome.SUPPRESSED:
                sending.add(
                    op,
                    "skipped",
                    reason="The contact is suppressed in DotDigital.",
                    code="suppressed",
                )
            else:
                sending.add(
                    op,
                    "delivered",
                    contact_id=answer.contact.contact_id if answer.contact else None,
                    reason="DotDigital asked the contact to confirm."
                    if answer.outcome is Outcome.PENDING_OPT_IN
                    else "",
                )
        if len(rest) + len(failed) < len(writes):
            kill_point("after_send")
        failed.sort(key=lambda item: isinstance(item[1], errors.ConnectionProblem))
        for op, error in failed:
            handle_error(sending, [op], error)
        writes = rest
    going = {op.pk for op in sending.importable([op for op, _ in writes])}
    return [(op, write) for op, write in writes if op.pk in going]
