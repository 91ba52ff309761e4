"""OrderWise rows and legacy XML → canonical events (pure: no HTTP, no database): the columns
the setup page's SQL returns, server times read in the tenant's zone, the connection's status
map applied (README.md)."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import groupby
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from connectors.sources.base import (
    Event,
    ItemError,
    SourceError,
    WebhookItems,
)
from connectors.sources.values import (
    clean,
    decimal,
    fingerprint,
    lenient_email,
    money,
    parse_dotnet,
    quantity,
    rfc3339,
)

SYSTEM = "orderwise"
NAMESPACE = uuid.UUID("6f1c1b4e-2f7a-4b0e-9a51-5d1f3c2b7a10")  # eventgen's, so ids agree
DEFAULTS: dict[str, Any] = {
    "auth": "token",  # or "basic": Basic credentials on every call
    "time_zone": "Europe/London",
    "export_path": "/ExportDefinition/{id}",
    "page_size": 500,
    "lookback_minutes": 60,
    "export_window_minutes": 1440,
    "requests_per_minute": 60,  # self-hosted, no documented limit: be gentle with the tenant's server
    "currency": "GBP",
    "legacy_order_number_is": "channel_order_ref",
}
LOCAL_FORMATS = ("%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S.%f",
                 "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%d/%m/%Y %H:%M:%S",
                 "%d/%m/%Y %H:%M")  # fmt: skip
DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y")
CANONICAL_STATUS = {
    "lifecycle": {"open", "on_hold", "cancelled", "closed"},
    "fulfilment": {"unfulfilled", "backordered", "processing", "partially_dispatched", "dispatched"},
    "financial": {"unknown", "pending", "authorised", "paid", "partially_refunded", "refunded", "voided"},
}  # fmt: skip


# -- values ----------------------------------------------------------------------------------


def _read_time(text: str) -> tuple[datetime | None, bool]:
    """A time as written, and whether it is a date only."""
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt), True
        except ValueError:
            continue
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")), False
    except ValueError:
        pass
    for fmt in LOCAL_FORMATS:
        try:
            return datetime.strptime(text, fmt), False
        except ValueError:
            continue
    return None, False


def parse_local(value: Any, zone: ZoneInfo) -> tuple[datetime | None, str]:
    """A server time as aware UTC, and its quality.

    Naive times are the OrderWise server's local time (``GETDATE()``), read in the tenant's zone;
    in the repeated hour of a clock change the first (summer-time) reading is taken."""
    if isinstance(value, datetime):
        moment: datetime | None = value
        date_only = False
    elif isinstance(value, date):
        moment, date_only = datetime.combine(value, datetime.min.time()), True
    elif isinstance(value, str) and value.strip():
        dotnet = parse_dotnet(value.strip())
        if dotnet:
            return dotnet, "exact"
        moment, date_only = _read_time(value.strip())
    else:
        return None, ""
    if moment is None:
        return None, ""
    if moment.tzinfo is not None:
        return moment.astimezone(UTC), "exact"
    local = moment.replace(tzinfo=zone, fold=0).astimezone(UTC)
    return local, "date_only" if date_only else "source_local_tz"


def tenant_zone(options: Mapping[str, Any]) -> ZoneInfo:
    name = str(options.get("time_zone") or DEFAULTS["time_zone"])
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SourceError(
            f"Unknown time zone {name!r} on this connection.", permanent=True
        ) from exc


# -- mapping ---------------------------------------------------------------------------------


@dataclass
class Mapper:
    account: str
    options: Mapping[str, Any]
    zone: ZoneInfo
    warnings: list[dict[str, str]] = field(default_factory=list)
    #: the window's start (the stream's last mark less the look-back); None on a first round
    since: datetime | None = None

    def warn(self, code: str, message: str, subject: str) -> None:
        self.warnings.append({"code": code, "message": message, "subject": subject})

    def key(self, entity: str, source_id: Any) -> str:
        return f"{SYSTEM}:{self.account}:{entity}:{source_id}"

    @property
    def currency(self) -> str:
        return str(self.options.get("currency") or DEFAULTS["currency"])

    def time(self, value: Any) -> tuple[datetime | None, str]:
        return parse_local(value, self.zone)

    def when(self, value: Any, fallback: datetime) -> tuple[datetime, str]:
        """The time of `value`, or `fallback` (when we saw it) with that quality."""
        moment, quality = parse_local(value, self.zone)
        return (moment, quality) if moment is not None else (fallback, "received_time")

    def envelope(
        self,
        event_type: str,
        entity: str,
        source_id: Any,
        source_event_id: str,
        occurred: tuple[datetime, str],
        data: dict[str, Any],
        *,
        updated_at: datetime | None = None,
        source_ref: str | None = None,
        identity: dict[str, Any] | None = None,
        links: dict[str, Any] | None = None,
    ) -> Event:
        sid = f"{SYSTEM}:{source_event_id}"
        event: Event = {
            "schema": "sync.event/v1",
            "event_type": event_type,
            "event_id": str(uuid.uuid5(NAMESPACE, f"{SYSTEM}|{self.account}|{event_type}|{sid}")),
            "source": {"system": SYSTEM, "account": self.account, "channel": None, "via": None},
            "source_event_id": sid,
            "source_event_id_kind": "derived",
            "occurred_at": rfc3339(occurred[0]),
            "occurred_at_quality": occurred[1] or "received_time",
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
        if updated_at is not None:
            event["source_updated_at"] = rfc3339(updated_at)
        return event

    def status(self, raw: Any, subject: str) -> dict[str, str] | None:
        """The canonical status of an ``os_description`` by the tenant's table; None when unknown."""
        text = clean(raw)
        table: Mapping[str, Any] = self.options.get("status_map") or {}
        lookup = {clean(k).casefold(): v for k, v in table.items()}
        mapped = lookup.get(text.casefold())
        if not isinstance(mapped, dict) or not mapped:
            self.warn(
                "unknown_status",
                f"OrderWise status {text!r} is not in this connection's status map: nothing "
                "changed. Add it to the map.",
                subject,
            )
            return None
        status = {k: str(v) for k, v in mapped.items() if v in CANONICAL_STATUS.get(k, ())}
        if len(status) != len(mapped):
            self.warn("unknown_status", f"Status map entry for {text!r} is not canonical.", subject)
            return None
        return status

    def is_shared_account(self, row: Mapping[str, Any]) -> bool:
        shared = {clean(v).casefold() for v in self.options.get("shared_customer_ids") or []}
        return bool(shared) and bool(
            {clean(row.get("cu_id")).casefold(), clean(row.get("cu_account")).casefold()} & shared
        )

    def identity(self, row: Mapping[str, Any]) -> dict[str, Any]:
        raw = row.get("contact_email")
        email = lenient_email(raw)
        guest = self.is_shared_account(row)
        customer = None if guest else (clean(row.get("cu_id")) or None)
        return {
            "email": email,
            "email_raw": raw if email else None,
            "source_customer_id": customer,
            "is_guest": guest,
            "quality": "email" if email else "none",
        }

    def order_key(self, number: Any) -> str:
        return self.key("order", clean(number))

    # -- streams
    def orders(self, rows: list[dict[str, Any]], seen: datetime) -> list[Event]:
        events: list[Event] = []
        for _, grouped in groupby(rows, key=lambda r: r.get("row_id")):
            events.extend(self.order(list(grouped), seen))
        return events

    def order(self, rows: list[dict[str, Any]], seen: datetime) -> list[Event]:
        """One order's events, from its rows: one per line, each with the order's columns."""
        head = rows[0]
        number = clean(head.get("oh_order_number")) or clean(head.get("row_id"))
        placed = self.time(head.get("oh_datetime"))
        amended = self.time(head.get("amended"))
        if placed[0] is None:
            self.warn("unreadable", "Order without a readable oh_datetime: skipped.", number)
            return []
        currency = clean(head.get("currency_code")) or self.currency
        order_key = self.order_key(number)
        ref = clean(head.get("oh_cust_order_ref")) or None
        links = {"order_key": order_key, "order_number": number, "channel_order_ref": ref}
        identity = self.identity(head)
        status = self.status(head.get("os_description"), number)
        lines, gross_sum = self.order_lines(rows, currency)
        totals = {
            "subtotal": money(gross_sum, currency) if lines else None,
            "shipping": money(head.get("oh_delivery_gross"), currency),
            "tax": money(head.get("oh_tax"), currency),
            "grand_total": money(head.get("oh_gross"), currency),
            "tax_inclusive": True,
        }
        if totals["grand_total"] is None:
            self.warn("unreadable", "Order without oh_gross: skipped.", number)
            return []
        data = {
            "order_key": order_key,
            "order_number": number,
            "channel_order_ref": ref,
            "placed_at": rfc3339(placed[0]),
            "currency": currency,
            "lines": lines,
            "totals": {k: v for k, v in totals.items() if v is not None},
            "status": status or {},
            "source_status_raw": clean(head.get("os_description")),
            "is_guest": identity["is_guest"],
            "tax_inclusive": True,
        }
        common: dict[str, Any] = {"source_ref": number, "identity": identity, "links": links}
        row_id = head.get("row_id")
        events = [
            self.envelope(
                "order.created",
                "order",
                number,
                f"order:{row_id}:created",
                (placed[0], placed[1]),
                data,
                updated_at=amended[0],
                **common,
            )
        ]
        if amended[0] is not None and self.since is not None and placed[0] < self.since:
            # Placed before this window: an earlier round read it, so this is an amendment
            # (lines, money): order.created would be a duplicate and change nothing.
            revision = rfc3339(amended[0])
            events.append(
                self.envelope(
                    "order.updated",
                    "order",
                    number,
                    f"order:{row_id}:updated:{revision}",
                    (amended[0], amended[1]),
                    {**data, "revision": revision},
                    updated_at=amended[0],
                    **common,
                )
            )
        if status is not None:
            events.append(self.order_status_changed(head, number, status, seen, amended[0], common))
        if identity["is_guest"] and identity["email"]:
            events.append(self.guest(identity, head, placed[0]))
        return events

    def order_lines(
        self, rows: list[dict[str, Any]], currency: str
    ) -> tuple[list[dict[str, Any]], Decimal | None]:
        """The order's lines, and the sum of their gross (None when a line has none)."""
        # Gross throughout (tax-inclusive): the gross columns add up by themselves, whichever
        # way OrderWise splits VAT between the lines and the delivery charge.
        lines = []
        gross_sum: Decimal | None = Decimal(0)
        for row in rows:
            if row.get("ol_id") is None and row.get("vad_variant_code") is None:
                continue
            sku_raw = row.get("vad_variant_code")
            ordered = quantity(row.get("ol_quantity"))
            line = {
                "line_key": clean(row.get("ol_id")),
                "sku": clean(sku_raw) or None,
                "sku_raw": sku_raw,
                "name": row.get("vad_description"),
                "quantity": ordered,
            }
            gross = decimal(row.get("ol_gross"))
            count = decimal(ordered)
            unit = row.get("ol_unit_price")
            if gross is not None and count:
                unit = gross / count
            for name, value in (
                ("unit_price", unit),
                ("line_subtotal", gross),
                ("line_tax", row.get("ol_tax")),
                ("line_total", gross),
            ):
                amount = money(value, currency)
                if amount is not None:
                    line[name] = amount
            gross_sum = gross_sum + gross if gross is not None and gross_sum is not None else None
            lines.append(line)
        return lines, gross_sum

    def order_status_changed(
        self,
        head: Mapping[str, Any],
        number: str,
        status: dict[str, str],
        seen: datetime,
        amended_at: datetime | None,
        common: dict[str, Any],
    ) -> Event:
        when = self.when(head.get("amended"), seen)
        raw = clean(head.get("os_description"))
        return self.envelope(
            "order.status_changed",
            "order",
            number,
            f"order:{head.get('row_id')}:status:{raw.casefold()}:{rfc3339(when[0])}",
            when,
            {
                "order_key": self.order_key(number),
                "to": status,
                "from": None,
                "source_status_raw": raw,
            },
            updated_at=amended_at,
            **common,
        )

    def guest(self, identity: dict[str, Any], row: Mapping[str, Any], at: datetime) -> Event:
        """A web order on the shared account: the person is the order's contact, keyed by email."""
        email = identity["email"]
        return self.envelope(
            "customer.upserted",
            "customer",
            f"email:{email}",
            f"guest:{fingerprint(email)}:{row.get('row_id')}",
            (at, "source_local_tz"),
            {
                "customer_key": self.key("customer", f"email:{email}"),
                "source_updated_at": rfc3339(at),
                "first_name": row.get("contact_first_name"),
                "last_name": row.get("contact_last_name"),
                "is_guest": True,
            },
            updated_at=at,
            identity=identity,
        )

    def deliveries(self, rows: list[dict[str, Any]], seen: datetime) -> list[Event]:
        events: list[Event] = []
        for _, grouped in groupby(rows, key=lambda r: r.get("row_id")):
            group = list(grouped)
            head = group[0]
            delivery = clean(head.get("dh_number")) or clean(head.get("row_id"))
            number = clean(head.get("oh_order_number"))
            when = self.time(head.get("dh_datetime"))
            if when[0] is None or not number:
                self.warn("unreadable", "Delivery without dh_datetime or order number.", delivery)
                continue
            consignment = clean(head.get("dh_consignment_number"))
            url = None
            if consignment and (
                head.get("cod_tracking_url_prefix") or head.get("cod_tracking_url_suffix")
            ):
                url = f"{clean(head.get('cod_tracking_url_prefix'))}{consignment}{clean(head.get('cod_tracking_url_suffix'))}"
            shipment_key = self.key("shipment", f"{number}-{delivery}")
            links = {
                "order_key": self.order_key(number),
                "order_number": number,
                "channel_order_ref": clean(head.get("oh_cust_order_ref")) or None,
            }
            carrier = clean(head.get("courier_name")) or None
            data = {
                "shipment_key": shipment_key,
                "order_key": self.order_key(number),
                "dispatched_at": rfc3339(when[0]),
                "lines": [
                    {
                        "sku": clean(r.get("vad_variant_code")) or None,
                        "quantity": quantity(r.get("dl_quantity")),
                    }
                    for r in group
                    if r.get("vad_variant_code") is not None
                ],
                "tracking_numbers": [consignment] if consignment else [],
                "tracking_urls": [url] if url else [],
                "carrier": {"code": carrier, "name": carrier} if carrier else None,
            }
            common: dict[str, Any] = {"source_ref": number, "links": links}
            events.append(
                self.envelope(
                    "shipment.dispatched",
                    "shipment",
                    f"{number}-{delivery}",
                    f"delivery:{head.get('row_id')}:dispatched",
                    (when[0], when[1]),
                    data,
                    **common,
                )
            )
            if consignment:
                events.append(
                    self.envelope(
                        "shipment.tracking_updated",
                        "shipment",
                        f"{number}-{delivery}",
                        f"delivery:{head.get('row_id')}:tracking:{consignment}",
                        self.when(head.get("amended"), seen),
                        {
                            "shipment_key": shipment_key,
                            "tracking_numbers": [consignment],
                            "tracking_urls": [url] if url else [],
                            "carrier": data["carrier"],
                        },
                        **common,
                    )
                )
        return events

    def credit_notes(self, rows: list[dict[str, Any]], seen: datetime) -> list[Event]:
        events: list[Event] = []
        for _, grouped in groupby(rows, key=lambda r: r.get("row_id")):
            group = list(grouped)
            head = group[0]
            note = clean(head.get("cn_number")) or clean(head.get("row_id"))
            number = clean(head.get("oh_order_number"))
            when = self.time(head.get("cn_datetime"))
            currency = clean(head.get("currency_code")) or self.currency
            amount = decimal(head.get("cn_gross"))
            if when[0] is None or not number or amount is None:
                self.warn(
                    "unreadable", "Credit note without date, order or cn_gross: skipped.", note
                )
                continue
            events.append(
                self.envelope(
                    "refund.issued",
                    "refund",
                    note,
                    f"credit_note:{head.get('row_id')}",
                    (when[0], when[1]),
                    {
                        "refund_key": self.key("refund", note),
                        "order_key": self.order_key(number),
                        "refunded_at": rfc3339(when[0]),
                        "amount": money(abs(amount), currency),
                        "reason": head.get("cn_reason"),
                        "credit_note_number": note,
                        "lines": [
                            {
                                "sku": clean(r.get("vad_variant_code")) or None,
                                "quantity": quantity(r.get("cnl_quantity")),
                                "amount": money(r.get("cnl_gross"), currency),
                            }
                            for r in group
                            if r.get("vad_variant_code") is not None
                        ],
                    },
                    source_ref=number,
                    identity=self.identity(head),
                    links={"order_key": self.order_key(number), "order_number": number},
                )
            )
        return events

    def customers(self, rows: list[dict[str, Any]], seen: datetime) -> list[Event]:
        events: list[Event] = []
        for row in rows:
            if self.is_shared_account(row):
                continue  # the web store's shared account is not a person
            customer = clean(row.get("cu_id")) or clean(row.get("row_id"))
            amended = self.time(row.get("amended"))
            at = self.when(row.get("amended"), seen)
            identity = self.identity(row)
            contact = clean(row.get("contact_id"))
            data = {
                "customer_key": self.key("customer", customer),
                "source_updated_at": rfc3339(at[0]),
                "first_name": row.get("contact_first_name"),
                "last_name": row.get("contact_last_name"),
                "company": row.get("cu_name"),
                "account_code": row.get("cu_account"),
                "is_guest": False,
            }
            version = rfc3339(amended[0]) if amended[0] else fingerprint(data, identity)
            events.append(
                self.envelope(
                    "customer.upserted",
                    "customer",
                    customer,
                    f"customer:{customer}:{contact}:{version}",
                    at,
                    data,
                    updated_at=at[0],
                    source_ref=clean(row.get("cu_account")) or None,
                    identity=identity,
                )
            )
        return events

    def products(self, rows: list[dict[str, Any]], seen: datetime) -> list[Event]:
        events: list[Event] = []
        for row in rows:
            sku_raw = row.get("vad_variant_code")
            sku = clean(sku_raw)
            if not sku:
                self.warn(
                    "unreadable",
                    "Variant without vad_variant_code: skipped.",
                    clean(row.get("row_id")),
                )
                continue
            amended = self.time(row.get("amended"))
            at = self.when(row.get("amended"), seen)
            active = str(row.get("vad_active", "1")).strip().lower() not in {
                "0",
                "false",
                "n",
                "no",
            }
            data: dict[str, Any] = {
                "sku": sku,
                "sku_raw": sku_raw,
                "product_key": self.key("product", clean(row.get("row_id"))),
                "status": "active" if active else "inactive",
                "name": row.get("vad_description"),
            }
            price = money(
                row.get("vafp_rsp_exc_vat"), clean(row.get("currency_code")) or self.currency
            )
            if price is not None:
                data["price"] = price
                data["price_includes_tax"] = False
            if "~" in sku or "," in sku:
                self.warn(
                    "sku_separator",
                    f"SKU {sku!r} holds '~' or ',' (the legacy push's separators).",
                    sku,
                )
            version = rfc3339(amended[0]) if amended[0] else fingerprint(data)
            events.append(
                self.envelope(
                    "product.updated",
                    "product",
                    clean(row.get("row_id")),
                    f"variant:{row.get('row_id')}:{version}",
                    at,
                    data,
                    updated_at=at[0],
                    source_ref=sku,
                )
            )
        return events

    def stock(self, rows: list[dict[str, Any]], seen: datetime) -> list[Event]:
        events: list[Event] = []
        for row in rows:
            sku = clean(row.get("vad_variant_code"))
            location = clean(row.get("location_code")) or "default"
            counts = {}
            for name, column in (
                ("on_hand", "on_hand"),
                ("allocated", "allocated"),
                ("saleable", "free_stock"),
            ):
                value = decimal(row.get(column))
                counts[name] = (
                    int(value) if value is not None and value == value.to_integral_value() else None
                )
            if not sku or counts["on_hand"] is None and counts["saleable"] is None:
                self.warn("unreadable", "Stock row without SKU or quantities: skipped.", sku)
                continue
            at = self.when(row.get("amended"), seen)
            events.append(
                self.envelope(
                    "stock.changed",
                    "stock",
                    f"{sku}@{location}",
                    f"stock:{row.get('row_id')}:{location}:{rfc3339(at[0])}",
                    at,
                    {
                        "sku": sku,
                        "sku_raw": row.get("vad_variant_code"),
                        "location": {"key": location, "name": row.get("location_name")},
                        "quantities": {**counts, "quarantined": None, "incoming": None},
                        "as_of": rfc3339(at[0]),
                        "mode": "snapshot",
                    },
                    source_ref=sku,
                )
            )
        return events

    # -- the legacy push
    def legacy(self, document: ET.Element, received: datetime, items: WebhookItems) -> None:
        by_ref = str(self.options.get("legacy_order_number_is")) != "order_number"
        for index, order in enumerate(document.iter("order")):
            number = clean(order.findtext("orderNo"))
            if not number:
                items.errors.append(ItemError(index, [{"path": "orderNo", "message": "is empty"}]))
                continue
            order_key = self.key("order", f"ref:{number}") if by_ref else self.order_key(number)
            links: dict[str, Any] = {"order_key": order_key}
            links["channel_order_ref" if by_ref else "order_number"] = number
            raw = clean(order.findtext("orderStatus"))
            if raw:
                before = len(self.warnings)
                status = self.status(raw, number)
                if status is None:
                    message = (
                        self.warnings[before]["message"] if len(self.warnings) > before else ""
                    )
                    items.errors.append(
                        ItemError(index, [{"path": "orderStatus", "message": message}])
                    )
                else:
                    self._add(
                        items,
                        index,
                        self.envelope(
                            "order.status_changed",
                            "order",
                            number,
                            f"legacy:{number}:status:{raw.casefold()}",
                            (received, "received_time"),
                            {
                                "order_key": order_key,
                                "to": status,
                                "from": None,
                                "source_status_raw": raw,
                            },
                            source_ref=number,
                            links=links,
                        ),
                    )
            for delivery in _deliveries(order):
                self._legacy_delivery(items, index, number, order_key, links, delivery, received)

    def _legacy_delivery(
        self,
        items: WebhookItems,
        index: int,
        number: str,
        order_key: str,
        links: dict[str, Any],
        delivery: ET.Element,
        received: datetime,
    ) -> None:
        delivery_no = clean(delivery.findtext("deliveryNumber"))
        if not delivery_no:
            return
        occurred = self.when(delivery.findtext("deliveryDate"), received)
        consignments = [clean(c.text) for c in delivery.iter("consignmentNumber") if clean(c.text)]
        carrier = clean(delivery.findtext("courierName")) or None
        shipment = f"{number}-{delivery_no}"
        shipment_key = self.key("shipment", shipment)
        self._add(
            items,
            index,
            self.envelope(
                "shipment.dispatched",
                "shipment",
                shipment,
                f"legacy:{number}:delivery:{delivery_no}:dispatched",
                occurred,
                {
                    "shipment_key": shipment_key,
                    "order_key": order_key,
                    "dispatched_at": rfc3339(occurred[0]),
                    "lines": [],  # the push names no lines
                    "tracking_numbers": consignments,
                    "carrier": {"code": carrier, "name": carrier} if carrier else None,
                },
                source_ref=number,
                links=links,
            ),
        )
        if consignments:
            self._add(
                items,
                index,
                self.envelope(
                    "shipment.tracking_updated",
                    "shipment",
                    shipment,
                    f"legacy:{number}:delivery:{delivery_no}:tracking:{'|'.join(consignments)}",
                    (received, "received_time"),
                    {"shipment_key": shipment_key, "tracking_numbers": consignments},
                    source_ref=number,
                    links=links,
                ),
            )

    @staticmethod
    def _add(items: WebhookItems, index: int, event: Event) -> None:
        items.events.append(event)
        items.positions.append(index)


def _deliveries(order: ET.Element) -> list[ET.Element]:
    """``deliveries/delivery/…`` or one ``deliveries`` element per delivery (both are seen)."""
    found: list[ET.Element] = []
    for block in order.findall("deliveries"):
        children = block.findall("delivery")
        found.extend(children if children else [block])
    return found
