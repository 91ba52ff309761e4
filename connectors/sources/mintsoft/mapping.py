"""Mintsoft's order and return JSON → canonical events (pure functions, no I/O); its stock
report is mapped in stock.py.

What Mintsoft is (the shared reference `reference/sources.md` §4): a 3PL warehouse. It knows orders,
parcels, returns and stock per location; it has no customer entity and no money of its own (the
order figures are copies of the sales channel's), so it never produces refunds and its order totals
are marked `carries_money: false` for the engine to keep them out of LTV.

Keys: an order is its `OrderNumber` within the Mintsoft client (split parts share it, each part
is its own Mintsoft `ID` with `Part`/`NumberOfParts`); a shipment is the order number plus the
part. Source event ids are derived from the record's own state, so a callback and a poll that
read the same order version give the same id and the engine stores it once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from connectors.sources.values import (
    clean,
    decimal,
    digest,
    normalise_email,
    parse_dotnet,
    parse_iso,
    rfc3339,
    text_or_none,
    whole_or_text,
)

SYSTEM = "mintsoft"
SCHEMA = "sync.event/v1"

Event = dict[str, Any]

#: Mintsoft's OrderStatusId table (payloads/mintsoft/order-statuses.json, IDs 1–23).
#: Names are Mintsoft's; the "external names" are customisable per tenant, the IDs are not.
STATUS_NAMES: dict[int, str] = {
    1: "NEW",
    2: "PRINTED",
    3: "CANCELLED",
    4: "DESPATCHED",
    5: "INVOICED",
    6: "INVOICEFAILED",
    7: "HOLDING",
    8: "FAILED",
    9: "ONBACKORDER",
    10: "AWAITINGCONFIRMATION",
    11: "AWAITINGDOCUMENTATION",
    12: "AWAITINGPAYMENT",
    13: "QUERYRAISED",
    14: "PACKANDHOLD",
    15: "AWAITINGPICKING",
    16: "PICKINGSTARTED",
    17: "PICKED",
    18: "FRAUDRISK",
    19: "PICKINGSKIPPED",
    20: "PACKED",
    21: "AWAITINGREPLEN",
    22: "PROCESSING",
    23: "REBINNED",
}

_OPEN = "open"
_HOLD = "on_hold"
#: Each status → the canonical dimensions it speaks for (sources.md §10.3). A WMS fills only
#: fulfilment (and lifecycle for cancel and holds); financial is always "unknown". None: the
#: status says nothing about the order's progress (FAILED is an integration error) — no change.
STATUS_MAP: dict[int, dict[str, str] | None] = {
    1: {"lifecycle": _OPEN, "fulfilment": "unfulfilled"},
    2: {"lifecycle": _OPEN, "fulfilment": "processing"},
    3: {"lifecycle": "cancelled"},
    4: {"lifecycle": _OPEN, "fulfilment": "dispatched"},
    5: {"lifecycle": _OPEN, "fulfilment": "dispatched"},  # external name DESPATCHED
    6: {"lifecycle": _OPEN, "fulfilment": "dispatched"},  # external name DESPATCHED
    7: {"lifecycle": _OPEN, "fulfilment": "backordered"},  # stock short, held by policy
    8: None,  # FAILED: the order failed to import or process — an error, not a state
    9: {"lifecycle": _OPEN, "fulfilment": "backordered"},
    10: {"lifecycle": _HOLD},
    11: {"lifecycle": _HOLD},
    12: {"lifecycle": _HOLD},
    13: {"lifecycle": _HOLD},
    14: {"lifecycle": _HOLD, "fulfilment": "processing"},  # packed, held back
    15: {"lifecycle": _OPEN, "fulfilment": "processing"},
    16: {"lifecycle": _OPEN, "fulfilment": "processing"},
    17: {"lifecycle": _OPEN, "fulfilment": "processing"},
    18: {"lifecycle": _HOLD},  # fraud risk
    19: {"lifecycle": _OPEN, "fulfilment": "processing"},
    20: {"lifecycle": _OPEN, "fulfilment": "processing"},
    21: {"lifecycle": _OPEN, "fulfilment": "processing"},  # pick face awaiting replenishment
    22: {"lifecycle": _OPEN, "fulfilment": "processing"},
    23: {"lifecycle": _OPEN, "fulfilment": "processing"},
}
DESPATCHED_IDS = frozenset({4, 5, 6})
CANCELLED_ID = 3

#: Return reason StockAction → the condition of the returned units (return-reasons.json).
STOCK_ACTION_CONDITION = {"donothing": "saleable", "quarantine": "quarantined", "scrap": "damaged"}


@dataclass
class Context:
    """What the mapping needs besides the record: who the account is and how to read times."""

    account: str
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Europe/London"))
    currency: str = "GBP"
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: per-tenant overrides of STATUS_MAP, by status id (string keys from connection.options)
    status_overrides: Mapping[str, Mapping[str, str] | None] = field(default_factory=dict)

    def key(self, kind: str, value: Any) -> str:
        return f"{SYSTEM}:{self.account}:{kind}:{value}"


class MappingError(ValueError):
    """A record that cannot become an event (its path and why)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


