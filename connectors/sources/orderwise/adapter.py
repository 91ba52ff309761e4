"""OrderWise (UK ERP/WMS, customer-hosted): a poller of API Export Definitions, and the legacy push.

What is public (../shared/reference/sources.md §7, [3p] and [code]): each customer runs its own
instance (a base URL containing ``OWAPI``/``AWAPI``); Basic credentials, either on every call or
exchanged at ``GET …/token/gettoken`` for a bearer token; keyset paging by ``limit`` + ``last_id``;
and, as the change feed, **API Export Definitions**: admin-authored SQL run by id and polled. Their
times are the server's local time. No payload is public, so the columns are **ours**: the SQL on the
setup page (templates/connectors/setup/orderwise.html) returns, for every definition,

- ``row_id``: an ascending integer key (``oh_id``, ``dh_id``…), the keyset;
- ``amended``: when the row last changed, server local time;
- the stream's columns below (OrderWise's own names where sources.md lists them).

| stream | one row per | events |
|---|---|---|
| orders | order line | ``order.created``, ``order.status_changed`` (through the status map), a guest ``customer.upserted`` |
| deliveries | delivery line | ``shipment.dispatched``; ``shipment.tracking_updated`` once a consignment number appears |
| credit_notes | credit note line | ``refund.issued`` |
| customers | customer contact | ``customer.upserted`` (shared web accounts skipped: they are not people) |
| products | variant | ``product.updated`` |
| stock | variant × location | ``stock.changed`` (snapshot) |

Each poll reads one page of one stream: ``GET {base_url}{export_path}`` with ``limit``, ``last_id``
and ``since`` (watermark less the look-back, server local time). The adapter applies the keyset and
the window itself too, so a definition that ignores the parameters still pages correctly.

The **legacy e-commerce push** (`parse_webhook`): the session POSTs the form field ``ExportData=``
carrying XML (``order/orderNo``, ``orderStatus``, ``deliveries/…/deliveryNumber|deliveryDate|
courierName|consignmentNumbers``).

Statuses (``os_description``) are per tenant: ``options["status_map"]``. An unknown status changes
nothing: no status event, and a warning (`OrderwisePage.warnings` when polled, an item error when
pushed) for the engine to raise as an alert.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import groupby
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests

from connectors.budget import Lane, RateBudget, TierLimit
from connectors.models import Connection
from connectors.sources.base import (
    Event,
    ItemError,
    Page,
    Setting,
    SourceAdapter,
    SourceError,
    WebhookItems,
    WebhookRequestData,
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
TIMEOUT = (5.0, 120.0)  # a self-hosted SQL export can be slow
STREAMS = ("products", "customers", "orders", "deliveries", "credit_notes", "stock")
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


class RateLimited(SourceError):
    """The source or our shared budget says wait `retry_after` seconds (transient)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, permanent=False)
        self.retry_after = retry_after


@dataclass
class OrderwisePage(Page):
    """A page, plus what the engine should raise as alerts: ``{"code", "message", "subject"}``.

    Codes: ``unknown_status`` (not in the status map: nothing changed), ``window_gap`` (longer since
    the last poll than the export definition's window: changes may be missed, run a backfill),
    ``oversized_order`` (one order has more lines than a page), ``unreadable`` (a row skipped)."""

    warnings: list[dict[str, str]] = field(default_factory=list)


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


