"""Brightpearl's orders, goods-out notes and contacts → canonical events (pure functions, no
I/O); its products and their stock are mapped in products.py.

Brightpearl (the shared reference `reference/sources.md` §3) is the ERP: it holds the money (4
decimal places, as strings), the customers (contacts, with the newsletter flag) and the stock. Its
webhooks name ids only, so every event here is made from a record fetched *now*: source event ids
are derived from the record's own version (`updatedOn`, a goods-out note's `shippedOn`, the
notification's `raised-on`), so the webhook path and the reconciling poller give the same ids.

Times: Brightpearl writes offsets (`-06:00` in the recorded payloads, despite "all API datetimes
are UTC"); they are converted to UTC and kept exact.

Order statuses are named per account: `order_status_map` (status id → lifecycle) says what each
means for this tenant. An unmapped status changes nothing and says so (`data.signal`). The fixed
codes (shipping, payment status) map the fulfilment and financial dimensions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from connectors.sources.values import (
    clean,
    decimal,
    normalise_email,
    object_at,
    parse_iso,
    rfc3339,
    text_or_none,
    whole_or_text,
)

SYSTEM = "brightpearl"
SCHEMA = "sync.event/v1"
SCALE = Decimal("0.0001")  # Brightpearl's money scale

Event = dict[str, Any]

LIFECYCLES = ("open", "on_hold", "cancelled", "closed")
#: shippingStatusCode → fulfilment [inferred from the codes in the recorded order: ASS]
SHIPPING_STATUS = {
    "ASS": "dispatched",  # all shipped
    "PSS": "partially_dispatched",  # part shipped
    "NSS": "unfulfilled",  # none shipped
}
#: orderPaymentStatus → financial
PAYMENT_STATUS = {
    "PAID": "paid",
    "UNPAID": "pending",
    "PARTIALLY_PAID": "pending",
    "NOT_APPLICABLE": "unknown",
}


@dataclass
class Context:
    account: str
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: orderStatusId (string) → lifecycle, per tenant
    status_map: Mapping[str, str] = field(default_factory=dict)

    def key(self, kind: str, value: Any) -> str:
        return f"{SYSTEM}:{self.account}:{kind}:{value}"


class MappingError(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


# -- values -------------------------------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    """A Brightpearl time (ISO 8601 with an offset); a time without one is UTC (the docs' word)."""
    parsed = parse_iso(value)
    if parsed is None:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def amount(value: Any) -> Decimal | None:
    if isinstance(value, Mapping):
        value = value.get("value")
    return decimal(value, finite=False)


def money(value: Any, currency: str) -> dict[str, str] | None:
    """A Brightpearl amount ("9.0909", {"value": "10.0000"}) at Brightpearl's 4 decimal places."""
    number = amount(value)
    if number is None:
        return None
    return {"amount": f"{number.quantize(SCALE):f}", "currency": currency}


def quantity(value: Any) -> int | str:
    """`{"magnitude": "1.0000"}` or a number: an int when whole, else a decimal string."""
    if isinstance(value, Mapping):
        value = value.get("magnitude")
    number = decimal(value, finite=False)
    if number is None:
        raise MappingError("quantity", f"not a number: {value!r}")
    return whole_or_text(number)


def phone_e164(raw: Any) -> str | None:
    """Only a number already written in international form (Brightpearl stores what was typed)."""
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    digits = "".join(c for c in text if c.isdigit())
    if text.startswith("+") and 8 <= len(digits) <= 15:
        return f"+{digits}"
    return None


def expand_id_set(id_set: Any, limit: int = 5000) -> list[int]:
    """Brightpearl's ID set ("1-5,99", "12447605", 7) as a sorted list of ids."""
    ids: set[int] = set()
    for part in str(id_set).replace(" ", "").split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise MappingError("id", f"not an ID set: {id_set!r}")
        start, end = int(low), int(high or low)
        if end < start or end - start >= limit:
            raise MappingError("id", f"ID range {part} is reversed or too large")
        ids.update(range(start, end + 1))
        if len(ids) > limit:
            raise MappingError("id", f"more than {limit} ids")
    return sorted(ids)


def compress_ids(ids: Iterable[int]) -> str:
    """A list of ids as Brightpearl's ID-set syntax ("1-3,7")."""
    ordered = sorted(set(ids))
    parts: list[str] = []
    start = prev = None
    for value in ordered:
        if start is None:
            start = prev = value
        elif prev is not None and value == prev + 1:
            prev = value
        else:
            parts.append(f"{start}-{prev}" if start != prev else str(start))
            start = prev = value
    if start is not None:
        parts.append(f"{start}-{prev}" if start != prev else str(start))
    return ",".join(parts)


# -- envelope -----------------------------------------------------------------------------------


def envelope(
    ctx: Context,
    event_type: str,
    source_event_id: str,
    occurred: datetime | None,
    entity: dict[str, Any],
    data: dict[str, Any],
    *,
    links: dict[str, Any] | None = None,
    identity: dict[str, Any] | None = None,
    updated: datetime | None = None,
) -> Event:
    event: Event = {
        "schema": SCHEMA,
        "event_type": event_type,
        "source": {"system": SYSTEM, "account": ctx.account, "channel": None, "via": None},
        "source_event_id": source_event_id,
        "source_event_id_kind": "derived",
        "occurred_at": rfc3339(occurred or ctx.received_at),
        "occurred_at_quality": "exact" if occurred else "received_time",
        "received_at": rfc3339(ctx.received_at),
        "entity": entity,
        "data": data,
    }
    if updated is not None:
        event["source_updated_at"] = rfc3339(updated)
    if links:
        event["links"] = links
    if identity is not None:
        event["identity"] = identity
    return event


# -- orders -------------------------------------------------------------------------------------


@dataclass
class Order:
    raw: Mapping[str, Any]
    ctx: Context

    @property
    def id(self) -> str:
        value = text_or_none(self.raw.get("id"))
        if value is None:
            raise MappingError("id", "missing")
        return value

    @property
    def type_code(self) -> str:
        return str(self.raw.get("orderTypeCode") or "")

    @property
    def key(self) -> str:
        return self.ctx.key("order", self.id)

    @property
    def currency(self) -> str:
        currency = self.raw.get("currency")
        code = currency.get("orderCurrencyCode") if isinstance(currency, Mapping) else None
        if not code:
            raise MappingError("currency.orderCurrencyCode", "missing")
        return str(code).upper()

    @property
    def updated(self) -> datetime | None:
        return parse_time(self.raw.get("updatedOn"))

    @property
    def updated_token(self) -> str:
        updated = self.updated
        return rfc3339(updated) if updated else f"v{self.raw.get('version', '')}"

    @property
    def customer(self) -> Mapping[str, Any]:
        parties = self.raw.get("parties")
        customer = parties.get("customer") if isinstance(parties, Mapping) else None
        return customer if isinstance(customer, Mapping) else {}

    @property
    def tax_inclusive(self) -> bool:
        return str(self.raw.get("priceModeCode") or "").upper() == "INC"

    def identity(self) -> dict[str, Any]:
        customer = self.customer
        email_raw = customer.get("email")
        email = normalise_email(email_raw)
        phone = phone_e164(customer.get("mobileTelephone")) or phone_e164(customer.get("telephone"))
        contact_id = customer.get("contactId")
        return {
            "email": email,
            "email_raw": email_raw if isinstance(email_raw, str) and email_raw else None,
            "phone_e164": phone,
            "source_customer_id": str(contact_id) if contact_id else None,
            "is_guest": not contact_id,
            "quality": "email" if email else ("phone_only" if phone else "none"),
        }

    def links(self) -> dict[str, Any]:
        return {
            "order_key": self.key,
            "order_number": self.id,
            "channel_order_ref": text_or_none(self.raw.get("externalRef")),
        }

    def entity(self) -> dict[str, Any]:
        return {
            "type": "order",
            "key": self.key,
            "source_id": self.id,
            "source_ref": text_or_none(self.raw.get("reference")),
        }

    def status(self) -> tuple[dict[str, str], str, dict[str, Any] | None]:
        """The canonical `to`, the raw status text, and the unmapped status (or None)."""
        order_status = self.raw.get("orderStatus")
        status = order_status if isinstance(order_status, Mapping) else {}
        status_id = text_or_none(status.get("orderStatusId"))
        name = text_or_none(status.get("name")) or ""
        to: dict[str, str] = {}
        unmapped = None
        lifecycle = self.ctx.status_map.get(status_id or "")
        if self.raw.get("isCanceled") is True or self.raw.get("isCancelled") is True:
            to["lifecycle"] = "cancelled"
        elif lifecycle in LIFECYCLES:
            to["lifecycle"] = str(lifecycle)
        else:
            unmapped = {"id": status_id, "name": name}
        fulfilment = SHIPPING_STATUS.get(str(self.raw.get("shippingStatusCode") or ""))
        if fulfilment:
            to["fulfilment"] = fulfilment
        to["financial"] = PAYMENT_STATUS.get(
            str(self.raw.get("orderPaymentStatus") or ""), "unknown"
        )
        raw = f"{status_id}:{name}" if status_id else name
        return to, raw, unmapped

    def lines(self) -> list[dict[str, Any]]:
        rows = self.raw.get("orderRows")
        if not isinstance(rows, Mapping):
            return []
        currency = self.currency
        lines = []
        for row_id, row in sorted(rows.items(), key=lambda kv: str(kv[0]).zfill(20)):
            if not isinstance(row, Mapping):
                continue
            sku_raw = row.get("productSku")
            value = object_at(row, "rowValue")
            net, tax = amount(value.get("rowNet")), amount(value.get("rowTax"))
            composition = object_at(row, "composition")
            product_id = row.get("productId")
            line: dict[str, Any] = {
                "line_key": str(row_id),
                "sku": clean(sku_raw) if isinstance(sku_raw, str) and sku_raw.strip() else None,
                "sku_raw": sku_raw if isinstance(sku_raw, str) else None,
                "product_key": self.ctx.key("product", product_id) if product_id else None,
                "name": text_or_none(row.get("productName")),
                "quantity": quantity(row.get("quantity")),
                "is_non_stock": not product_id,
                "parent_line_key": str(composition["parentOrderRowId"])
                if composition.get("bundleChild") and composition.get("parentOrderRowId")
                else None,
            }
            for field_name, source in (
                ("unit_price", row.get("productPrice")),
                ("line_subtotal", net),
                ("line_tax", tax),
            ):
                converted = money(source, currency)
                if converted is not None:
                    line[field_name] = converted
            if net is not None:
                # Σ of the row's own net and tax: gross when prices include tax, else net.
                total = net + (tax or Decimal(0)) if self.tax_inclusive else net
                line["line_total"] = money(total, currency)
            tax_rate = text_or_none(value.get("taxRate"))
            if tax_rate:
                line["tax_rate"] = tax_rate
            lines.append(line)
        return lines

    def totals(self) -> dict[str, Any]:
        currency = self.currency
        total_value = self.raw.get("totalValue")
        totals_raw = total_value if isinstance(total_value, Mapping) else {}
        grand = money(totals_raw.get("total"), currency)
        if grand is None:
            raise MappingError("totalValue.total", "missing")
        totals: dict[str, Any] = {"grand_total": grand, "tax_inclusive": self.tax_inclusive}
        for field_name, source in (("subtotal", "net"), ("tax", "taxAmount")):
            value = money(totals_raw.get(source), currency)
            if value is not None:
                totals[field_name] = value
        return totals

    def body(self) -> dict[str, Any]:
        """The data shared by order.created and order.updated."""
        to, raw, unmapped = self.status()
        placed = parse_time(self.raw.get("placedOn")) or parse_time(self.raw.get("createdOn"))
        data: dict[str, Any] = {
            "order_key": self.key,
            "order_number": self.id,
            "channel_order_ref": text_or_none(self.raw.get("externalRef")),
            "customer_ref": text_or_none(self.raw.get("reference")),
            "placed_at": rfc3339(placed or self.ctx.received_at),
            "currency": self.currency,
            "lines": self.lines(),
            "totals": self.totals(),
            "tax_inclusive": self.tax_inclusive,
            "status": to,
            "source_status_raw": raw,
            "source_status_codes": {
                "stock": self.raw.get("stockStatusCode"),
                "allocation": self.raw.get("allocationStatusCode"),
                "shipping": self.raw.get("shippingStatusCode"),
                "payment": self.raw.get("orderPaymentStatus"),
            },
            "is_guest": not self.customer.get("contactId"),
            "carries_money": True,
        }
        if unmapped is not None:
            data["signal"] = "unmapped_status"
            data["unmapped_status"] = unmapped
        updated = self.updated
        if updated is not None:
            data["revision"] = rfc3339(updated)
        return data


def sales_order_events(raw: Mapping[str, Any], ctx: Context) -> list[Event]:
    """A sales order as fetched now: `order.created` (once per order: its id is stable),
    `order.updated` when it changed after creation, and this version's `order.status_changed`.
    An unmapped tenant status leaves `to.lifecycle` out and sets `data.signal`."""
    order = Order(raw, ctx)
    body = order.body()
    created_at = parse_time(raw.get("createdOn")) or parse_time(raw.get("placedOn"))
    updated = order.updated
    common: dict[str, Any] = {
        "links": order.links(),
        "identity": order.identity(),
        "updated": updated,
    }
    events = [
        envelope(
            ctx,
            "order.created",
            f"order:{order.id}:created",
            created_at,
            order.entity(),
            body,
            **common,
        )
    ]
    if updated is not None and created_at is not None and updated > created_at:
        events.append(
            envelope(
                ctx,
                "order.updated",
                f"order:{order.id}:rev:{order.updated_token}",
                updated,
                order.entity(),
                body,
                **common,
            )
        )
    status = {
        "order_key": order.key,
        "order_number": order.id,
        "to": body["status"],
        "source_status_raw": body["source_status_raw"],
        "source_status_codes": body["source_status_codes"],
        "financial_status": raw.get("orderPaymentStatus"),
        "fulfilment_status": raw.get("shippingStatusCode"),
    }
    if "signal" in body:
        status["signal"] = body["signal"]
        status["unmapped_status"] = body["unmapped_status"]
    events.append(
        envelope(
            ctx,
            "order.status_changed",
            f"order:{order.id}:status:{order.updated_token}",
            updated,
            order.entity(),
            status,
            **common,
        )
    )
    return events


def sales_credit_events(raw: Mapping[str, Any], ctx: Context) -> list[Event]:
    """A sales credit (orderTypeCode SC) is a refund once it is paid out: `refund.issued` for the
    credit's total against its parent order. Unpaid credits, and credits with no parent order,
    give nothing yet (the first is not money moved; the second has no order to join)."""
    credit = Order(raw, ctx)
    if str(raw.get("orderPaymentStatus") or "") != "PAID":
        return []
    parent = text_or_none(raw.get("parentOrderId"))
    if not parent or parent == "0":
        return []
    totals = credit.totals()
    refunded_at = credit.updated
    order_key = ctx.key("order", parent)
    refund_key = ctx.key("refund", credit.id)
    lines = [
        {
            "line_key": line["line_key"],
            "sku": line["sku"],
            "sku_raw": line["sku_raw"],
            "quantity": line["quantity"],
            "amount": line.get("line_total"),
        }
        for line in credit.lines()
    ]
    return [
        envelope(
            ctx,
            "refund.issued",
            f"sales-credit:{credit.id}:paid",
            refunded_at,
            {"type": "refund", "key": refund_key, "source_id": credit.id, "source_ref": parent},
            {
                "refund_key": refund_key,
                "order_key": order_key,
                "order_number": parent,
                "refunded_at": rfc3339(refunded_at or ctx.received_at),
                "amount": {**totals["grand_total"]},
                "tax": totals.get("tax"),
                "lines": lines,
                "amount_basis": "sales credit total, payment status PAID",
            },
            links={"order_key": order_key, "order_number": parent},
            identity=credit.identity(),
            updated=refunded_at,
        )
    ]


def order_events(raw: Mapping[str, Any], ctx: Context) -> list[Event]:
    """Any fetched order: sales orders and sales credits; purchase orders and credits are not ours."""
    code = str(raw.get("orderTypeCode") or "")
    if code == "SO":
        return sales_order_events(raw, ctx)
    if code == "SC":
        return sales_credit_events(raw, ctx)
    return []


# -- goods-out notes ----------------------------------------------------------------------------


def goods_out_note_events(note_id: str, raw: Mapping[str, Any], ctx: Context) -> list[Event]:
    """A shipped goods-out note → `shipment.dispatched` (one note per warehouse: each its own
    shipment). Printed/picked/packed notes give nothing: the order's shipping status says it."""
    status = object_at(raw, "status")
    if not status.get("shipped"):
        return []
    order_id = text_or_none(raw.get("orderId"))
    if order_id is None:
        raise MappingError("orderId", "missing")
    shipped = parse_time(status.get("shippedOn"))
    if shipped is None:
        shipped = next(
            (
                parse_time(e.get("occured"))
                for e in raw.get("events") or ()
                if isinstance(e, Mapping) and e.get("eventCode") == "SHW"
            ),
            None,
        )
    order_key = ctx.key("order", order_id)
    shipment_key = ctx.key("shipment", note_id)
    lines = []
    rows = object_at(raw, "orderRows")
    for row_id, entries in sorted(rows.items()):
        for entry in entries if isinstance(entries, list) else [entries]:
            if not isinstance(entry, Mapping):
                continue
            lines.append(
                {
                    "line_key": str(row_id),
                    "sku": None,  # the note names products by id; the order's line has the SKU
                    "product_key": ctx.key("product", entry.get("productId")),
                    "quantity": quantity(entry.get("quantity", 0)),
                }
            )
    shipping = object_at(raw, "shipping")
    reference = text_or_none(shipping.get("reference"))
    return [
        envelope(
            ctx,
            "shipment.dispatched",
            f"goods-out-note:{note_id}:shipped:{rfc3339(shipped) if shipped else 'unknown'}",
            shipped,
            {
                "type": "shipment",
                "key": shipment_key,
                "source_id": str(note_id),
                "source_ref": order_id,
            },
            {
                "shipment_key": shipment_key,
                "order_key": order_key,
                "order_number": order_id,
                "dispatched_at": rfc3339(shipped or ctx.received_at),
                "lines": lines,
                "tracking_numbers": [reference] if reference else [],
                "carrier": {
                    "code": text_or_none(shipping.get("shippingMethodId")),
                    "name": None,
                    "service": None,
                },
                "parcel_count": shipping.get("boxes"),
                "location": {"key": ctx.key("warehouse", raw.get("warehouseId"))},
                "sequence": raw.get("sequence"),
            },
            links={"order_key": order_key, "order_number": order_id},
            updated=shipped,
        )
    ]


# -- contacts -----------------------------------------------------------------------------------


def contact_email(raw: Mapping[str, Any]) -> Any:
    communication = object_at(raw, "communication")
    emails = object_at(communication, "emails")
    for kind in ("PRI", "SEC", "TER"):
        entry = emails.get(kind)
        if isinstance(entry, Mapping) and entry.get("email"):
            return entry["email"]
    return None


def newsletter_flag(raw: Mapping[str, Any]) -> bool | None:
    details = raw.get("marketingDetails")
    if not isinstance(details, Mapping) or "isReceiveEmailNewsletter" not in details:
        return None
    return bool(details["isReceiveEmailNewsletter"])


@dataclass
class Contact:
    raw: Mapping[str, Any]
    ctx: Context

    @property
    def id(self) -> str:
        value = text_or_none(self.raw.get("contactId"))
        if value is None:
            raise MappingError("contactId", "missing")
        return value

    @property
    def key(self) -> str:
        return self.ctx.key("customer", self.id)

    @property
    def updated(self) -> datetime | None:
        return parse_time(self.raw.get("updatedOn"))

    def identity(self) -> dict[str, Any]:
        email_raw = contact_email(self.raw)
        email = normalise_email(email_raw)
        communication = object_at(self.raw, "communication")
        phones = object_at(communication, "telephones")
        phone = phone_e164(phones.get("MOB")) or phone_e164(phones.get("PRI"))
        return {
            "email": email,
            "email_raw": email_raw if isinstance(email_raw, str) else None,
            "phone_e164": phone,
            "source_customer_id": self.id,
            "is_guest": False,
            "quality": "email" if email else ("phone_only" if phone else "none"),
        }

    def entity(self) -> dict[str, Any]:
        return {"type": "customer", "key": self.key, "source_id": self.id, "source_ref": None}


def customer_upserted(raw: Mapping[str, Any], ctx: Context) -> Event:
    contact = Contact(raw, ctx)
    updated = contact.updated
    relationship = object_at(raw, "relationshipToAccount")
    return envelope(
        ctx,
        "customer.upserted",
        f"contact:{contact.id}:{rfc3339(updated) if updated else 'v'}",
        updated,
        contact.entity(),
        {
            "customer_key": contact.key,
            "source_updated_at": rfc3339(updated or ctx.received_at),
            "first_name": text_or_none(raw.get("firstName")),
            "last_name": text_or_none(raw.get("lastName")),
            "is_guest": False,
            "is_staff": bool(relationship.get("isStaff")),
            "is_supplier": bool(relationship.get("isSupplier")),
            "tags": text_or_none(raw.get("contactTags")),
        },
        identity=contact.identity(),
        updated=updated,
    )


def consent_changed(
    raw: Mapping[str, Any], ctx: Context, status: str, event_id: str, at: datetime | None
) -> Event:
    """`consent.changed` for the newsletter flag. Brightpearl keeps no time of the opt-in itself:
    `consent_at` is the contact's `updatedOn` at the change (so `consent_at_exact` is false and
    the engine never lets it override a DotDigital opt-out)."""
    contact = Contact(raw, ctx)
    return envelope(
        ctx,
        "consent.changed",
        event_id,
        at,
        contact.entity(),
        {
            "channel": "email",
            "status": status,
            "consent_at": rfc3339(at or ctx.received_at),
            "consent_at_exact": False,
            "consent_source": "brightpearl:marketingDetails.isReceiveEmailNewsletter",
            "customer_key": contact.key,
        },
        identity=contact.identity(),
        updated=at,
    )