# -- values -------------------------------------------------------------------------------------


def parse_time(value: Any, tz: ZoneInfo) -> tuple[datetime, str] | None:
    """A Mintsoft time and its quality: `/Date(ms)/` (.NET JSON, UTC epoch ms, exact) or ISO 8601,
    which Mintsoft writes without an offset in the warehouse's local time (`source_local_tz`).
    None when absent or unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    dotnet = parse_dotnet(value.strip())
    if dotnet is not None:
        return dotnet, "exact"
    parsed = parse_iso(value)
    if parsed is None:
        return None
    if parsed.tzinfo is not None:
        return parsed, "exact"
    return parsed.replace(tzinfo=tz), "source_local_tz"


_CALLING_CODES = {"GB": "44", "UK": "44", "IE": "353", "US": "1", "CA": "1"}


def phone_e164(raw: Any, country: str | None) -> str | None:
    """The phone number in E.164 when it can be told without guessing, else None."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    text = raw.strip()
    digits = re.sub(r"\D", "", text)
    if text.startswith("+"):
        number = digits
    elif digits.startswith("00"):
        number = digits[2:]
    else:
        code = _CALLING_CODES.get((country or "").upper())
        if code is None:
            return None
        if code == "1":
            number = digits if len(digits) == 11 and digits.startswith("1") else "1" + digits
            if len(number) != 11:
                return None
        elif digits.startswith("0"):
            number = code + digits[1:]
        else:
            return None
    return f"+{number}" if 8 <= len(number) <= 15 else None


def money(value: Any, currency: str, places: int = 2) -> dict[str, str] | None:
    """Mintsoft's JSON numbers (doubles) as a decimal string at the currency's scale."""
    number = decimal(value, finite=False)
    if number is None:
        return None
    try:
        amount = number.quantize(Decimal(1).scaleb(-places))
    except InvalidOperation:
        return None
    return {"amount": f"{amount:f}", "currency": currency}


def quantity(value: Any) -> int | str:
    """Mintsoft quantities come as numbers or as strings ("7"); fractional ones stay decimal strings."""
    number = decimal(value, finite=False)
    if number is None:
        raise MappingError("Quantity", f"not a number: {value!r}")
    return whole_or_text(number)


# -- envelope -----------------------------------------------------------------------------------


def envelope(
    ctx: Context,
    event_type: str,
    source_event_id: str,
    occurred: tuple[datetime, str] | None,
    entity: dict[str, Any],
    data: dict[str, Any],
    *,
    links: dict[str, Any] | None = None,
    identity: dict[str, Any] | None = None,
    updated: tuple[datetime, str] | None = None,
    channel: str | None = None,
) -> Event:
    moment, quality = occurred or (ctx.received_at, "received_time")
    event: Event = {
        "schema": SCHEMA,
        "event_type": event_type,
        "source": {"system": SYSTEM, "account": ctx.account, "channel": channel, "via": None},
        "source_event_id": source_event_id,
        "source_event_id_kind": "derived",
        "occurred_at": rfc3339(moment),
        "occurred_at_quality": quality,
        "received_at": rfc3339(ctx.received_at),
        "entity": entity,
        "data": data,
    }
    if updated is not None:
        event["source_updated_at"] = rfc3339(updated[0])
    if links:
        event["links"] = links
    if identity is not None:
        event["identity"] = identity
    return event