def _zone(options: Mapping[str, Any]) -> ZoneInfo:
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
            lines_rows = list(grouped)
            head = lines_rows[0]
            number = clean(head.get("oh_order_number")) or clean(head.get("row_id"))
            placed = self.time(head.get("oh_datetime"))
            amended = self.time(head.get("amended"))
            if placed[0] is None:
                self.warn("unreadable", "Order without a readable oh_datetime: skipped.", number)
                continue
            currency = clean(head.get("currency_code")) or self.currency
            order_key = self.order_key(number)
            ref = clean(head.get("oh_cust_order_ref")) or None
            links = {"order_key": order_key, "order_number": number, "channel_order_ref": ref}
            identity = self.identity(head)
            status = self.status(head.get("os_description"), number)
            # Gross throughout (tax-inclusive): the gross columns add up by themselves, whichever
            # way OrderWise splits VAT between the lines and the delivery charge.
            lines = []
            gross_sum: Decimal | None = Decimal(0)
            for row in lines_rows:
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
                gross_sum = (
                    gross_sum + gross if gross is not None and gross_sum is not None else None
                )
                lines.append(line)
            totals = {
                "subtotal": money(gross_sum, currency) if lines else None,
                "shipping": money(head.get("oh_delivery_gross"), currency),
                "tax": money(head.get("oh_tax"), currency),
                "grand_total": money(head.get("oh_gross"), currency),
                "tax_inclusive": True,
            }
            if totals["grand_total"] is None:
                self.warn("unreadable", "Order without oh_gross: skipped.", number)
                continue
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
            events.append(
                self.envelope(
                    "order.created",
                    "order",
                    number,
                    f"order:{head.get('row_id')}:created",
                    (placed[0], placed[1]),
                    data,
                    updated_at=amended[0],
                    **common,
                )
            )
            if amended[0] is not None and self.since is not None and placed[0] < self.since:
                # Placed before this window: an earlier round read it, so this is an amendment
                # (lines, money): order.created would be a duplicate and change nothing.
                revision = rfc3339(amended[0])
                events.append(
                    self.envelope(
                        "order.updated",
                        "order",
                        number,
                        f"order:{head.get('row_id')}:updated:{revision}",
                        (amended[0], amended[1]),
                        {**data, "revision": revision},
                        updated_at=amended[0],
                        **common,
                    )
                )
            if status is not None:
                when = self.when(head.get("amended"), seen)
                raw = clean(head.get("os_description"))
                events.append(
                    self.envelope(
                        "order.status_changed",
                        "order",
                        number,
                        f"order:{head.get('row_id')}:status:{raw.casefold()}:{rfc3339(when[0])}",
                        when,
                        {
                            "order_key": order_key,
                            "to": status,
                            "from": None,
                            "source_status_raw": raw,
                        },
                        updated_at=amended[0],
                        **common,
                    )
                )
            if identity["is_guest"] and identity["email"]:
                events.append(self.guest(identity, head, placed[0]))
        return events

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


# -- the HTTP side ---------------------------------------------------------------------------

_TOKENS: dict[int | None, str] = {}


class OrderwiseAPI:
    def __init__(
        self,
        connection: Connection,
        session: requests.Session | None = None,
        clock: Any = time.time,
    ) -> None:
        self.connection = connection
        self.options = {**DEFAULTS, **(connection.options or {})}
        self.credentials: dict[str, Any] = dict(connection.credentials or {})
        self.base = str(self.options.get("base_url") or "").rstrip("/")
        if not self.base:
            raise SourceError("Set the OrderWise base URL (options: base_url).", permanent=True)
        self.session = session or requests.Session()
        self.clock = clock
        self.budget = RateBudget(
            f"orderwise:{connection.pk}",
            {"api": TierLimit(int(self.options["requests_per_minute"]), 60.0)},
            clock=clock,
        )

    def __enter__(self) -> OrderwiseAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    def _basic(self) -> str:
        user = str(self.credentials.get("username") or "")
        password = str(self.credentials.get("password") or "")
        if not user:
            raise SourceError("No OrderWise API user: set username and password.", permanent=True)
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def _authorization(self, fresh: bool = False) -> str:
        if self.options["auth"] == "basic":
            return self._basic()
        token = None if fresh else _TOKENS.get(self.connection.pk)
        if token is None:
            response = self._send(
                "GET", "/token/gettoken", headers={"Authorization": self._basic()}
            )
            if response.status_code in (401, 403):
                raise SourceError("OrderWise refused the API user's credentials.", permanent=True)
            self._raise_for_status(response, "/token/gettoken")
            token = response.text.strip().strip('"')
            if not token:
                raise SourceError("OrderWise answered an empty token.")
            _TOKENS[self.connection.pk] = token
        return f"Bearer {token}"

    def _send(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
              headers: Mapping[str, str] | None = None) -> requests.Response:  # fmt: skip
        grant = self.budget.acquire("api", Lane.BULK)
        if not grant:
            raise RateLimited(
                f"OrderWise rate budget spent: next call in {grant.wait:.0f} s.", grant.wait
            )
        try:
            return self.session.request(
                method,
                self.base + path,
                params=params,
                headers=dict(headers or {}),
                timeout=TIMEOUT,
            )
        except requests.RequestException as exc:
            raise SourceError(f"OrderWise {path}: {type(exc).__name__}") from exc

    def _raise_for_status(self, response: requests.Response, path: str) -> None:
        status = response.status_code
        if status < 400:
            return
        if status == 429 or status == 503 and response.headers.get("Retry-After"):
            retry = decimal(response.headers.get("Retry-After")) or Decimal(60)
            self.budget.block("api", float(retry))
            raise RateLimited(f"OrderWise {path}: {status}, retry in {retry} s.", float(retry))
        raise SourceError(
            f"OrderWise {path} answered {status}: {response.text[:200]}",
            permanent=400 <= status < 500 and status != 408,
        )

    def get(self, path: str, params: Mapping[str, Any]) -> Any:
        headers = {"Accept": "application/json", "Authorization": self._authorization()}
        response = self._send("GET", path, params=params, headers=headers)
        if response.status_code == 401 and self.options["auth"] != "basic":
            _TOKENS.pop(self.connection.pk, None)  # the token expired: one fresh token, one retry
            headers["Authorization"] = self._authorization(fresh=True)
            response = self._send("GET", path, params=params, headers=headers)
        if response.status_code == 401:
            raise SourceError("OrderWise rejected the API user.", permanent=True)
        self._raise_for_status(response, path)
        try:
            return json.loads(response.content, parse_float=Decimal)
        except ValueError as exc:
            raise SourceError(
                f"OrderWise {path} answered {response.status_code} with no JSON"
            ) from exc


