"""Stokly records → canonical events (pure: no HTTP, no database): sale orders with their items,
customers, invoices, listings and inventory, the connection's stage map applied (README.md)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from connectors.sources.base import Event
from connectors.sources.values import (
    clean,
    decimal,
    fingerprint,
    lenient_email,
    money,
    parse_iso,
    quantity,
    rfc3339,
)

SYSTEM = "stokly"
NAMESPACE = uuid.UUID("6f1c1b4e-2f7a-4b0e-9a51-5d1f3c2b7a10")  # eventgen's, so ids agree
DEFAULT_BASE_URL = "https://api.stok.ly"
TIMEOUT = (5.0, 60.0)
REFRESH_MARGIN = 60.0  # seconds before expiry a token is renewed (as Stokly's own scripts do)
EXPIRED_MESSAGES = ("jwt expired", "invalid admin session")
STREAMS = ("listings", "customers", "orders", "order_status", "invoices", "inventory")
DATED = {"customers", "orders", "invoices"}
SWEPT = {"listings": "catalogue_sweep_minutes", "inventory": "stock_sweep_minutes"}
DEFAULTS: dict[str, Any] = {
    "base_url": DEFAULT_BASE_URL,
    "page_size": 200,
    "lookback_minutes": 15,
    "status_window_days": 14,
    "catalogue_sweep_minutes": 360,
    "stock_sweep_minutes": 60,
    "requests_per_minute": 600,  # one public client self-limits to this; Stokly documents none
    "customer_date_field": "updatedAt",
    "prices_include_tax": True,
    "currency": "GBP",
}
# stage / item status → canonical; options["status_map"] adds to or overrides these.
STAGE_MAP: dict[str, dict[str, str]] = {
    "order": {"lifecycle": "open"},
    "removed": {"lifecycle": "cancelled"},
}
ITEM_STATUS_MAP: dict[str, str] = {"unprocessed": "unfulfilled"}
FULFILMENT_RANK = ["unfulfilled", "backordered", "processing", "partially_dispatched", "dispatched"]


# -- small helpers ---------------------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        seconds = float(value)
        return datetime.fromtimestamp(seconds / 1000 if seconds > 1e11 else seconds, UTC)
    parsed = parse_iso(value)
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# -- mapping ---------------------------------------------------------------------------------


@dataclass
class Mapper:
    account: str
    options: Mapping[str, Any]
    warnings: list[dict[str, str]] = field(default_factory=list)

    def warn(self, code: str, message: str, subject: str) -> None:
        self.warnings.append({"code": code, "message": message, "subject": subject})

    def key(self, entity: str, source_id: Any) -> str:
        return f"{SYSTEM}:{self.account}:{entity}:{source_id}"

    def envelope(
        self,
        event_type: str,
        entity: str,
        source_id: Any,
        source_event_id: str,
        occurred_at: str,
        data: dict[str, Any],
        *,
        quality: str = "exact",
        updated_at: str | None = None,
        source_ref: str | None = None,
        identity: dict[str, Any] | None = None,
        links: dict[str, Any] | None = None,
        channel: str | None = None,
        kind: str = "derived",
    ) -> Event:
        sid = f"{SYSTEM}:{source_event_id}"
        event: Event = {
            "schema": "sync.event/v1",
            "event_type": event_type,
            "event_id": str(uuid.uuid5(NAMESPACE, f"{SYSTEM}|{self.account}|{event_type}|{sid}")),
            "source": {"system": SYSTEM, "account": self.account, "channel": channel, "via": None},
            "source_event_id": sid,
            "source_event_id_kind": kind,
            "occurred_at": occurred_at,
            "occurred_at_quality": quality,
            "entity": {
                "type": entity,
                "key": self.key(entity, source_id),
                "source_id": str(source_id),
                "source_ref": source_ref,
            },
            "links": links or {},
            "identity": identity or {"quality": "none"},
            "data": data,
        }
        if updated_at:
            event["source_updated_at"] = updated_at
        return event

    # orders
    def status(self, order: Mapping[str, Any]) -> tuple[dict[str, str], str]:
        """The canonical status of an order and its raw form; unknown parts are left out."""
        custom: Mapping[str, Any] = self.options.get("status_map") or {}
        stage = clean(order.get("stage"))
        raw_items = order.get("itemStatuses") or []
        statuses = sorted({clean(s) for s in raw_items if clean(s)})
        raw = f"stage={stage}; items={','.join(statuses)}"
        subject = str(order.get("niceId") or order.get("saleOrderId"))
        result: dict[str, str] = {}
        stage_map = {**STAGE_MAP, **(custom.get("stages") or {})}
        if stage in stage_map:
            result.update(stage_map[stage])
        elif stage:
            self.warn(
                "unknown_status",
                f"Unknown Stokly order stage {stage!r}: add it to the status map.",
                subject,
            )
        item_map = {**ITEM_STATUS_MAP, **(custom.get("item_statuses") or {})}
        mapped: list[str] = []
        for status in statuses:
            if status in item_map:
                mapped.append(item_map[status])
            else:
                self.warn(
                    "unknown_status",
                    f"Unknown Stokly item status {status!r}: add it to the status map.",
                    subject,
                )
        if mapped and len(mapped) == len(statuses):
            if set(mapped) == {"dispatched"}:
                result["fulfilment"] = "dispatched"
            elif "dispatched" in mapped or "partially_dispatched" in mapped:
                result["fulfilment"] = "partially_dispatched"
            else:
                result["fulfilment"] = max(mapped, key=FULFILMENT_RANK.index)
        result.setdefault("financial", "unknown")
        return result, raw

    def identity(self, order: Mapping[str, Any]) -> dict[str, Any]:
        customer = order.get("customer")
        if not isinstance(customer, dict):
            customer = {}
        raw = customer.get("email") or order.get("email") or order.get("customerEmail")
        email = lenient_email(raw)
        customer_id = customer.get("customerId")
        return {
            "email": email,
            "email_raw": raw if email else None,
            "source_customer_id": str(customer_id) if customer_id else None,
            "is_guest": customer_id is None,
            "quality": "email" if email else "none",
        }

    def order_events(
        self, order: Mapping[str, Any], items: list[dict[str, Any]] | None, seen_at: datetime
    ) -> list[Event]:
        order_id = str(order.get("saleOrderId"))
        number = str(order.get("niceId") or order_id)
        placed = parse_time(order.get("createdAt"))
        currency = clean(order.get("currency")) or str(self.options["currency"])
        if placed is None:
            self.warn("unreadable", "Sale order without a createdAt: skipped.", number)
            return []
        status, raw = self.status(order)
        identity = self.identity(order)
        order_key = self.key("order", order_id)
        channel_ref = clean(order.get("sourceReferenceId")) or None
        links = {"order_key": order_key, "order_number": number, "channel_order_ref": channel_ref}
        channel = clean(order.get("channelName")) or None
        events: list[Event] = []
        if items is not None:
            data = self.order_body(order, items, currency, status)
            data.update(order_key=order_key, order_number=number, placed_at=rfc3339(placed))
            data["channel_order_ref"] = channel_ref
            data["is_guest"] = identity["is_guest"]
            events.append(
                self.envelope(
                    "order.created",
                    "order",
                    order_id,
                    f"saleorder:{order_id}:created",
                    rfc3339(placed),
                    data,
                    source_ref=number,
                    identity=identity,
                    links=links,
                    channel=channel,
                )
            )
        events.append(
            self.envelope(
                "order.status_changed",
                "order",
                order_id,
                f"saleorder:{order_id}:status:{fingerprint(raw)}",
                rfc3339(seen_at),
                {"order_key": order_key, "to": status, "from": None, "source_status_raw": raw},
                quality="received_time",
                source_ref=number,
                identity=identity,
                links=links,
                channel=channel,
            )
        )
        return events

    def order_body(
        self,
        order: Mapping[str, Any],
        items: list[dict[str, Any]],
        currency: str,
        status: dict[str, str],
    ) -> dict[str, Any]:
        lines: list[dict[str, Any]] = []
        total = Decimal(0)
        tax = Decimal(0)
        discount = Decimal(0)
        for item in items:
            parent = item.get("parentId")
            sku_raw = item.get("itemSku")
            line: dict[str, Any] = {
                "line_key": str(item.get("lineId")),
                "sku": clean(sku_raw) or None,
                "sku_raw": sku_raw,
                "name": item.get("itemName"),
                "quantity": quantity(item.get("quantity"), normalise=False),
                "parent_line_key": str(parent) if parent else None,
            }
            if parent:
                # a kit component: the money is on its parent line (no double counting)
                line["is_component"] = True
            else:
                for name, source in (
                    ("unit_price", "displayPrice"),
                    ("line_subtotal", "displayLinePrice"),
                    ("line_discount", "displayLineDiscount"),
                    ("line_tax", "displayLineTax"),
                    ("line_total", "displayLineTotal"),
                ):
                    value = money(item.get(source), currency)
                    if value is not None:
                        line[name] = value
                total += decimal(item.get("displayLineTotal")) or Decimal(0)
                tax += decimal(item.get("displayLineTax")) or Decimal(0)
                discount += decimal(item.get("displayLineDiscount")) or Decimal(0)
            if clean(item.get("type")).lower() in {"service", "giftcard", "gift_card"}:
                line["is_non_stock"] = True
            lines.append(line)
        shipping = order.get("shipping")
        if not isinstance(shipping, dict):
            shipping = {}
        ship_cost = decimal(shipping.get("cost")) or Decimal(0)
        ship_tax = decimal(shipping.get("tax")) or Decimal(0)
        inclusive = bool(self.options["prices_include_tax"])
        grand = total + ship_cost + (Decimal(0) if inclusive else tax + ship_tax)
        body: dict[str, Any] = {
            "currency": currency,
            "lines": lines,
            "status": status,
            "tax_inclusive": inclusive,
            "totals": {
                "subtotal": money(total, currency),
                "discount": money(discount, currency),
                "shipping": money(ship_cost, currency),
                "tax": money(tax + ship_tax, currency),
                "grand_total": money(grand, currency),
                "tax_inclusive": inclusive,
            },
            "shipping": {
                "method": shipping.get("option"),
                "amount": money(ship_cost, currency),
                "tax": money(ship_tax, currency),
            },
        }
        payments = [p for p in order.get("payments") or [] if isinstance(p, dict)]
        paid = sum((decimal(p.get("amount")) or Decimal(0) for p in payments), Decimal(0))
        if payments and paid != grand:
            # flagged, never "fixed": the engine's total check opens the exception
            body["totals_check"] = {
                "computed_grand_total": money(grand, currency),
                "payments_total": money(paid, currency),
            }
        return body

    # customers, invoices, catalogue, stock
    def customer_event(self, customer: Mapping[str, Any], seen_at: datetime) -> Event | None:
        customer_id = customer.get("customerId")
        if not customer_id:
            self.warn("unreadable", "Customer without a customerId: skipped.", "")
            return None
        field_name = str(self.options.get("customer_email_field") or "email")
        raw = customer.get(field_name) or customer.get("email") or customer.get("emailAddress")
        email = lenient_email(raw)
        date_field = str(self.options["customer_date_field"])
        updated = parse_time(customer.get(date_field)) or parse_time(customer.get("createdAt"))
        quality = "exact" if updated else "received_time"
        at = rfc3339(updated or seen_at)
        name = customer.get("name")
        if not isinstance(name, dict):
            name = {}
        data = {
            "customer_key": self.key("customer", customer_id),
            "source_updated_at": at,
            "first_name": name.get("forename"),
            "last_name": name.get("surname"),
            "full_name": customer.get("fullName"),
            "account_code": customer.get("barcode"),
            "type": customer.get("type"),
            "source_status": customer.get("status"),
            "is_guest": False,
        }
        version = at if updated else fingerprint(data, email)
        return self.envelope(
            "customer.upserted",
            "customer",
            customer_id,
            f"customer:{customer_id}:{version}",
            at,
            data,
            quality=quality,
            updated_at=at,
            source_ref=str(customer.get("barcode") or "") or None,
            identity={
                "email": email,
                "email_raw": raw if email else None,
                "source_customer_id": str(customer_id),
                "is_guest": False,
                "quality": "email" if email else "none",
            },
        )

    def invoice_event(self, invoice: Mapping[str, Any]) -> Event | None:
        status = clean(invoice.get("status")).lower()
        order_id = invoice.get("saleOrderId")
        if status != "paid" or not order_id:
            return None
        issued = parse_time(invoice.get("issueDate"))
        if issued is None:
            return None
        invoice_id = invoice.get("invoiceId") or invoice.get("id") or fingerprint(invoice)
        order_key = self.key("order", order_id)
        number = str(invoice.get("saleOrderNiceId") or order_id)
        return self.envelope(
            "order.status_changed",
            "order",
            order_id,
            f"invoice:{invoice_id}:paid",
            rfc3339(issued),
            {
                "order_key": order_key,
                "to": {"financial": "paid"},
                "from": None,
                "source_status_raw": f"invoice {invoice_id} {status}",
            },
            quality="exact",
            source_ref=number,
            links={"order_key": order_key, "order_number": number},
        )

    def listing_event(self, listing: Mapping[str, Any], sweep: datetime) -> Event | None:
        sku_raw = listing.get("sku")
        sku = clean(sku_raw)
        listing_id = listing.get("listingId")
        if not sku or not listing_id:
            self.warn("unreadable", "Listing without a SKU or id: skipped.", str(listing_id or ""))
            return None
        packet = listing.get("data")
        if not isinstance(packet, dict):
            packet = {}
        variants = packet.get("variantListingIds") or []
        active = listing.get("listToChannel", True) is not False and listing.get("status", 0) == 0
        item_id = listing.get("itemId") or listing_id
        data: dict[str, Any] = {
            "sku": sku,
            "sku_raw": sku_raw,
            "product_key": self.key("product", item_id),
            "status": "active" if active else "inactive",
            "name": listing.get("name"),
            "listing_id": listing_id,
            "is_variant_parent": bool(variants) or listing.get("type") == 3,
            "variant_listing_ids": list(variants),
        }
        price = money(listing.get("salePrice"), clean(listing.get("saleCurrency")) or "GBP")
        if price is not None:
            data["price"] = price
        if packet.get("description"):
            data["description"] = packet["description"]
        at = rfc3339(sweep)
        return self.envelope(
            "product.updated",
            "product",
            item_id,
            f"listing:{listing_id}:{at}",
            at,
            data,
            quality="received_time",
            source_ref=sku,
        )

    def stock_event(self, record: Mapping[str, Any], sweep: datetime) -> Event | None:
        sku = clean(record.get("itemSku"))
        on_hand = decimal(record.get("onHand"))
        bin_key = record.get("binId") or f"{record.get('locationName')}/{record.get('binName')}"
        if not sku or on_hand is None:
            self.warn("unreadable", "Inventory record without a SKU or onHand: skipped.", sku)
            return None
        if on_hand != on_hand.to_integral_value():
            self.warn("fractional_stock", f"Fractional onHand {on_hand} for {sku}: skipped.", sku)
            return None
        held = decimal(record.get("allocated"))
        allocated = int(held) if held is not None and held == held.to_integral_value() else None
        at = rfc3339(sweep)
        name = " / ".join(str(p) for p in (record.get("locationName"), record.get("binName")) if p)
        return self.envelope(
            "stock.changed",
            "stock",
            f"{record.get('itemId') or sku}@{bin_key}",
            f"inventory:{record.get('itemId') or sku}:{bin_key}:{at}",
            at,
            {
                "sku": sku,
                "sku_raw": record.get("itemSku"),
                "location": {"key": str(bin_key), "name": name or None},
                # Stokly's record gives what is in the bin only: saleable is derived from it
                # (less an allocation when the record carries one), and flagged so.
                "quantities": {
                    "on_hand": int(on_hand),
                    "allocated": allocated,
                    "saleable": int(on_hand) - (allocated or 0),
                    "quarantined": None,
                    "incoming": None,
                },
                "derived": ["saleable"],
                "as_of": at,
                "mode": "snapshot",
            },
            quality="received_time",
            source_ref=sku,
        )