# -- orders -------------------------------------------------------------------------------------


@dataclass
class Order:
    """One Mintsoft order record (a part of a split order is its own record) read for mapping."""

    raw: Mapping[str, Any]
    ctx: Context

    @property
    def id(self) -> str:
        value = text_or_none(self.raw.get("ID"))
        if value is None:
            raise MappingError("ID", "missing")
        return value

    @property
    def number(self) -> str:
        value = text_or_none(self.raw.get("OrderNumber"))
        if value is None:
            raise MappingError("OrderNumber", "missing")
        return value

    @property
    def key(self) -> str:
        return self.ctx.key("order", self.number)

    @property
    def part(self) -> int:
        return int(self.raw.get("Part") or 1)

    @property
    def parts(self) -> int:
        return max(int(self.raw.get("NumberOfParts") or 1), self.part)

    @property
    def shipment_key(self) -> str:
        return self.ctx.key("shipment", f"{self.number}:{self.part}")

    @property
    def status_id(self) -> int | None:
        value = self.raw.get("OrderStatusId")
        return int(value) if isinstance(value, int | str) and str(value).isdigit() else None

    @property
    def currency(self) -> str:
        nested = self.raw.get("Currency")
        code = nested.get("Code") if isinstance(nested, Mapping) else None
        return str(code).upper() if code else self.ctx.currency

    @property
    def country(self) -> str | None:
        nested = self.raw.get("Country")
        code = nested.get("Code") if isinstance(nested, Mapping) else None
        return str(code) if code else None

    @property
    def channel(self) -> str | None:
        nested = self.raw.get("Channel")
        name = nested.get("Name") if isinstance(nested, Mapping) else None
        return str(name) if name else None

    def time(self, name: str) -> tuple[datetime, str] | None:
        return parse_time(self.raw.get(name), self.ctx.tz)

    @property
    def updated(self) -> tuple[datetime, str] | None:
        return self.time("LastUpdated")

    @property
    def updated_token(self) -> str:
        """The record's version, as a stable string (the raw LastUpdated)."""
        updated = self.updated
        return rfc3339(updated[0]) if updated else digest(sorted(self.raw.items()))

    def name_value(self, name: str) -> str | None:
        for item in self.raw.get("OrderNameValues") or ():
            if isinstance(item, Mapping) and item.get("Name") == name:
                return text_or_none(item.get("Value"))
        return None

    def identity(self) -> dict[str, Any]:
        if self.raw.get("PIIRemoved"):
            return {"email": None, "phone_e164": None, "is_guest": None, "quality": "none"}
        email_raw = self.raw.get("Email")
        email = normalise_email(email_raw)
        phone = phone_e164(self.raw.get("Mobile"), self.country) or phone_e164(
            self.raw.get("Phone"), self.country
        )
        return {
            "email": email,
            "email_raw": email_raw if isinstance(email_raw, str) else None,
            "phone_e164": phone,
            # Mintsoft has no customer entity: whether the buyer had an account is unknown here.
            "source_customer_id": None,
            "is_guest": None,
            "quality": "email" if email else ("phone_only" if phone else "none"),
        }

    def links(self) -> dict[str, Any]:
        return {
            "order_key": self.key,
            "order_number": self.number,
            "channel_order_ref": text_or_none(self.raw.get("ExternalOrderReference")),
        }

    def entity(self) -> dict[str, Any]:
        return {
            "type": "order",
            "key": self.key,
            "source_id": self.id,
            "source_ref": self.number,
        }

    def status(self, status_id: int | None = None) -> tuple[dict[str, str] | None, str]:
        """The canonical `to` for a status id (None: no change) and its raw name."""
        sid = self.status_id if status_id is None else status_id
        raw_name = STATUS_NAMES.get(sid, "") if sid is not None else ""
        raw = f"{sid}:{raw_name}" if raw_name else str(sid)
        if sid is not None and str(sid) in self.ctx.status_overrides:
            mapped = self.ctx.status_overrides[str(sid)]
        elif sid is not None and sid in STATUS_MAP:
            mapped = STATUS_MAP[sid]
        else:
            return None, raw
        if mapped is None:
            return None, raw
        to = dict(mapped)
        if to.get("fulfilment") == "dispatched" and self.parts > 1:
            # One despatched part of a split order: the engine promotes the order to dispatched
            # once every part's shipment is in.
            to["fulfilment"] = "partially_dispatched"
        to["financial"] = "unknown"
        return to, raw

    def lines(self) -> list[dict[str, Any]]:
        items = self.raw.get("OrderItems")
        if not isinstance(items, list):
            return []
        currency = self.currency
        lines = []
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                continue
            sku_raw = item.get("SKU")
            line: dict[str, Any] = {
                "line_key": text_or_none(item.get("ID")) or str(index + 1),
                "sku": clean(sku_raw) if isinstance(sku_raw, str) else None,
                "sku_raw": sku_raw if isinstance(sku_raw, str) else None,
                "product_key": self.ctx.key("product", item["ProductId"])
                if item.get("ProductId")
                else None,
                "name": text_or_none(item.get("Details")),
                "quantity": quantity(item.get("Quantity", 0)),
            }
            for field_name, source in (
                ("unit_price", "Price"),
                ("line_discount", "Discount"),
                ("line_total", "SourceLineTotal"),
            ):
                value = money(item.get(source), currency)
                if value is not None:
                    line[field_name] = value
            lines.append(line)
        return lines

    def totals(self) -> dict[str, Any]:
        currency = self.currency
        grand = self.raw.get("TotalOrderGross")
        if grand is None:
            grand = self.raw.get("OrderValue") or 0
        totals: dict[str, Any] = {"grand_total": money(grand, currency), "tax_inclusive": True}
        for field_name, source in (
            ("tax", "TotalOrderTax"),
            ("shipping", "ShippingGross"),
            ("discount", "DiscountGross"),
        ):
            value = money(self.raw.get(source), currency)
            if value is not None:
                totals[field_name] = value
        return totals

    def address(self) -> dict[str, Any]:
        fields = ("Address1", "Address2", "Address3", "Town", "County", "PostCode")
        return {
            "name": " ".join(
                p
                for p in (
                    text_or_none(self.raw.get("FirstName")),
                    text_or_none(self.raw.get("LastName")),
                )
                if p
            )
            or None,
            "company": text_or_none(self.raw.get("CompanyName")),
            "lines": [v for v in (text_or_none(self.raw.get(f)) for f in fields[:3]) if v],
            "town": text_or_none(self.raw.get("Town")),
            "county": text_or_none(self.raw.get("County")),
            "postcode": text_or_none(self.raw.get("PostCode")),
            "country": self.country,
        }


