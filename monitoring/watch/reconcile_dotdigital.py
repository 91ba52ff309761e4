"""Reconciliation against DotDigital, read through the client: the contacts the flow's events
touched (all, or a sample) exist and their key fields (`FIELDS`) hold what the engine's state
says; the flow's orders have their `Orders` record, with the same GrandTotal.
"""

from __future__ import annotations

from typing import Any

from connectors.dotdigital.client import DotDigitalClient
from connectors.dotdigital.errors import NotFound
from connectors.dotdigital.types import Contact
from monitoring.models import Customer, Flow, Order, ReconciliationRun
from monitoring.pipeline.mapping import ORDERS, contact_spec, number
from monitoring.watch.differences import FIELDS, Diff, Found, same


def flow_customers(flow: Flow) -> Any:
    return (
        Customer.objects.filter(workspace_id=flow.workspace_id, events__flow=flow)
        .exclude(email="")
        .distinct()
    )


def flow_orders(flow: Flow) -> Any:
    return Order.objects.filter(workspace_id=flow.workspace_id, events__flow=flow).distinct()


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