def _rows(document: Any) -> list[dict[str, Any]]:
    """An export's rows: a JSON list, or the one list inside an object (``data``, ``rows``…)."""
    if isinstance(document, dict):
        lists = [v for v in document.values() if isinstance(v, list)]
        document = lists[0] if len(lists) == 1 else None
    if not isinstance(document, list):
        raise SourceError("OrderWise export answered no list of rows.")
    return [r for r in document if isinstance(r, dict)]


def _row_id(row: Mapping[str, Any]) -> int | None:
    try:
        return int(str(row.get("row_id")).strip())
    except ValueError:
        return None


# -- the adapter -----------------------------------------------------------------------------


@dataclass
class Cursor:
    stream: str = STREAMS[0]
    last_id: int = 0
    marks: dict[str, str] = field(default_factory=dict)  # stream → newest `amended` seen (UTC)
    round_max: str | None = None
    polled: dict[str, str] = field(default_factory=dict)  # stream → when its last round ended

    @classmethod
    def load(cls, text: str) -> Cursor:
        if not text:
            return cls()
        try:
            cursor = cls(**json.loads(text))
        except (ValueError, TypeError) as exc:
            raise SourceError(f"Unreadable OrderWise cursor: {exc}", permanent=True) from exc
        if cursor.stream not in STREAMS:
            cursor.stream = STREAMS[0]
        return cursor

    def dump(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    def next_stream(self) -> bool:
        index = STREAMS.index(self.stream) + 1
        self.stream, self.last_id, self.round_max = STREAMS[index % len(STREAMS)], 0, None
        return index >= len(STREAMS)


class OrderwiseAdapter(SourceAdapter):
    kind = "orderwise"
    settings = (
        Setting(
            "base_url",
            "API address",
            "options",
            kind="url",
            guards_secrets=True,
            help_text="Your own OrderWise server's API, usually ending in /OWAPI or /AWAPI.",
        ),
        Setting("username", "API user", "credentials", help_text="A dedicated API user."),
        Setting("password", "Password", "credentials", secret=True),
    )
    can_poll = True

    #: tests replace these
    session_factory: Any = None
    clock: Any = staticmethod(time.time)

    def api(self, connection: Connection) -> OrderwiseAPI:
        session = self.session_factory() if self.session_factory else None
        return OrderwiseAPI(connection, session=session, clock=self.clock)

    def mapper(self, connection: Connection) -> Mapper:
        options = {**DEFAULTS, **(connection.options or {})}
        return Mapper(str(options.get("account") or connection.pk), options, _zone(options))

    def test_connection(self, connection: Connection) -> str:
        options = {**DEFAULTS, **(connection.options or {})}
        definitions = options.get("export_definitions") or {}
        if not definitions:
            raise SourceError(
                "No export definitions set (options: export_definitions).", permanent=True
            )
        stream, number = next(iter(definitions.items()))
        with self.api(connection) as api:
            rows = _rows(
                api.get(str(options["export_path"]).format(id=number), {"limit": 1, "last_id": 0})
            )
        return f"Connected to OrderWise: export definition {number} ({stream}) answered {len(rows)} row(s)."

    def poll(self, connection: Connection, cursor: str) -> Page:
        mapper = self.mapper(connection)
        state = Cursor.load(cursor)
        definitions: Mapping[str, Any] = mapper.options.get("export_definitions") or {}
        if not definitions:
            raise SourceError(
                "No export definitions set (options: export_definitions).", permanent=True
            )
        for _ in range(len(STREAMS)):
            if state.stream in definitions:
                break
            if state.next_stream():
                return OrderwisePage([], state.dump(), reached_present=True)
        with self.api(connection) as api:
            events, ended = self._read(api, mapper, state, definitions[state.stream])
        return OrderwisePage(events, state.dump(), reached_present=ended, warnings=mapper.warnings)

    def backfill(self, connection: Connection, start: datetime, end: datetime, cursor: str) -> Page:
        """History: the same definitions from an empty cursor (each from its first row)."""
        return self.poll(connection, cursor)

    def _read(
        self, api: OrderwiseAPI, mapper: Mapper, state: Cursor, definition: Any
    ) -> tuple[list[Event], bool]:
        options = mapper.options
        size = max(2, int(options["page_size"]))
        now = datetime.fromtimestamp(api.clock(), UTC)
        stream = state.stream
        lookback = timedelta(minutes=float(options["lookback_minutes"]))
        mark = datetime.fromisoformat(state.marks[stream]) if stream in state.marks else None
        since = mark - lookback if mark else None
        last_polled = state.polled.get(stream)
        window = timedelta(minutes=float(options["export_window_minutes"]))
        if (
            state.last_id == 0
            and last_polled
            and now - datetime.fromisoformat(last_polled) > window
        ):
            mapper.warn(
                "window_gap",
                f"Longer since the last poll of {stream} than its export definition's window "
                f"({window}): changes in between may be missed. Run a backfill.",
                stream,
            )
        params: dict[str, Any] = {"limit": size, "last_id": state.last_id}
        if since is not None:
            params["since"] = since.astimezone(mapper.zone).strftime("%Y-%m-%dT%H:%M:%S")
        raw_rows = _rows(api.get(str(options["export_path"]).format(id=definition), params))
        full = len(raw_rows) >= size
        rows = []
        for row in raw_rows:
            row_id = _row_id(row)
            if row_id is None:
                mapper.warn("unreadable", "Row without an integer row_id: skipped.", stream)
            elif row_id > state.last_id:
                rows.append(row)
        rows.sort(key=lambda r: _row_id(r) or 0)
        if full and rows:
            # the last id's rows may run on to the next page: read it whole next time
            last = _row_id(rows[-1])
            kept = [r for r in rows if _row_id(r) != last]
            if kept:
                rows = kept
            else:
                mapper.warn(
                    "oversized_order", f"Row {last} has more rows than a page ({size}).", stream
                )
        in_window = []
        newest = None
        for row in rows:
            amended, _ = mapper.time(row.get("amended"))
            if amended is not None:
                newest = max(newest, amended) if newest else amended
                if since is not None and amended < since:
                    continue  # before the window: read in an earlier round
            in_window.append(row)
        mapper.since = since
        events = getattr(mapper, stream)(in_window, now)
        if newest is not None:
            current = datetime.fromisoformat(state.round_max) if state.round_max else None
            state.round_max = (max(newest, current) if current else newest).isoformat()
        if full and rows:
            state.last_id = _row_id(rows[-1]) or state.last_id
            return events, False
        if state.round_max:
            state.marks[stream] = state.round_max
        state.polled[stream] = now.isoformat()
        return events, state.next_stream()

    # -- the legacy e-commerce push
    def parse_webhook(self, connection: Connection, request: WebhookRequestData) -> WebhookItems:
        items = WebhookItems()
        received = datetime.now(UTC)
        charset = "utf-8"
        match = re.search(r"charset=([\w-]+)", request.content_type or "", re.I)
        if match:
            charset = match[1]
        try:
            text = request.body.decode(charset)
        except (LookupError, UnicodeDecodeError):
            text = request.body.decode("latin-1")
        if text.lstrip().startswith("<"):
            xml_text = text
        else:
            fields = parse_qs(text, keep_blank_values=True)
            values = fields.get("ExportData")
            if not values:
                items.errors.append(
                    ItemError(
                        None, [{"path": "ExportData", "message": "No ExportData form field."}]
                    )
                )
                return items
            xml_text = values[0]
        if not xml_text.lstrip().startswith("<"):
            items.errors.append(
                ItemError(
                    None,
                    [
                        {
                            "path": "ExportData",
                            "message": "A '~'-separated list of ids (an acknowledgement), not status "
                            "XML: nothing to sync. Point the session's status export here instead.",
                        }
                    ],
                )
            )
            return items
        if "<!DOCTYPE" in xml_text.upper() or "<!ENTITY" in xml_text.upper():
            items.errors.append(
                ItemError(None, [{"path": "ExportData", "message": "DTDs are refused."}])
            )
            return items
        try:
            document = ET.fromstring(xml_text)
        except ET.ParseError as exc:
            items.errors.append(
                ItemError(None, [{"path": "ExportData", "message": f"Not XML: {exc}"}])
            )
            return items
        mapper = self.mapper(connection)
        mapper.legacy(document, received, items)
        if not items.events and not items.errors:
            items.errors.append(
                ItemError(None, [{"path": "ExportData", "message": "No <order> in the XML."}])
            )
        return items
