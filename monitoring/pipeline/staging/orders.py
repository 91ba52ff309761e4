"""Orders: `order.created`, `order.updated` and `order.status_changed` become the workspace's
merged order (found by the flow's join key), checked (currency, negative figures, totals, SKUs
against the catalogue) on the way; `parent_order` finds the order a child event names (by its
source's order key first, `order_keys.py`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from monitoring.models import (
    Customer,
    Flow,
    Order,
    Product,
    Shipment,
    SkuAlias,
    SourceEvent,
)
from monitoring.pipeline.normalise import (
    clean_sku,
    minor_unit,
    money,
    parse_time,
    quantity,
    sku_match_key,
)
from monitoring.pipeline.staging.batch import (
    Batch,
    Hold,
    Outcome,
    State,
    fail,
    own_order_key,
    parent_keys,
)
from monitoring.pipeline.staging.customers import no_email, resolve_customer
from monitoring.pipeline.staging.holds import hold_orphan
from monitoring.pipeline.staging.order_keys import give_keys, order_by_key
from monitoring.pipeline.transforms import clean_sku_by_rules


def find_order(
    event: SourceEvent, flow: Flow, *, lock: bool = True, batch: Batch | None = None
) -> Order | None:
    if not event.order_ref:
        return None
    cache = batch.cache if batch is not None else None
    if cache is not None:
        known, order = cache.find_order(event.workspace_id, flow.join_key, event.order_ref)
        if known:
            return order
    qs = Order.objects.filter(workspace_id=event.workspace_id, **{flow.join_key: event.order_ref})
    if lock:
        qs = qs.select_for_update()
    order = qs.order_by("pk").first()
    if cache is not None and lock:
        if order is not None:
            order = cache.keep_order(order)
        cache.order_refs.add((event.workspace_id, flow.join_key, event.order_ref))
    return order


def _keep_order(batch: Batch, order: Order) -> None:
    """A new order joins the batch's cache (its join values are read from it on each lookup)."""
    if batch.cache is not None and order.pk is not None:
        batch.cache.keep_order(order)


def save_order(batch: Batch, order: Order) -> None:
    """order.save(), or for a new order on the fast path on PostgreSQL: an id now and the row
    with the batch's other new orders at its end."""
    cache = batch.cache
    if cache is not None and cache.defer_inserts and (order.pk is None or cache.is_pending(order)):
        if order.pk is None:
            cache.add_pending(order)
            cache.refunds_of_orders.add(order.pk)  # a new order has no refunds yet
        batch.wrote = True  # a row the batch will insert: only a rollback undoes it
        _keep_order(batch, order)
        return
    if cache is not None and order.pk is not None:
        batch.wrote = True
        cache.write(order)  # updated with the batch's other changed rows at its end
        _keep_order(batch, order)
        return
    new = order.pk is None
    order.save()
    if cache is not None and new:
        cache.refunds_of_orders.add(order.pk)
    _keep_order(batch, order)


def order_of(batch: Batch, shipment: Shipment) -> Order:
    """The shipment's order: the batch's own instance when it has one (it may be new)."""
    if batch.cache is not None and shipment.order_id in batch.cache.orders:
        return batch.cache.orders[shipment.order_id]
    return shipment.order


def order_total_problem(data: dict[str, Any]) -> str | None:
    """design.md's rule: Σ line totals (which hold line discounts) + shipping − order-level
    discounts (+ tax when prices exclude tax) = grand total, within one minor unit per line."""
    found = order_total_figures(data)
    return found[0] if found else None


def order_total_figures(data: dict[str, Any]) -> tuple[str, dict[str, str]] | None:
    """`order_total_problem`'s words and its figures (total, sum of parts, difference and
    currency, as exact decimal strings) for the inbox to show and add up; None when it adds up."""
    totals = data.get("totals") or {}
    currency = str(data.get("currency") or "")
    grand = money(totals.get("grand_total"))
    if grand is None:
        return "The order has no grand total.", {"currency": currency}
    lines = data.get("lines") or []
    line_sum = Decimal(0)
    line_discounts = Decimal(0)
    for line in lines:
        total = money(line.get("line_total"))
        if total is None:
            subtotal = money(line.get("line_subtotal"))
            if subtotal is None:
                unit = money(line.get("unit_price")) or Decimal(0)
                subtotal = unit * Decimal(str(line.get("quantity") or 0))
            total = subtotal - (money(line.get("line_discount")) or Decimal(0))
        line_sum += total
        line_discounts += money(line.get("line_discount")) or Decimal(0)
    shipping = money(totals.get("shipping"))
    if shipping is None:
        shipping = money((data.get("shipping") or {}).get("amount")) or Decimal(0)
    discounts = data.get("discounts")
    if isinstance(discounts, list):
        order_discount = sum(
            (money(d.get("amount")) or Decimal(0) for d in discounts if d.get("scope") != "line"),
            Decimal(0),
        )
    else:
        order_discount = max(
            (money(totals.get("discount")) or Decimal(0)) - line_discounts, Decimal(0)
        )
    tax_inclusive = data.get("tax_inclusive", totals.get("tax_inclusive", True))
    expected = line_sum + shipping - order_discount
    if tax_inclusive is False:
        tax = money(totals.get("tax"))
        if tax is None:
            tax = sum((money(line.get("line_tax")) or Decimal(0) for line in lines), Decimal(0)) + (
                money((data.get("shipping") or {}).get("tax")) or Decimal(0)
            )
        expected += tax
    tolerance = minor_unit(currency) * max(1, len(lines))
    if abs(expected - grand) > tolerance:
        figures = {
            "currency": currency,
            "total": str(grand),
            "parts": str(expected),
            "difference": str(grand - expected),
        }
        return (
            f"Grand total {grand} {currency} but its parts add up to {expected} {currency}.",
            figures,
        )
    return None