def order_created(order: Order) -> Event | None:
    """`order.created` for the first part of an order (later parts of a split add no order)."""
    if order.part != 1:
        return None
    to, raw = order.status()
    placed = order.time("OrderDate") or order.updated
    data = {
        "order_key": order.key,
        "order_number": order.number,
        "channel_order_ref": text_or_none(order.raw.get("ExternalOrderReference")),
        "channel": order.channel,
        "placed_at": rfc3339(placed[0] if placed else order.ctx.received_at),
        "currency": order.currency,
        "lines": order.lines(),
        "totals": order.totals(),
        "tax_inclusive": True,
        "status": to or {"financial": "unknown"},
        "source_status_raw": raw,
        "shipping_address": order.address(),
        "part": order.part,
        "parts": order.parts,
        # The warehouse's copy of the channel's figures: never LTV, never refunds.
        "carries_money": False,
    }
    return envelope(
        order.ctx,
        "order.created",
        f"order:{order.id}:created",
        placed,
        order.entity(),
        data,
        links=order.links(),
        identity=order.identity(),
        updated=order.updated,
        channel=order.channel,
    )


def order_status_changed(order: Order, *, force_status: int | None = None) -> Event:
    """`order.status_changed` for this version of the order. An unmapped or error status gives an
    empty `to` (no change) and `data.signal` saying why, for the engine to raise."""
    status_id = force_status if force_status is not None else order.status_id
    to, raw = order.status(status_id)
    data: dict[str, Any] = {
        "order_key": order.key,
        "order_number": order.number,
        "to": to or {},
        "source_status_raw": raw,
        "part": order.part,
        "parts": order.parts,
    }
    previous = order.name_value("PreviousOrderStatusId")
    if previous and previous.isdigit():
        data["from_source_status_raw"] = f"{previous}:{STATUS_NAMES.get(int(previous), '')}"
    if to is None:
        data["signal"] = "source_error" if status_id == 8 else "unmapped_status"
    return envelope(
        order.ctx,
        "order.status_changed",
        f"order:{order.id}:status:{status_id}:{order.updated_token}",
        order.updated,
        order.entity(),
        data,
        links=order.links(),
        identity=order.identity(),
        updated=order.updated,
        channel=order.channel,
    )


