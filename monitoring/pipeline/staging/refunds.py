"""Refunds: `refund.issued`, `return.received` and credit notes (order documents the source marks
as a credit note or return) onto their order, never beyond its total."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from monitoring.models import (
    Flow,
    Order,
    Refund,
    SourceEvent,
)
from monitoring.pipeline.normalise import (
    minor_unit,
    money,
    parse_time,
)
from monitoring.pipeline.staging.batch import Batch, Outcome, State, fail, save_row
from monitoring.pipeline.staging.orders import (
    link_order,
    order_total_figures,
    parent_order,
    save_order,
)


def stage_refund(event: SourceEvent, flow: Flow, batch: Batch) -> None:
    data = event.data
    order = parent_order(event, flow, batch)
    currency = str((data.get("amount") or {}).get("currency") or "")
    refunded_at = parse_time(data.get("refunded_at")) or event.occurred_at
    refund_onto(
        event,
        order,
        str(data["refund_key"]),
        money(data.get("amount")),
        currency,
        refunded_at,
        batch,
    )


def stage_credit_note(event: SourceEvent, flow: Flow, batch: Batch) -> None:
    """A credit note or return the source sends as an order document (`data.document_type`): a
    refund of its grand total (money going back, whichever sign the source gives it) against the
    order it names in `links`, keyed by its own order key. Its parts must add up as an order's."""
    data = event.data
    number = str(data.get("order_number") or "")
    mismatch = order_total_figures(data)
    if mismatch:
        problem, figures = mismatch
        fail(
            event,
            batch,
            "order_total_mismatch",
            f"Credit note {number}: {problem}",
            subject_key="totals",
            subject_label="Totals that differ from their parts",
            order_number=number,
            detail={"totals": data.get("totals"), "figures": figures},
        )
        raise Outcome(State.FAILED, problem, "order_total_mismatch")
    order = parent_order(event, flow, batch)
    grand = money((data.get("totals") or {}).get("grand_total"))
    amount = abs(grand) if grand is not None else None
    currency = str(data.get("currency") or "")
    refunded_at = parse_time(data.get("placed_at")) or event.occurred_at
    key = str(data.get("order_key") or event.entity_key)[:255]
    refund_onto(event, order, key, amount, currency, refunded_at, batch)
    event.reason = (
        f"{number or 'A credit note'} ({data.get('document_type')}): a refund of {amount} "
        f"{currency} against order {order}."
    )


def refund_onto(
    event: SourceEvent,
    order: Order,
    key: str,
    amount: Decimal | None,
    currency: str,
    refunded_at: datetime | None,
    batch: Batch,
) -> None:
    """The refund `key` of `amount` onto its order, in the workspace's currency and within what
    was paid on the order; the order's refunded total recomputed from its refunds."""
    if currency != event.workspace.currency:
        fail(
            event,
            batch,
            "currency_mismatch",
            f"Refund in {currency}, the workspace keeps {event.workspace.currency}.",
            subject_key=f"currency:{currency}",
            subject_label=currency,
            order_number=order.order_number,
        )
        raise Outcome(State.FAILED, "", "currency_mismatch")
    refund = _refund_by_key(event, batch, key)
    if refund is not None and event.source_version < refund.source_version:
        raise Outcome(State.SKIPPED, "Superseded: a newer version of this refund is staged.")
    if refund is None:
        refund = Refund(workspace_id=event.workspace_id, refund_key=key)
    _refund_within_total(event, order, refund, amount or Decimal(0), currency, batch)
    refund.order = order
    refund.amount = amount or Decimal(0)
    refund.currency = currency
    refund.refunded_at = refunded_at or event.occurred_at
    refund.source_version = event.source_version
    if batch.cache is not None:
        batch.cache.refunds[(event.workspace_id, key)] = refund
    save_row(batch, refund)
    order.refunded_total = sum((r.amount for r in _refunds_of(batch, order)), Decimal(0))
    save_order(batch, order)
    link_order(event, order, batch)


def _refund_by_key(event: SourceEvent, batch: Batch, key: str) -> Refund | None:
    cache, ws = batch.cache, event.workspace_id
    if cache is not None and (ws, key) in cache.refunds:
        return cache.refunds[(ws, key)]
    refund = Refund.objects.select_for_update().filter(workspace_id=ws, refund_key=key).first()
    if cache is not None:
        cache.refunds[(ws, key)] = refund
    return refund


def _refunds_of(batch: Batch, order: Order) -> list[Refund]:
    """Every refund of the order (the batch's own instances on the fast path)."""
    cache = batch.cache
    if cache is None:
        return list(order.refunds.all()) if order.pk is not None else []
    if order.pk not in cache.refunds_of_orders:
        for refund in Refund.objects.select_for_update().filter(order_id=order.pk):
            key = (refund.workspace_id, refund.refund_key)
            if cache.refunds.get(key) is None:
                cache.refunds[key] = refund
        cache.refunds_of_orders.add(order.pk)
    return [r for r in cache.refunds.values() if r is not None and r.order_id == order.pk]


def _refund_within_total(
    event: SourceEvent, order: Order, refund: Refund, amount: Decimal, currency: str, batch: Batch
) -> None:
    """refund_mismatch: the order's refunds, this one included (a newer version of a refund
    replacing its older amount), may not exceed what was paid on it — its grand total, in
    Decimal and the same currency. Checked once the order's money is known; a failing refund
    changes nothing in the state (its writes are undone), so LTV never goes below what was kept."""
    if order.grand_total is None or not order.has_body or order.currency != currency:
        return
    others = sum(
        (r.amount for r in _refunds_of(batch, order) if r.refund_key != refund.refund_key),
        Decimal(0),
    )
    refunded = others + amount
    if refunded <= order.grand_total:
        return
    number = order.order_number or order.channel_order_ref
    unit = minor_unit(currency)

    def shown(value: Decimal) -> Decimal:  # 30.0100 as 30.01, never rounding a real digit away
        return value.quantize(unit) if value == value.quantize(unit) else value

    message = (
        f"Refunds of {shown(refunded)} {currency} exceed order {number}'s total of "
        f"{shown(order.grand_total)} {currency}."
    )
    fail(
        event,
        batch,
        "refund_mismatch",
        message,
        subject_key="refunds",
        subject_label="Refunds above the order's total",
        order_number=number,
        detail={
            "refund_key": refund.refund_key,
            "amount": str(shown(amount)),
            "refunded": str(shown(refunded)),
            "grand_total": str(shown(order.grand_total)),
            "currency": currency,
        },
    )
    raise Outcome(State.FAILED, message, "refund_mismatch")


def stage_return(event: SourceEvent, flow: Flow, batch: Batch) -> None:
    order = parent_order(event, flow, batch)
    link_order(event, order, batch)