def _sku_gaps(event: SourceEvent, flow: Flow, batch: Batch, lines: list[dict[str, Any]]) -> None:
    """After cleaning and aliases, SKUs not in the catalogue (only once it is loaded)."""
    if not catalogue_loaded(event.workspace_id, batch):
        return
    aliases = _aliases(event.workspace_id, batch)
    wanted: dict[str, str] = {}
    for line in lines:
        if line.get("is_non_stock") or not line.get("sku"):
            continue
        cleaned = clean_sku_by_rules(clean_sku(line.get("sku")), flow.sku_cleaning)
        key = sku_match_key(cleaned, flow.sku_case_sensitive)
        target = aliases.get((flow.pk, key)) or aliases.get((None, key))
        wanted[sku_match_key(target, flow.sku_case_sensitive) if target else key] = cleaned
    if not wanted:
        return
    field_name = "sku" if flow.sku_case_sensitive else "sku_key"
    known = set(
        Product.objects.filter(
            workspace_id=event.workspace_id, **{f"{field_name}__in": list(wanted)}
        ).values_list(field_name, flat=True)
    )
    if batch.cache is not None:  # the batch's own products, not inserted yet
        known |= {
            getattr(product, field_name)
            for (ws, _), product in batch.cache.products.items()
            if ws == event.workspace_id and product is not None
        }
    for key, cleaned in wanted.items():
        if key not in known:
            fail(
                event,
                batch,
                "sku_mapping_gap",
                f"SKU {cleaned!r} is not in the catalogue.",
                # One group per flow: each unknown SKU is an occurrence's, with its own alias fix
                # on the group's page (a legacy code list is one cause, fixed in one place).
                subject_key="unknown_sku",
                subject_label="SKUs the catalogue does not know",
                sku=cleaned,
                order_number=str(event.data.get("order_number") or event.order_ref),
            )


def catalogue_loaded(workspace_id: int, batch: Batch) -> bool:
    """Loaded once a flow mastering products marked its first full snapshot, and every product
    event it received by then is staged."""
    if workspace_id not in batch.catalogue:
        masters = list(
            Flow.objects.filter(
                workspace_id=workspace_id, masters_products=True, catalogue_loaded_at__isnull=False
            ).values_list("pk", "catalogue_loaded_at")
        )
        loaded = any(
            not SourceEvent.objects.filter(
                flow_id=pk,
                event_type="product.updated",
                state=State.RECEIVED,
                received_at__lte=at,
            )
            .exclude(pk__in=batch.products)
            .exists()
            for pk, at in masters
        )
        batch.catalogue[workspace_id] = loaded
    return batch.catalogue[workspace_id]


def _aliases(workspace_id: int, batch: Batch) -> dict[tuple[int | None, str], str]:
    if workspace_id not in batch.aliases:
        batch.aliases[workspace_id] = {
            (flow_id, alias_key): sku
            for flow_id, alias_key, sku in SkuAlias.objects.filter(
                workspace_id=workspace_id
            ).values_list("flow_id", "alias_key", "sku")
        }
    return batch.aliases[workspace_id]


