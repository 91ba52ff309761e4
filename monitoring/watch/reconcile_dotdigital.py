"""Reconciliation against DotDigital, read through the client: the contacts the flow's events
touched (all, or a sample) exist and their key fields (`FIELDS`) hold what the engine's state
says; the flow's orders have their `Orders` record, with the same GrandTotal.

A run compares in steps (`CONTACTS` by customer id, then `ORDERS` by email), `CHUNK` subjects at
a time; each chunk's differences are stored with the run's counts and cursor in one
transaction, under the run's lease, so a run whose worker stopped resumes after its last chunk
and never counts or records a subject twice. A full run lists DotDigital's contacts again when
it resumes in `CONTACTS` (a call per 1,000 contacts); the comparisons already made stand.

Retries (`Reader.call`): a retryable answer (5xx, 429, a timeout, a dropped connection) is tried
again within the shared rate budget: the transport has blocked a 429's tier for every worker,
and the wait is what DotDigital said (`retry_after`) or exponential from 0.5 s to `BACKOFF_CAP`.
A call that fails `MAX_TRIES` times in a row, or a wait that would pass the end of the worker's
time slice, pauses the run (`Paused`): its progress stays, and it continues later where it
stopped. A run has `RUN_DEADLINE` from its start to finish (`reconcile.claim_run`). Only a
connection-level error (`errors.ConnectionProblem`: 401, wrong region, a missing feature) fails
it at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

from django.db import transaction
from django.utils import timezone

from connectors.dotdigital import errors
from connectors.dotdigital.client import DotDigitalClient
from connectors.dotdigital.errors import NotFound
from connectors.dotdigital.types import Contact
from monitoring.models import Customer, FieldMapping, Flow, Order, ReconciliationRun
from monitoring.pipeline.mapping import ORDERS, contact_spec, number
from monitoring.watch.differences import FIELDS, Diff, Found, same, save_found

T = TypeVar("T")
CONTACTS, ORDERS_STEP, SOURCE = "contacts", "orders", "source"
CHUNK = 50  # subjects compared between two saves of the progress
MAX_TRIES = 8  # tries of one call in a row before the run pauses
BACKOFF_CAP = 30.0  # seconds: the longest wait between two tries when DotDigital gave no time
LONGEST_WAIT = 60.0  # seconds: a longer wait (as told by DotDigital) pauses the run instead
PAUSE = 60.0  # seconds a paused run waits, at least, before it continues
LEASE = timedelta(minutes=5)  # renewed at each save and before each wait
RUN_DEADLINE = timedelta(hours=6)


class Paused(Exception):
    """The run stops here and continues later (`resume_in` seconds) where it stopped."""

    def __init__(self, reason: str, resume_in: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.resume_in = resume_in


class LeaseLost(Exception):
    """Another worker has taken the run over (this one outlived its lease): stop, save nothing."""


def backoff(tries: int) -> float:
    """Seconds before try `tries + 1` when DotDigital said nothing: exponential, with jitter."""
    base = min(BACKOFF_CAP, 0.5 * 2.0 ** max(tries - 1, 0))
    return base / 2 + random.uniform(0, base / 2)


class Reader:
    """The run's calls to DotDigital, each retried as the module says, and its saves."""

    def __init__(
        self,
        client: DotDigitalClient,
        run: ReconciliationRun,
        owner: str,
        *,
        until: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.run = run
        self.owner = owner
        self.until = until  # time.monotonic() at which this worker's slice ends
        self.sleep = sleep

    def call(self, fn: Callable[[], T]) -> T:
        tries = 0
        while True:
            try:
                return fn()
            except errors.RetryableError as exc:
                tries += 1
                self.run.retries += 1
                wait = exc.retry_after if exc.retry_after is not None else backoff(tries)
                where = f"{exc.status or type(exc).__name__} on {exc.path}"
                if tries >= MAX_TRIES:
                    raise Paused(
                        f"DotDigital answered {where} to {tries} tries in a row",
                        max(PAUSE, wait),
                    ) from exc
                if wait > LONGEST_WAIT or (
                    self.until is not None and time.monotonic() + wait > self.until
                ):
                    raise Paused(f"DotDigital asked to wait {wait:.0f}s ({where})", wait) from exc
                self.renew()
                self.sleep(wait)

    def renew(self) -> None:
        """Keep the lease while waiting; LeaseLost when another worker has the run."""
        held = ReconciliationRun.objects.filter(
            pk=self.run.pk, lease_owner=self.owner, state=ReconciliationRun.State.RUNNING
        ).update(lease_until=timezone.now() + LEASE)
        if not held:
            raise LeaseLost()

    def save(self, found: Iterable[Found] = (), **progress: Any) -> None:
        """Store these differences with the run's counts and `progress` (phase, cursor, …) as
        one step, while the lease is this worker's."""
        for name, value in progress.items():
            setattr(self.run, name, value)
        run = self.run
        with transaction.atomic():
            held = ReconciliationRun.objects.filter(
                pk=run.pk, lease_owner=self.owner, state=ReconciliationRun.State.RUNNING
            ).update(
                lease_until=timezone.now() + LEASE,
                phase=run.phase,
                cursor=run.cursor,
                total=run.total,
                sample_ids=run.sample_ids,
                engine_contacts=run.engine_contacts,
                dotdigital_contacts=run.dotdigital_contacts,
                checked=run.checked,
                matched=run.matched,
                retries=run.retries,
            )
            if not held:
                raise LeaseLost()
            save_found(run, list(found))

    def slice_over(self) -> bool:
        return self.until is not None and time.monotonic() > self.until


def flow_customers(flow: Flow) -> Any:
    return (
        Customer.objects.filter(workspace_id=flow.workspace_id, events__flow=flow)
        .exclude(email="")
        .distinct()
    )


def flow_orders(flow: Flow) -> Any:
    return Order.objects.filter(workspace_id=flow.workspace_id, events__flow=flow).distinct()


def compared_orders(flow: Flow) -> Any:
    return flow_orders(flow).exclude(email="").filter(grand_total__isnull=False)


def _sample(queryset: Any, model: type[Customer] | type[Order], size: int) -> list[int]:
    # Drawn by id from a subquery: random order and DISTINCT do not mix on PostgreSQL.
    ids = model.objects.filter(pk__in=queryset.values("pk")).order_by("?")
    return sorted(ids.values_list("pk", flat=True)[:size])


def plan(flow: Flow, reader: Reader) -> None:
    """A new run's first step: what it will compare (a sample is drawn once, here)."""
    run = reader.run
    customers, orders = flow_customers(flow), compared_orders(flow)
    run.engine_contacts = customers.count()
    if run.sample:
        run.sample_ids = {
            "customers": _sample(customers, Customer, run.sample),
            "orders": _sample(orders, Order, run.sample),
        }
        run.total = len(run.sample_ids["customers"]) + len(run.sample_ids["orders"])
    else:
        run.total = run.engine_contacts + orders.count()
    reader.save(phase=CONTACTS, cursor="")


def compare(flow: Flow, reader: Reader) -> None:
    """Compare from where the run stopped to the end of its DotDigital steps."""
    if not reader.run.phase:
        plan(flow, reader)
    if reader.run.phase == CONTACTS:
        compare_contacts(flow, reader)
        reader.save(phase=ORDERS_STEP, cursor="")
    if reader.run.phase == ORDERS_STEP:
        compare_orders(flow, reader)
        reader.save(phase=SOURCE, cursor="")


def _next_customers(flow: Flow, run: ReconciliationRun) -> list[Customer]:
    after = int(run.cursor or 0)
    if run.sample:
        ids = [i for i in run.sample_ids.get("customers", []) if i > after][:CHUNK]
        return list(Customer.objects.filter(pk__in=ids).order_by("pk"))
    return list(flow_customers(flow).filter(pk__gt=after).order_by("pk")[:CHUNK])


def list_remote(reader: Reader) -> dict[str, Contact]:
    """Every contact of the account with the compared fields, page by page."""
    remote: dict[str, Contact] = {}
    marker: str | None = None
    while True:
        page = reader.call(
            partial(reader.client.list_contacts, marker=marker, data_fields=[*FIELDS], include=())
        )
        remote.update({c.email.lower(): c for c in page.items if c.email})
        if not page.next_marker:
            return remote
        marker = page.next_marker


def compare_contacts(flow: Flow, reader: Reader) -> None:
    run = reader.run
    # One mapping per DotDigital field, as the outbox sends them.
    mappings = list(
        {m.target.upper(): m for m in flow.field_mappings.filter(enabled=True)}.values()
    )
    remote: dict[str, Contact] | None = None
    if not run.sample:
        remote = list_remote(reader)
        reader.save(dotdigital_contacts=len(remote))
    while customers := _next_customers(flow, run):
        found: list[Found] = []
        matched = 0
        for customer in customers:
            if remote is not None:
                contact = remote.get(customer.email)
            else:
                contact = reader.call(partial(reader.client.get_contact, "email", customer.email))
            matched += check_contact(flow, mappings, customer, contact, found)
        reader.save(
            found,
            checked=run.checked + len(customers),
            matched=run.matched + matched,
            cursor=str(customers[-1].pk),
        )
        if reader.slice_over():
            raise Paused("", 0)


def check_contact(
    flow: Flow,
    mappings: list[FieldMapping],
    customer: Customer,
    contact: Contact | None,
    found: list[Found],
) -> bool:
    """One contact against DotDigital's; its differences go to `found`; True when it matched."""
    if contact is None or not contact.email:
        found.append(Found(Diff.CONTACT_MISSING, customer.email, "marketing", customer.email))
        return False
    fields = contact_spec(customer, mappings, flow.sends_aggregates).payload["fields"]
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
    return ok


def _order_rows(flow: Flow, run: ReconciliationRun) -> Any:
    rows = compared_orders(flow)
    if run.sample:
        rows = Order.objects.filter(pk__in=run.sample_ids.get("orders", []))
    return rows


def compare_orders(flow: Flow, reader: Reader) -> None:
    """Orders: the record and its total (money → finance), a contact's orders at a time."""
    run = reader.run
    while True:
        emails = list(
            _order_rows(flow, run)
            .filter(email__gt=run.cursor)
            .order_by("email")
            .values_list("email", flat=True)
            .distinct()[:CHUNK]
        )
        if not emails:
            return
        found: list[Found] = []
        checked = matched = 0
        for email in emails:
            records = contact_records(reader, email)
            for order in _order_rows(flow, run).filter(email=email).order_by("pk"):
                checked += 1
                matched += check_order(order, records, found)
        reader.save(
            found, checked=run.checked + checked, matched=run.matched + matched, cursor=emails[-1]
        )
        if reader.slice_over():
            raise Paused("", 0)


def check_order(order: Order, records: dict[str, dict[str, Any]], found: list[Found]) -> bool:
    number_key = order.order_number or order.channel_order_ref or f"order-{order.pk}"
    record = records.get(number_key)
    want = number(order.grand_total)
    if record is None:
        found.append(
            Found(Diff.RECORD_MISSING, number_key, "finance", order.email, number_key, "", want)
        )
        return False
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
        return False
    return True


def contact_records(reader: Reader, email: str) -> dict[str, dict[str, Any]]:
    """A contact's `Orders` records by key (none when DotDigital has no such contact)."""
    out: dict[str, dict[str, Any]] = {}
    marker: str | None = None
    while True:
        try:
            page = reader.call(
                partial(
                    reader.client.list_insight_records,
                    ORDERS[0],
                    contact=("email", email),
                    marker=marker,
                )
            )
        except NotFound:
            return out
        out.update({r.key: r.json for r in page.items})
        if not page.next_marker:
            return out
        marker = page.next_marker