def shipment_dispatched(order: Order) -> Event:
    """`shipment.dispatched`: the order (part) was marked despatched *in the warehouse*. Not
    carrier movement; tracking may still be empty."""
    tracking = text_or_none(order.raw.get("TrackingNumber"))
    url = text_or_none(order.raw.get("TrackingURL"))
    despatched = order.time("DespatchDate") or order.updated
    data = {
        "shipment_key": order.shipment_key,
        "order_key": order.key,
        "order_number": order.number,
        "dispatched_at": rfc3339(despatched[0] if despatched else order.ctx.received_at),
        "lines": [
            {"line_key": line["line_key"], "sku": line["sku"], "quantity": line["quantity"]}
            for line in order.lines()
        ],
        "tracking_numbers": [tracking] if tracking else [],
        "tracking_urls": [url] if url else [],
        "carrier": {
            "code": text_or_none(order.raw.get("CourierServiceId")),
            "name": text_or_none(order.raw.get("CourierServiceName")),
            "service": text_or_none(order.raw.get("CourierServiceName")),
        },
        "parcel_count": order.raw.get("NumberOfParcels"),
        "is_partial": order.parts > 1,
        "part": order.part,
        "parts": order.parts,
    }
    return envelope(
        order.ctx,
        "shipment.dispatched",
        f"shipment:{order.id}:despatched",
        despatched,
        {
            "type": "shipment",
            "key": order.shipment_key,
            "source_id": order.id,
            "source_ref": order.number,
        },
        data,
        links=order.links(),
        identity=order.identity(),
        updated=order.updated,
        channel=order.channel,
    )


def shipment_delivered(order: Order) -> Event:
    """`shipment.carrier_scanned` (delivered): only Mintsoft's delivered callback (Tracking Events
    module) says the carrier delivered. The order JSON carries no delivery time: its LastUpdated
    when that is after the despatch, else the time the callback arrived."""
    updated = order.updated
    despatched = order.time("DespatchDate")
    scanned = updated if updated and (not despatched or updated[0] >= despatched[0]) else None
    tracking = text_or_none(order.raw.get("TrackingNumber"))
    data: dict[str, Any] = {
        "shipment_key": order.shipment_key,
        "order_key": order.key,
        "scan_status": "delivered",
        "scanned_at": rfc3339(scanned[0] if scanned else order.ctx.received_at),
        "description_raw": "Mintsoft delivered callback",
    }
    if tracking:
        data["tracking_number"] = tracking
    return envelope(
        order.ctx,
        "shipment.carrier_scanned",
        f"shipment:{order.id}:delivered",
        scanned,
        {
            "type": "shipment",
            "key": order.shipment_key,
            "source_id": order.id,
            "source_ref": order.number,
        },
        data,
        links=order.links(),
        identity=order.identity(),
        updated=updated,
        channel=order.channel,
    )