def stage_order(event: SourceEvent, flow: Flow, batch: Batch) -> None:
    data = event.data
    number = str(data.get("order_number") or "")
    carries_money = data.get("carries_money") is not False
    if not carries_money:
        held = find_order(event, flow, batch=batch)
        if held is not None and held.has_body and held.carries_money:
            _join_copy(event, held, batch)
            return
    is_guest = _check_order(event, flow, batch, number)
    order = find_order(event, flow, batch=batch)
    if (
        order is not None
        and order.revision
        and event.source_version < order.revision
        and (order.carries_money or not carries_money)  # money replaces a copy, whatever its age
    ):
        raise Outcome(State.SKIPPED, "Superseded: a newer version of this order is staged.")
    customer = resolve_customer(event, batch)
    if order is None:
        order = Order(workspace_id=event.workspace_id)
    previous_customer = order.customer_id
    lines = [
        {**line, "sku": clean_sku(line.get("sku")), "sku_raw": line.get("sku_raw", line.get("sku"))}
        for line in data.get("lines") or []
    ]
    _fill_order(order, event, customer, number=number, is_guest=is_guest, lines=lines)
    if order.status_version is None or event.source_version >= order.status_version:
        _set_status(order, data.get("status") or {})
        order.status_version = event.source_version
    save_order(batch, order)
    give_keys(event, order, batch, [own_order_key(event)])
    if previous_customer and previous_customer != order.customer_id:
        batch.customers.add(previous_customer)
    event.order = order
    event.customer = order.customer
    batch.released_refs.setdefault(event.workspace_id, set()).update(
        {order.order_number, order.channel_order_ref}
    )
    if customer is None or not customer.email:
        no_email(event, batch, number)
    _sku_gaps(event, flow, batch, lines)


def _check_order(event: SourceEvent, flow: Flow, batch: Batch, number: str) -> bool:
    """Fail the order on its currency, its totals or the flow's guest policy (raising Outcome);
    returns whether it is a guest order."""
    data = event.data
    workspace = event.workspace
    identity = event.envelope.get("identity") or {}
    currency = str(data.get("currency") or "")
    if currency != workspace.currency:
        fail(
            event,
            batch,
            "currency_mismatch",
            f"Order {number} is in {currency}, the workspace keeps {workspace.currency}.",
            subject_key=f"currency:{currency}",
            subject_label=currency,
            order_number=number,
        )
        raise Outcome(State.FAILED, "", "currency_mismatch")
    _check_figures(event, batch, number)
    mismatch = order_total_figures(data)
    if mismatch:
        problem, figures = mismatch
        fail(
            event,
            batch,
            "order_total_mismatch",
            problem,
            # One group per flow: finance reads every order's figures on it.
            subject_key="totals",
            subject_label="Totals that differ from their parts",
            order_number=number,
            detail={"totals": data.get("totals"), "figures": figures},
        )
        raise Outcome(State.FAILED, problem, "order_total_mismatch")
    is_guest = bool(identity.get("is_guest", data.get("is_guest", False)))
    if is_guest and flow.guest_policy == Flow.GuestPolicy.EXCLUDE:
        fail(
            event,
            batch,
            "guest_policy",
            f"Guest order {number} excluded by the flow's guest policy.",
            subject_key="guest",
            subject_label="Guest orders",
            order_number=number,
        )
        raise Outcome(State.FAILED, "", "guest_policy")
    return is_guest


