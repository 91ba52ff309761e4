"""Reconciliation (the engine's state against DotDigital, read through the client) and the
opt-out round trip (DotDigital's suppressions written back to the source).

A run compares, per flow, the contacts its events touched (all, or a sample): the contact exists,
and its key fields (LTV, ORDER_COUNT, LAST_ORDER_DATE) hold what the engine's state says; then the
flow's orders: the `Orders` record exists and its GrandTotal matches. Each difference is a row and
a `reconciliation_difference` occurrence (money to finance, segment fields and missing contacts to
marketing, by `team_slug`); a difference not found again by the next run is cleared. "Repair"
re-sends the engine's value through the outbox (an upsert by key, so it applies once).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from connectors.dotdigital.client import DotDigitalClient
from connectors.dotdigital.errors import DotDigitalError, NotFound
from connectors.dotdigital.types import Contact
from connectors.sources.base import SourceError
from connectors.sources.registry import get_adapter
from exceptions_inbox.recording import clear_occurrences, record_occurrence
from monitoring.models import Customer, Flow, Order, SourceEvent
from monitoring.outbox import Suppression
from monitoring.pipeline.mapping import ORDERS, Context, OpSpec, contact_spec, number, order_spec
from monitoring.pipeline.normalise import parse_time
from monitoring.watch_models import (
    OptOutWriteBack,
    ReconciliationDifference,
    ReconciliationRun,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from exceptions_inbox.models import Occurrence

log = logging.getLogger(__name__)
Diff = ReconciliationDifference.Kind
# The contact fields compared, and who owns a difference in each (money → finance).
FIELDS: dict[str, str] = {
    "LTV": "finance",
    "ORDER_COUNT": "marketing",
    "LAST_ORDER_DATE": "marketing",
}
KIND = "reconciliation_difference"


@dataclass
class Found:
    kind: str
    subject: str
    team: str
    email: str = ""
    order_number: str = ""
    field: str = ""
    engine: Any = None
    dotdigital: Any = None


def same(engine: Any, remote: Any, field_type: str) -> bool:
    """Equal as DotDigital would show them: numbers to the cent, dates to the second (or the day
    when either side is a date only), everything else as text."""
    if engine is None or engine == "":
        return remote is None or remote == ""
    if remote is None or remote == "":
        return False
    if field_type == "numeric":
        try:
            return Decimal(str(engine)).quantize(Decimal("0.01")) == Decimal(str(remote)).quantize(
                Decimal("0.01")
            )
        except InvalidOperation:
            return str(engine) == str(remote)
    if field_type == "date":
        a, b = parse_time(engine), parse_time(remote)
        if a is None or b is None:
            return str(engine)[:10] == str(remote)[:10]
        if len(str(engine)) <= 10 or len(str(remote)) <= 10:
            return a.date() == b.date()
        return abs((a - b).total_seconds()) < 1
    return str(engine) == str(remote)


def flow_customers(flow: Flow) -> Any:
    return (
        Customer.objects.filter(workspace_id=flow.workspace_id, events__flow=flow)
        .exclude(email="")
        .distinct()
    )


def flow_orders(flow: Flow) -> Any:
    return Order.objects.filter(workspace_id=flow.workspace_id, events__flow=flow).distinct()


def run_reconciliation(
    flow: Flow, *, sample: int | None = None, client: DotDigitalClient | None = None
) -> ReconciliationRun:
    """Compare the flow's state with DotDigital; returns the finished (or failed) run."""
    from monitoring.watch import watch_for

    size = watch_for(flow).reconcile_sample if sample is None else sample
    run = ReconciliationRun.objects.create(
        workspace_id=flow.workspace_id, flow=flow, sample=size, started_at=timezone.now()
    )
    if flow.destination is None:
        return _fail(run, "The flow has no DotDigital connection.")
    client = client or DotDigitalClient.for_connection(flow.destination)
    try:
        found = compare(flow, run, client, size)
    except DotDigitalError as exc:
        return _fail(run, f"DotDigital: {exc}")
    _record(flow, run, found)
    return run