def order_events(raw: Mapping[str, Any], ctx: Context) -> list[Event]:
    """What a polled order record says: created (first part), this version's status, and the
    despatch when the part is despatched (the same ids a callback would give)."""
    order = Order(raw, ctx)
    events = [e for e in (order_created(order),) if e is not None]
    events.append(order_status_changed(order))
    if order.status_id in DESPATCHED_IDS:
        events.append(shipment_dispatched(order))
    return events


CALLBACKS = ("despatched", "cancelled", "delivered", "split")


def callback_events(raw: Mapping[str, Any], ctx: Context, callback: str) -> list[Event]:
    """The events of one callback body (the order JSON) for the callback that called."""
    order = Order(raw, ctx)
    events = [e for e in (order_created(order),) if e is not None]
    if callback == "cancelled":
        events.append(order_status_changed(order, force_status=CANCELLED_ID))
    elif callback == "despatched":
        status = order.status_id if order.status_id in DESPATCHED_IDS else 4
        events.append(order_status_changed(order, force_status=status))
        events.append(shipment_dispatched(order))
    elif callback == "delivered":
        # A delivered part was despatched: a late or lost despatch callback is covered.
        events.append(shipment_dispatched(order))
        events.append(shipment_delivered(order))
    else:  # split, or an order update without a named callback
        events.append(order_status_changed(order))
        if order.status_id in DESPATCHED_IDS:
            events.append(shipment_dispatched(order))
    return events


def infer_callback(raw: Mapping[str, Any]) -> str:
    """Which callback sent this body when the URL does not say (no `?callback=`). The order
    JSON cannot tell a delivery from a despatch, so a delivered callback must name itself."""
    status = raw.get("OrderStatusId")
    if status == CANCELLED_ID:
        return "cancelled"
    if status in DESPATCHED_IDS:
        return "despatched"
    return "update"


# -- returns ------------------------------------------------------------------------------------


def return_received(
    raw: Mapping[str, Any], ctx: Context, reasons: Mapping[int, Mapping[str, Any]] | None = None
) -> Event | None:
    """`return.received` for a return booked in at the warehouse; None for a pre-advised return
    not yet confirmed. No money: Mintsoft's `Refunded` flag is a warehouse tick, not a refund."""
    if raw.get("AdvancedExternalReturn") and not raw.get("Confirmed"):
        return None
    return_id = text_or_none(raw.get("ID"))
    if return_id is None:
        raise MappingError("ID", "missing")
    number = text_or_none(raw.get("OrderNumber"))
    order_key = ctx.key("order", number) if number else ctx.key("order-id", raw.get("OrderId"))
    lines = []
    for item in raw.get("ReturnItems") or ():
        if not isinstance(item, Mapping):
            continue
        sku_raw = item.get("SKU")
        reason = (reasons or {}).get(int(item.get("ReturnReasonId") or 0), {})
        action = item.get("StockAction") or reason.get("StockAction") or ""
        lines.append(
            {
                "sku": clean(sku_raw) if isinstance(sku_raw, str) else None,
                "sku_raw": sku_raw if isinstance(sku_raw, str) else None,
                "product_key": ctx.key("product", item["ProductId"])
                if item.get("ProductId")
                else None,
                "quantity": quantity(item.get("Quantity", 0)),
                "condition": STOCK_ACTION_CONDITION.get(str(action).lower()),
                "reason": item.get("ReturnReasonName") or reason.get("Name"),
                "restocked": item.get("ReturnedToStock"),
            }
        )
    updated = parse_time(raw.get("LastUpdated"), ctx.tz)
    key = ctx.key("return", return_id)
    return envelope(
        ctx,
        "return.received",
        f"return:{return_id}:received",
        updated,
        {"type": "return", "key": key, "source_id": return_id, "source_ref": number},
        {
            "return_key": key,
            "order_key": order_key,
            "order_number": number,
            "received_at": rfc3339(updated[0] if updated else ctx.received_at),
            "lines": lines,
            "reference": text_or_none(raw.get("Reference")),
        },
        links={"order_key": order_key, "order_number": number},
        updated=updated,
    )