def negative_figures(data: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The negative figures of an order document: its grand total or subtotal below zero, and
    each line of a negative quantity (with its price and total), as words and as detail."""
    totals = data.get("totals") or {}
    currency = str(data.get("currency") or "")
    words: list[str] = []
    lines: list[dict[str, str]] = []
    for index, line in enumerate(data.get("lines") or [], start=1):
        count = quantity(line.get("quantity"))
        if count is None or count >= 0:
            continue
        label = str(line.get("line_key") or index)
        unit, total = money(line.get("unit_price")), money(line.get("line_total"))
        figures = f"{count}" + (f" × {unit} {currency}" if unit is not None else "")
        if total is not None:
            figures += f" = {total} {currency}"
        words.append(f"line {label} ({line.get('sku') or 'no SKU'}) {figures}")
        lines.append(
            {
                "line_key": label,
                "sku": str(line.get("sku") or ""),
                "quantity": str(count),
                "unit_price": "" if unit is None else str(unit),
                "line_total": "" if total is None else str(total),
            }
        )
    detail: dict[str, Any] = {"currency": currency, "lines": lines}
    for name in ("subtotal", "grand_total"):
        amount = money(totals.get(name))
        detail[name] = "" if amount is None else str(amount)
        if amount is not None and amount < 0:
            words.append(f"{name.replace('_', ' ')} {amount} {currency}")
    return words, detail


def _check_figures(event: SourceEvent, batch: Batch, number: str) -> None:
    """Negative money on an order is finance's to look at: a source sends money going back as a
    refund, or as an order document marked a credit note or return (`data.document_type`). A
    zero-value order (a free replacement) is an order."""
    words, detail = negative_figures(event.data)
    if not words:
        return
    message = (
        f"Order {number} has negative figures: {'; '.join(words)}. An order takes money in; "
        "money going back comes as a refund, or as a document marked a credit note or return."
    )
    fail(
        event,
        batch,
        "negative_order",
        message,
        subject_key="negative",
        subject_label="Negative figures",
        order_number=number,
        detail=detail,
    )
    raise Outcome(State.FAILED, message, "negative_order")


def _fill_order(
    order: Order,
    event: SourceEvent,
    customer: Customer | None,
    *,
    number: str,
    is_guest: bool,
    lines: list[dict[str, Any]],
) -> None:
    """The order as the event has it: references, customer, money and lines."""
    data = event.data
    totals = data.get("totals") or {}
    carries_money = data.get("carries_money") is not False
    currency = str(data.get("currency") or "")
    links = event.envelope.get("links") or {}
    order.order_number = number or order.order_number
    order.channel_order_ref = str(
        data.get("channel_order_ref") or links.get("channel_order_ref") or order.channel_order_ref
    )
    order.source_keys = sorted({*order.source_keys, str(data.get("order_key"))})
    order.customer = customer or order.customer
    order.email = customer.email if customer else order.email
    order.is_guest = is_guest
    order.has_body = True
    order.carries_money = carries_money
    order.revision = event.source_version
    order.placed_at = parse_time(data.get("placed_at"))
    order.currency = currency
    order.tax_inclusive = data.get("tax_inclusive", totals.get("tax_inclusive", True)) is not False
    order.lines = lines
    order.subtotal = money(totals.get("subtotal"))
    order.discount = money(totals.get("discount"))
    order.shipping = money(totals.get("shipping"))
    order.tax = money(totals.get("tax"))
    order.grand_total = money(totals.get("grand_total"))


def _join_copy(event: SourceEvent, order: Order, batch: Batch) -> None:
    """A warehouse's copy of an order whose money-carrying body (the ERP's) is held: joined to it
    (its key, and the channel reference if the order has none) without touching the ERP's number,
    lines, money or status, so one order stays one record (sources.md §12: the WMS carries no
    money). Status changes still come through order.status_changed and shipments."""
    data = event.data
    links = event.envelope.get("links") or {}
    order.source_keys = sorted({*order.source_keys, str(data.get("order_key"))})
    order.channel_order_ref = order.channel_order_ref or str(
        data.get("channel_order_ref") or links.get("channel_order_ref") or ""
    )
    save_order(batch, order)
    give_keys(event, order, batch, [own_order_key(event)])
    event.order = order
    event.customer = order.customer
    event.reason = "A warehouse copy of an order held with the ERP's money: joined to it."
    batch.released_refs.setdefault(event.workspace_id, set()).update(
        {order.order_number, order.channel_order_ref}
    )


def _set_status(order: Order, status: dict[str, Any]) -> None:
    if status.get("lifecycle"):
        order.lifecycle = status["lifecycle"]
    if status.get("fulfilment"):
        order.fulfilment = status["fulfilment"]
    if status.get("financial") and status["financial"] != "unknown":
        order.financial = status["financial"]


def parent_order(event: SourceEvent, flow: Flow, batch: Batch) -> Order:
    """The order a shipment, refund, return, status change or credit note names: by an order key
    of its own source first, else by the flow's join key; held (or, where the flow does not hold
    orphans, started) while there is none."""
    order = order_by_key(event, batch) or find_order(event, flow, batch=batch)
    if order is not None:
        return order
    keys = parent_keys(event)
    if flow.hold_orphans or not event.order_ref:
        hold_orphan(event, flow, batch, waiting_for(event, flow, keys))
    # No hold: the order starts here, and the flow carrying money fills it in when it comes.
    join = {flow.join_key: event.order_ref}
    order = Order(
        workspace_id=event.workspace_id,
        source_keys=[str(event.data.get("order_key"))],
        **join,
    )
    save_order(batch, order)
    give_keys(event, order, batch, keys)
    return order


def waiting_for(event: SourceEvent, flow: Flow, keys: list[str]) -> str:
    """What an orphan waits for, each way it names its order: 'order SO-1 (order number) or
    order key erp:order:1 of erp'."""
    named = []
    if event.order_ref:
        named.append(f"{event.order_ref} ({flow.get_join_key_display().lower()})")
    named += [f"key {key} of {event.source_system}" for key in keys]
    return "order " + (" or ".join(named) if named else "(the event names none)")


def stage_status(event: SourceEvent, flow: Flow, batch: Batch) -> None:
    order = parent_order(event, flow, batch)
    if order.status_version and event.source_version < order.status_version:
        raise Outcome(State.SKIPPED, "Superseded: a newer status of this order is staged.")
    _set_status(order, event.data.get("to") or {})
    order.status_version = event.source_version
    save_order(batch, order)
    link_order(event, order, batch)


def link_order(event: SourceEvent, order: Order, batch: Batch) -> None:
    event.order = order
    event.customer_id = order.customer_id
    event.hold = Hold.NONE
    if order.customer_id:
        batch.customers.add(order.customer_id)
