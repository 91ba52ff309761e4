"""Identities: `customer.upserted` and `consent.changed`, and the customer every order names,
resolved by the source's customer id first, then by email (one identity per person per workspace).
"""

from __future__ import annotations

from typing import Any

from monitoring.models import (
    Customer,
    CustomerKey,
    Flow,
    SourceEvent,
)
from monitoring.pipeline.normalise import normalise_email
from monitoring.pipeline.staging.batch import Batch, Outcome, State, fail

_CUSTOMER_FIELDS = (
    "email",
    "email_raw",
    "previous_emails",
    "phone",
    "first_name",
    "last_name",
    "is_guest",
    "source_version",
)


def _customer_fields(customer: Customer) -> tuple[Any, ...]:
    return tuple(getattr(customer, name) for name in _CUSTOMER_FIELDS)


def save_customer(
    customer: Customer, before: tuple[Any, ...] | None, batch: Batch | None = None
) -> None:
    """Write what staging changed on a customer it read (`before`: the fields as read): nothing
    when nothing changed, and never the fields other parts own (the DotDigital contact id,
    which delivery sets, and the aggregates, which recompute_aggregates sets)."""
    if batch is not None and batch.cache is not None and batch.cache.is_pending(customer):
        batch.wrote = True
        return  # inserted whole at the end of the batch
    if before is None:
        customer.save()
        return
    changed = [
        name
        for name, old, new in zip(_CUSTOMER_FIELDS, before, _customer_fields(customer), strict=True)
        if old != new
    ]
    if changed:
        customer.save(update_fields=changed)


def _customer_by_source_id(
    batch: Batch, workspace_id: int, system: str, source_id: str
) -> Customer | None:
    cache = batch.cache
    if cache is not None and (workspace_id, system, source_id) in cache.by_source_id:
        return cache.customer(cache.by_source_id[(workspace_id, system, source_id)])
    key = (
        CustomerKey.objects.select_related("customer")
        .filter(workspace_id=workspace_id, source_system=system, source_customer_id=source_id)
        .first()
    )
    if cache is not None:
        customer = cache.add_customer(key.customer) if key else None
        cache.by_source_id[(workspace_id, system, source_id)] = customer.pk if customer else None
        return customer
    return key.customer if key else None


def _customer_by_email(batch: Batch, workspace_id: int, email: str) -> Customer | None:
    cache = batch.cache
    if cache is not None and (workspace_id, email) in cache.by_email:
        return cache.customer(cache.by_email[(workspace_id, email)])
    customer = Customer.objects.filter(workspace_id=workspace_id, email=email).first()
    if cache is not None:
        if customer is not None:
            return cache.add_customer(customer)
        cache.by_email[(workspace_id, email)] = None
    return customer


def _take_email(
    customer: Customer, batch: Batch, email: str, raw: str, *, authoritative: bool
) -> None:
    """A known customer named with another email takes it when it has none, or when the event
    is authoritative, keeping the old one; never an email another customer holds."""
    if _customer_by_email(batch, customer.workspace_id, email) is not None:
        return
    if not customer.email:
        customer.email, customer.email_raw = email, raw[:300]
    elif authoritative:
        customer.previous_emails = [*customer.previous_emails, customer.email]
        customer.email, customer.email_raw = email, raw[:300]