def compare(flow: Flow, run: ReconciliationRun, client: DotDigitalClient, size: int) -> list[Found]:
    mappings = {m.target.upper(): m for m in flow.field_mappings.filter(enabled=True)}
    customers_qs = flow_customers(flow)
    customers = list(customers_qs.order_by("?")[:size] if size else customers_qs)
    found: list[Found] = []
    remote: dict[str, Contact] = {}
    if size:
        for c in customers:
            contact = client.get_contact("email", c.email)
            if contact is not None and contact.email:
                remote[contact.email.lower()] = contact
        run.dotdigital_contacts = 0
    else:
        wanted = [*FIELDS]
        for contact in client.iter_contacts(data_fields=wanted, include=()):
            if contact.email:
                remote[contact.email.lower()] = contact
        run.dotdigital_contacts = len(remote)
    run.engine_contacts = customers_qs.count()
    checked = matched = 0
    for customer in customers:
        checked += 1
        contact = remote.get(customer.email)
        if contact is None:
            found.append(Found(Diff.CONTACT_MISSING, customer.email, "marketing", customer.email))
            continue
        spec = contact_spec(customer, mappings.values(), flow.sends_aggregates)
        fields = spec.payload["fields"]
        ok = True
        for name, team in FIELDS.items():
            if name not in fields:
                continue
            want, have = fields[name]["value"], contact.data_fields.get(name)
            if not same(want, have, str(fields[name]["type"])):
                ok = False
                found.append(
                    Found(Diff.FIELD, customer.email, team, customer.email, "", name, want, have)
                )
        matched += ok
    # Orders: the record and its total (money → finance).
    orders_qs = flow_orders(flow).exclude(email="").filter(grand_total__isnull=False)
    orders = list(orders_qs.order_by("?")[:size] if size else orders_qs)
    records: dict[str, dict[str, Any]] = {}
    for email in sorted({o.email for o in orders}):
        records.update(contact_records(client, email))
    for order in orders:
        checked += 1
        number_key = order.order_number or order.channel_order_ref or f"order-{order.pk}"
        record = records.get(number_key)
        want = number(order.grand_total)
        if record is None:
            found.append(
                Found(Diff.RECORD_MISSING, number_key, "finance", order.email, number_key, "", want)
            )
            continue
        have = record.get("GrandTotal")
        if not same(want, have, "numeric"):
            found.append(
                Found(
                    Diff.RECORD,
                    number_key,
                    "finance",
                    order.email,
                    number_key,
                    "GrandTotal",
                    want,
                    have,
                )
            )
            continue
        matched += 1
    run.checked, run.matched = checked, matched
    return found


def contact_records(client: DotDigitalClient, email: str) -> dict[str, dict[str, Any]]:
    """A contact's `Orders` records by key (none when DotDigital has no such contact)."""
    out: dict[str, dict[str, Any]] = {}
    marker = None
    while True:
        try:
            page = client.list_insight_records(ORDERS[0], contact=("email", email), marker=marker)
        except NotFound:
            return out
        out.update({r.key: r.json for r in page.items})
        if not page.next_marker:
            return out
        marker = page.next_marker


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _record(flow: Flow, run: ReconciliationRun, found: list[Found]) -> None:
    previous = list(
        ReconciliationDifference.objects.filter(
            run__flow=flow, repaired_at__isnull=True, run__started_at__lt=run.started_at
        ).exclude(run=run)
    )
    seen = set()
    for f in found:
        diff = ReconciliationDifference.objects.create(
            run=run,
            kind=f.kind,
            subject=f.subject[:300],
            email=f.email,
            order_number=f.order_number,
            field=f.field,
            engine_value=_text(f.engine),
            dotdigital_value=_text(f.dotdigital),
            team_slug=f.team,
        )
        seen.add((f.kind, f.subject, f.field))
        label = f"{f.field} differs" if f.field else diff.get_kind_display()
        record_occurrence(
            workspace=flow.workspace,
            kind=KIND,
            event_key=diff.event_key,
            stage="reconcile",
            message=(
                f"{f.subject}: Syncdesk has {_text(f.engine) or '—'}, "
                f"DotDigital has {_text(f.dotdigital) or '—'}"
            ),
            title=f"Reconciliation: {label} ({flow.name})",
            flow_key=flow.key,
            flow_label=flow.name,
            subject_key=f"reconcile:{f.field or f.kind}",
            subject_label=label,
            detail={"run": run.pk, "difference": diff.pk},
            order_number=f.order_number,
            email=f.email,
            team_slug=f.team,
        )
    gone = [d.event_key for d in previous if (d.kind, d.subject, d.field) not in seen]
    clear_occurrences(flow.workspace, gone)
    run.mismatched = sum(f.kind in (Diff.FIELD, Diff.RECORD) for f in found)
    run.missing = sum(f.kind in (Diff.CONTACT_MISSING, Diff.RECORD_MISSING) for f in found)
    run.state = ReconciliationRun.State.FINISHED
    run.finished_at = timezone.now()
    run.save(
        update_fields=[
            "engine_contacts",
            "dotdigital_contacts",
            "checked",
            "matched",
            "mismatched",
            "missing",
            "state",
            "finished_at",
        ]
    )


