"""Erasure: forget one person's local data (and, if asked, their DotDigital contact), audited.

What is erased in a workspace, for the normalised email (design.md: trimmed, NFC, lower case):

- the identity: `Customer` rows with that email (or that had it) and their `CustomerKey` rows are
  deleted; their orders keep their money and lines (the retailer's books) but lose the email and
  the link to the person;
- their events' envelopes (the person's own events, and the events of their orders) are replaced
  by a redacted head (``{"redacted": "erasure", ...}``: event type, times, source and keys), and an
  entity key naming the email is replaced by a digest;
- the stored request bodies that carried any of these events, or that contain the email at all,
  are **redacted whole**: a body is the sender's raw bytes, so one that also held other people's
  events loses them too (their envelopes stay; the report counts such bodies as `shared_bodies`);
- notification payloads naming the email, exception occurrences (their email, payload detail and
  the email in their message) and exception groups (email, title, subject), comments naming it;
- outbox operations for the contact: open ones are skipped (so nothing re-creates the contact in
  DotDigital after the erasure), every one loses its payload and keys;
- with `dotdigital=True`, the contact in each DotDigital connection of the workspace (client DELETE).

What stays: DotDigital's suppressions pulled into Syncdesk (an opt-out is the record that keeps a
person from being mailed again), row counts, states and timestamps, so timelines still read.

The audit row (`accounts.audit.record_change`) names the person only by a keyed digest of the
email (HMAC-SHA256 with SECRET_KEY): the same email always gives the same digest, so a later
request can be matched to it, but the row itself holds no personal data.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts import audit
from accounts.models import ConfigChange, Workspace
from connectors.dotdigital.client import DotDigitalClient
from connectors.dotdigital.errors import DotDigitalError
from connectors.models import Connection
from exceptions_inbox.models import Activity, ExceptionGroup, Occurrence
from monitoring.models import (
    Customer,
    CustomerKey,
    Operation,
    Order,
    SourceEvent,
    SourceNotification,
    WebhookRequest,
)
from monitoring.pipeline.normalise import normalise_email
from monitoring.privacy.retention import is_redacted, marker, redacted_envelope

log = logging.getLogger(__name__)

REASON = "erasure"
SCAN_CHUNK = 500
OPEN_OPERATION_STATES = ("pending", "sending", "sent")


def email_digest(email: str) -> str:
    """The keyed digest the audit names a person by (never the email itself)."""
    hidden = audit.hide(normalise_email(email))
    return hidden.digest if hidden is not None else ""


@dataclass
class ErasureReport:
    digest: str
    workspace: str
    customers: int = 0
    customer_keys: int = 0
    orders: int = 0
    events: int = 0
    bodies: int = 0
    shared_bodies: int = 0
    notifications: int = 0
    occurrences: int = 0
    groups: int = 0
    comments: int = 0
    operations: int = 0
    dotdigital: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("workspace",)}

    def summary(self) -> str:
        parts = [
            f"{self.customers} identities",
            f"{self.customer_keys} source ids",
            f"{self.orders} orders unlinked",
            f"{self.events} events",
            f"{self.bodies} request bodies ({self.shared_bodies} also held other people's events)",
            f"{self.notifications} notifications",
            f"{self.occurrences} exception occurrences",
            f"{self.groups} exception groups",
            f"{self.operations} outbox operations",
        ]
        text = "Erased " + ", ".join(parts) + "."
        if self.dotdigital:
            text += " DotDigital: " + "; ".join(self.dotdigital) + "."
        return text


def _scrub(text: str, email: str, digest: str) -> str:
    return re.sub(re.escape(email), f"[erased {digest[:8]}]", text, flags=re.IGNORECASE)


def forget_contact(
    email: str,
    workspace: Workspace,
    *,
    actor: Any = None,
    dotdigital: bool = False,
    now: datetime | None = None,
) -> ErasureReport:
    """Erase one person's local data in one workspace (see the module's docstring)."""
    now = now or timezone.now()
    norm = normalise_email(email)
    if not norm:
        raise ValueError("An email address is needed.")
    digest = email_digest(norm)
    report = ErasureReport(digest=digest, workspace=workspace.slug)
    with transaction.atomic():
        _erase_local(norm, digest, workspace, report, now)
    if dotdigital:
        report.dotdigital = _erase_in_dotdigital(norm, workspace)
    audit.record_change(
        workspace,
        actor,
        f"Erasure of contact {digest[:16]}",
        ConfigChange.Action.DELETED,
        None,
        {"email_digest": digest, **report.as_dict()},
        note=f"Contact erased (email HMAC-SHA256 {digest}). {report.summary()}",
        always=True,
    )
    log.info("erased contact %s in workspace %s", digest[:16], workspace.slug)
    return report


def _erase_local(
    norm: str, digest: str, workspace: Workspace, report: ErasureReport, now: datetime
) -> None:
    ws = workspace.pk
    customer_ids = _customer_ids(norm, ws)
    orders = Order.objects.filter(workspace_id=ws).filter(
        Q(customer_id__in=customer_ids) | Q(email=norm)
    )
    order_ids = list(orders.values_list("pk", flat=True))
    event_ids, request_ids = _erase_events(norm, digest, ws, customer_ids, order_ids, report, now)
    _erase_inbox(norm, digest, ws, event_ids, request_ids, report, now)
    _erase_outbox(norm, digest, ws, customer_ids, report, now)
    report.orders = orders.update(email="", customer=None)
    report.customer_keys, _ = CustomerKey.objects.filter(customer_id__in=customer_ids).delete()
    deleted, _ = Customer.objects.filter(pk__in=customer_ids).delete()
    report.customers = len(customer_ids) if deleted else 0


def _customer_ids(norm: str, ws: int) -> list[int]:
    """The customers known by the email: now, as received, or before a change of address."""
    return [
        c.pk
        for c in Customer.objects.filter(workspace_id=ws).filter(
            Q(email=norm) | Q(email_raw__iexact=norm) | Q(previous_emails__icontains=norm)
        )
        if c.email == norm
        or normalise_email(c.email_raw) == norm
        or norm in [normalise_email(str(e)) for e in c.previous_emails or []]
    ]


def _erase_events(
    norm: str,
    digest: str,
    ws: int,
    customer_ids: list[int],
    order_ids: list[int],
    report: ErasureReport,
    now: datetime,
) -> tuple[set[int], set[int]]:
    """Redact the events, the request bodies and the notifications naming the person; returns
    the ids of the events and of the requests."""
    # Events: the person's own, their orders', and any whose envelope names the email.
    events = SourceEvent.objects.filter(workspace_id=ws).filter(
        Q(customer_id__in=customer_ids) | Q(order_id__in=order_ids) | Q(envelope__icontains=norm)
    )
    event_rows = list(events.only("pk", "envelope", "entity_key", "request_id"))
    for row in event_rows:
        row.envelope = redacted_envelope(row.envelope, REASON, now)
        if norm in row.entity_key.lower():
            row.entity_key = f"erased:{digest[:16]}"
            row.envelope.get("entity", {}).pop("key", None)
    SourceEvent.objects.bulk_update(event_rows, ["envelope", "entity_key"], batch_size=SCAN_CHUNK)
    report.events = len(event_rows)
    event_ids = {r.pk for r in event_rows}

    # Request bodies: those of the events, and any that contain the email (a malformed body that
    # never became an event still holds it). Bodies are redacted whole.
    request_ids = {r.request_id for r in event_rows if r.request_id is not None}
    request_ids |= set(_requests_naming(norm, ws))
    shared = (
        SourceEvent.objects.filter(request_id__in=request_ids)
        .exclude(pk__in=event_ids)
        .values_list("request_id", flat=True)
        .distinct()
    )
    report.shared_bodies = len(set(shared))
    report.bodies = WebhookRequest.objects.filter(pk__in=request_ids).update(
        body=b"", headers=marker(REASON, now)
    )

    notifications = SourceNotification.objects.filter(workspace_id=ws).filter(
        Q(payload__icontains=norm) | Q(request_id__in=request_ids)
    )
    report.notifications = notifications.update(payload=marker(REASON, now))
    return event_ids, request_ids


def _erase_inbox(
    norm: str,
    digest: str,
    ws: int,
    event_ids: set[int],
    request_ids: set[int],
    report: ErasureReport,
    now: datetime,
) -> None:
    """The inbox: occurrences of these events or naming the email, their groups, comments."""
    event_keys = [f"event:{pk}" for pk in event_ids] + [f"webhook:{pk}" for pk in request_ids]
    occurrences = list(
        Occurrence.objects.filter(workspace_id=ws).filter(
            Q(email__iexact=norm)
            | Q(event_key__in=event_keys)
            | Q(detail__icontains=norm)
            | Q(message__icontains=norm)
        )
    )
    for occ in occurrences:
        occ.email = ""
        occ.detail = marker(REASON, now)
        occ.message = _scrub(occ.message, norm, digest)
    Occurrence.objects.bulk_update(occurrences, ["email", "detail", "message"])
    report.occurrences = len(occurrences)
    groups = list(
        ExceptionGroup.objects.filter(workspace_id=ws).filter(
            Q(email__iexact=norm)
            | Q(title__icontains=norm)
            | Q(subject_label__icontains=norm)
            | Q(subject_key__icontains=norm)
        )
    )
    for group in groups:
        group.email = ""
        group.title = _scrub(group.title, norm, digest)
        group.subject_label = _scrub(group.subject_label, norm, digest)
        group.subject_key = _scrub(group.subject_key, norm, digest)
    ExceptionGroup.objects.bulk_update(groups, ["email", "title", "subject_label", "subject_key"])
    report.groups = len(groups)
    comments = list(Activity.objects.filter(group__workspace_id=ws, note__icontains=norm))
    for comment in comments:
        comment.note = _scrub(comment.note, norm, digest)
    Activity.objects.bulk_update(comments, ["note"])
    report.comments = len(comments)


def _erase_outbox(
    norm: str, digest: str, ws: int, customer_ids: list[int], report: ErasureReport, now: datetime
) -> None:
    """The outbox: writes for the person are emptied, and those still open are skipped."""
    ops = Operation.objects.filter(workspace_id=ws).filter(
        Q(customer_id__in=customer_ids)
        | Q(key__icontains=norm)
        | Q(record_key__iexact=norm)
        | Q(contact_key__iexact=norm)
        | Q(payload__icontains=norm)
    )
    op_rows = list(ops)
    for op in op_rows:
        if op.state in OPEN_OPERATION_STATES:
            op.state = "skipped"
            op.reason = "The contact was erased."
            op.lease_owner = ""
            op.lease_until = None
        op.key = f"erased:{digest[:16]}:{op.pk}"
        op.record_key = ""
        op.contact_key = ""
        op.payload = marker(REASON, now)
    Operation.objects.bulk_update(
        op_rows,
        [
            "state",
            "reason",
            "lease_owner",
            "lease_until",
            "key",
            "record_key",
            "contact_key",
            "payload",
        ],  # fmt: skip
    )
    report.operations = len(op_rows)


def _requests_naming(norm: str, workspace_id: int) -> Iterable[int]:
    """Requests whose stored body contains the email (bytes, any case), scanned in chunks."""
    needle = norm.encode()
    rows = (
        WebhookRequest.objects.filter(workspace_id=workspace_id)
        .exclude(headers__has_key="redacted")
        .values_list("pk", "body")
    )
    for pk, body in rows.iterator(chunk_size=SCAN_CHUNK):
        if needle in bytes(body).lower():
            yield pk


def _erase_in_dotdigital(norm: str, workspace: Workspace) -> list[str]:
    """Delete the contact in each DotDigital connection of the workspace; one line per account."""
    outcomes = []
    for conn in Connection.objects.filter(workspace=workspace, kind="dotdigital").order_by("pk"):
        try:
            deleted = DotDigitalClient.for_connection(conn).delete_contact("email", norm)
        except DotDigitalError as exc:
            outcomes.append(f"{conn.name}: failed ({type(exc).__name__}); retry the erasure")
            continue
        outcomes.append(f"{conn.name}: {'contact deleted' if deleted else 'no such contact'}")
    return outcomes


def redacted(payload: Any) -> bool:
    return is_redacted(payload)