def resolve_customer(
    event: SourceEvent, batch: Batch, *, authoritative: bool = False
) -> Customer | None:
    """The identity an event names: by the source's customer id, else by normalised email.
    A customer.upserted (authoritative) with a new email for a known customer moves that
    customer to the new email, so the DotDigital contact stays the same."""
    envelope = event.envelope
    identity = envelope.get("identity") or {}
    data = event.data
    raw = identity.get("email_raw") or identity.get("email") or ""
    email = normalise_email(identity.get("email") or identity.get("email_raw"))
    source_id = identity.get("source_customer_id") or (
        data.get("customer_key") if event.event_type == "customer.upserted" else None
    )
    is_guest = bool(identity.get("is_guest", data.get("is_guest", False)))
    workspace_id = event.workspace_id
    customer: Customer | None = None
    if source_id:
        customer = _customer_by_source_id(batch, workspace_id, event.source_system, str(source_id))
    if customer is None and email:
        customer = _customer_by_email(batch, workspace_id, email)
    before: tuple[Any, ...] | None = None
    if customer is None:
        if not email and not source_id:
            return None
        customer = Customer(
            workspace_id=workspace_id,
            email=email,
            email_raw=str(raw)[:300],
            phone=str(identity.get("phone_e164") or "")[:40],
            is_guest=is_guest,
        )
        if batch.cache is not None and batch.cache.defer_inserts:
            batch.cache.add_pending(customer)
            batch.wrote = True  # a row the batch will insert: only a rollback undoes it
        else:
            customer.save(force_insert=True)
        before = _customer_fields(customer)
    else:
        before = _customer_fields(customer)
        if email and customer.email != email:
            _take_email(customer, batch, email, str(raw), authoritative=authoritative)
    if not is_guest and customer.is_guest:
        customer.is_guest = False
    old_email = before[0]
    save_customer(customer, before, batch)
    if batch.cache is not None:
        if old_email and old_email != customer.email:
            batch.cache.by_email[(workspace_id, old_email)] = None
        batch.cache.add_customer(customer)
    if source_id:
        cache = batch.cache
        known = (workspace_id, event.source_system, str(source_id))
        if cache is not None and cache.defer_inserts and cache.by_source_id.get(known) is None:
            # Inserted with the batch's new customers at its end (checked there: a key another
            # worker took meanwhile sends the batch to the safe path).
            cache.new_keys[known] = customer
            cache.by_source_id[known] = customer.pk
            batch.wrote = True
        elif cache is None or cache.by_source_id.get(known) is None:
            key, _ = CustomerKey.objects.get_or_create(
                workspace_id=workspace_id,
                source_system=event.source_system,
                source_customer_id=str(source_id),
                defaults={"customer": customer},
            )
            if cache is not None:
                cache.by_source_id[known] = key.customer_id
    batch.customers.add(customer.pk)
    return customer


def no_email(event: SourceEvent, batch: Batch, order_number: str = "") -> None:
    identity = event.envelope.get("identity") or {}
    fail(
        event,
        batch,
        "contact_without_email",
        "No email: DotDigital cannot hold a contact for it.",
        # One group per flow: the cause (records arriving without an email) is fixed once, in
        # the source; each occurrence names its order or customer.
        subject_key="missing:email",
        subject_label="No email",
        order_number=order_number,
        detail={"identity": identity},
    )


def stage_customer(event: SourceEvent, flow: Flow, batch: Batch) -> None:
    identity = event.envelope.get("identity") or {}
    if not normalise_email(identity.get("email") or identity.get("email_raw")):
        existing = resolve_customer(event, batch)
        if existing is None or not existing.email:
            no_email(event, batch)
            if existing is None:
                raise Outcome(State.FAILED, "No email.", "contact_without_email")
    customer = resolve_customer(event, batch, authoritative=True)
    assert customer is not None
    if customer.source_version and event.source_version < customer.source_version:
        raise Outcome(State.SKIPPED, "Superseded: a newer version of this customer is staged.")
    data = event.data
    before = _customer_fields(customer)
    customer.first_name = str(data.get("first_name") or customer.first_name)[:120]
    customer.last_name = str(data.get("last_name") or customer.last_name)[:120]
    customer.source_version = event.source_version
    save_customer(customer, before, batch)
    event.customer = customer


def stage_consent(event: SourceEvent, flow: Flow, batch: Batch) -> None:
    customer = resolve_customer(event, batch)
    if customer is None or not customer.email:
        no_email(event, batch)
        raise Outcome(State.FAILED, "No email.", "contact_without_email")
    event.customer = customer