def _fail(run: ReconciliationRun, error: str) -> ReconciliationRun:
    ReconciliationRun.objects.filter(pk=run.pk).update(
        state=ReconciliationRun.State.FAILED, error=error, finished_at=timezone.now()
    )
    run.refresh_from_db()
    return run


# -- repair -----------------------------------------------------------------------------------


def enqueue(flow: Flow, spec: OpSpec) -> None:
    """Queue one write through the outbox (coalesced with an open write of the same key)."""
    from monitoring.pipeline.plan import Planned, _write_operations

    assert flow.destination_id is not None
    now = timezone.now()
    planned = Planned(flow.destination_id, flow.workspace_id, spec, SourceEvent.Lane.REALTIME)
    with transaction.atomic():
        _write_operations({(flow.destination_id, spec.key): planned}, now, Context(now=now))


def repair(diff: ReconciliationDifference, actor: User | None) -> bool:
    """Re-send the engine's value for this difference through the outbox. False when it was
    repaired already, or there is nothing to send (no DotDigital connection, subject gone)."""
    flow = diff.run.flow
    if flow.destination_id is None:
        return False
    mappings = list(flow.field_mappings.all())
    specs: list[OpSpec] = []
    if diff.kind in (Diff.CONTACT_MISSING, Diff.FIELD):
        customer = Customer.objects.filter(workspace_id=flow.workspace_id, email=diff.email).first()
        if customer is not None:
            specs.append(contact_spec(customer, mappings, flow.sends_aggregates))
    else:
        order = (
            Order.objects.filter(workspace_id=flow.workspace_id)
            .filter(Q(order_number=diff.order_number) | Q(channel_order_ref=diff.order_number))
            .select_related("customer")
            .first()
        )
        if order is not None:
            if order.customer is not None:  # the contact before the record that refers to it
                specs.append(contact_spec(order.customer, mappings, flow.sends_aggregates))
            specs.append(order_spec(order, order.email, list(order.shipments.all())))
    if not specs:
        return False
    with transaction.atomic():
        claimed = ReconciliationDifference.objects.filter(
            pk=diff.pk, repaired_at__isnull=True
        ).update(repaired_at=timezone.now(), repaired_by=actor)
        if not claimed:
            return False
        for spec in specs:
            enqueue(flow, spec)
    clear_occurrences(flow.workspace, [diff.event_key])
    diff.refresh_from_db()
    return True


def repair_occurrences(occurrences: Sequence[Occurrence]) -> None:
    """The inbox's retry for reconciliation differences: repair each."""
    ids = [
        int(o.event_key.split(":", 1)[1])
        for o in occurrences
        if o.event_key.startswith("reconciliation:") and o.event_key.split(":", 1)[1].isdigit()
    ]
    for diff in ReconciliationDifference.objects.filter(pk__in=ids).select_related("run__flow"):
        repair(diff, None)


# -- opt-out round trip ---------------------------------------------------------------------

WRITE_BACK_BATCH = 200


def queue_write_backs(flow: Flow) -> int:
    """One write-back per opt-out DotDigital holds for this flow's destination and a contact the
    flow knows; returns how many were new."""
    if flow.destination_id is None:
        return 0
    emails = Customer.objects.filter(workspace_id=flow.workspace_id, events__flow=flow).values(
        "email"
    )
    suppressions = Suppression.objects.filter(destination_id=flow.destination_id, email__in=emails)
    rows = [
        OptOutWriteBack(
            workspace_id=flow.workspace_id,
            flow=flow,
            source_id=flow.source_id,
            suppression=s,
            email=s.email,
            reason=s.reason,
            opted_out_at=s.date_removed,
        )
        for s in suppressions
    ]
    before = OptOutWriteBack.objects.filter(flow=flow).count()
    OptOutWriteBack.objects.bulk_create(rows, ignore_conflicts=True)
    return OptOutWriteBack.objects.filter(flow=flow).count() - before


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(60 * 2 ** max(attempts - 1, 0), 6 * 3600))


def write_back_due(flow: Flow, now: datetime | None = None) -> int:
    """Tell the source about each due opt-out; returns how many were written."""
    now = now or timezone.now()
    adapter = get_adapter(flow.source.kind)
    written = 0
    due = OptOutWriteBack.objects.filter(
        flow=flow, state=OptOutWriteBack.State.PENDING, next_attempt_at__lte=now
    ).order_by("opted_out_at")[:WRITE_BACK_BATCH]
    for row in due:
        try:
            if adapter is None:
                raise SourceError("This source kind has no connector.", permanent=True)
            adapter.write_back_opt_out(flow.source, row.email, row.opted_out_at)
        except SourceError as exc:
            _write_back_failed(flow, row, exc, now)
            continue
        OptOutWriteBack.objects.filter(pk=row.pk).update(
            state=OptOutWriteBack.State.WRITTEN,
            written_at=timezone.now(),
            attempts=row.attempts + 1,
            error="",
        )
        clear_occurrences(flow.workspace, [row.event_key])
        written += 1
    return written


def _write_back_failed(flow: Flow, row: OptOutWriteBack, exc: SourceError, now: datetime) -> None:
    attempts = row.attempts + 1
    permanent = bool(getattr(exc, "permanent", False))
    # A transient failure retries with backoff; it becomes an exception when it is permanent or
    # has failed five times (an opt-out not reaching the source is a compliance problem).
    fields: dict[str, Any] = {"attempts": attempts, "error": str(exc)[:2000]}
    if permanent or attempts >= 5:
        fields["state"] = OptOutWriteBack.State.FAILED
    else:
        fields["next_attempt_at"] = now + backoff(attempts)
    OptOutWriteBack.objects.filter(pk=row.pk).update(**fields)
    if "state" in fields:
        record_occurrence(
            workspace=flow.workspace,
            kind="consent_sync_failed",
            event_key=row.event_key,
            stage="write_back",
            message=f"The opt-out of {row.email} ({row.opted_out_at:%Y-%m-%d %H:%M} UTC) could not "
            f"be written to {flow.source.name}: {exc}",
            flow_key=flow.key,
            flow_label=flow.name,
            subject_key=f"optout:{flow.source_id}",
            subject_label=f"Opt-outs to {flow.source.name}",
            email=row.email,
            detail={"write_back": row.pk, "attempts": attempts},
        )


def retry_write_backs(occurrences: Sequence[Occurrence]) -> None:
    """The inbox's retry for `consent_sync_failed` raised here: due again, now."""
    ids = [
        int(o.event_key.split(":", 1)[1])
        for o in occurrences
        if o.event_key.startswith("optout:") and o.event_key.split(":", 1)[1].isdigit()
    ]
    OptOutWriteBack.objects.filter(pk__in=ids).exclude(state=OptOutWriteBack.State.WRITTEN).update(
        state=OptOutWriteBack.State.PENDING, next_attempt_at=timezone.now()
    )
    for flow in Flow.objects.filter(opt_out_writes__pk__in=ids).distinct():
        write_back_due(flow)


def round_trip(flow: Flow) -> tuple[int, int]:
    """Queue the new opt-outs and write the due ones: (queued, written)."""
    return queue_write_backs(flow), write_back_due(flow)


def register_hooks() -> None:
    from exceptions_inbox.kinds import hooks_of
    from exceptions_inbox.kinds import register_hooks as register

    register(KIND, retry=repair_occurrences)
    # consent_sync_failed may also be raised by the delivery side: only take retry if unclaimed.
    if hooks_of("consent_sync_failed").get("retry") is None:
        register("consent_sync_failed", retry=retry_write_backs)
