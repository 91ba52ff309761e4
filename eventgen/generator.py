"""Generates a plausible stream of canonical events from a demo ERP and a demo WMS.

The ERP (system ``demo-erp``) sells: customers, orders, status changes, refunds, consent and
products. The WMS (``demo-wms``) ships: dispatches, carrier scans, returns and stock. They share
order numbers: WMS events carry the web order number in ``links.channel_order_ref``, which a flow
joins on. Everything is drawn from one seeded random generator, so a seed gives the same stream.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from eventgen.truth import OrderTruth, Truth, normalise_email

NAMESPACE = uuid.UUID("6f1c1b4e-2f7a-4b0e-9a51-5d1f3c2b7a10")
CENT = Decimal("0.01")
FIRST = [
    "Jo",
    "Sam",
    "Alex",
    "Priya",
    "Tom",
    "Aisha",
    "Ben",
    "Chloe",
    "Dev",
    "Emma",
    "Finn",
    "Grace",
    "Harry",
    "Isla",
    "Jack",
    "Kemi",
    "Leo",
    "Maya",
    "Noah",
    "Olivia",
    "Ravi",
    "Sofia",
    "Zoe",
]
LAST = [
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
    "Williams",
    "Wilson",
    "Johnson",
    "Davies",
    "Patel",
    "Robinson",
    "Wright",
    "Thompson",
    "Evans",
    "Walker",
    "White",
    "Roberts",
    "Green",
    "Hall",
]
PRODUCTS = [
    "Merino Crew",
    "Rain Shell",
    "Trail Runner",
    "Wool Beanie",
    "Canvas Tote",
    "Down Vest",
    "Fleece Half-Zip",
    "Chino Short",
    "Linen Shirt",
    "Hiking Sock 3-pack",
    "Leather Belt",
]
COLOURS = ["RED", "NAVY", "OLIVE", "BLACK", "SAND", "GREY"]
SIZES = ["S", "M", "L", "XL"]
SCANS = ["collected", "in_transit", "out_for_delivery", "delivered"]


def money(amount: Decimal, currency: str) -> dict[str, str]:
    return {"amount": str(amount.quantize(CENT)), "currency": currency}


@dataclass(frozen=True)
class Mix:
    """Relative weights of business actions (the engine benchmark's mix by default)."""

    new_order: int = 40
    order_status: int = 15
    dispatch: int = 15
    carrier_scan: int = 5
    stock: int = 10
    customer: int = 5
    refund: int = 5
    consent: int = 5


@dataclass(frozen=True)
class Faults:
    """Rates (0–1) of the faults real feeds have."""

    guest_duplicate: float = 0.0  # a guest order by a known person, email in another spelling
    missing_email: float = 0.0  # an order with a phone number only
    odd_sku: float = 0.0  # an order line with a legacy SKU the catalogue does not know
    duplicate: float = 0.0  # an event delivered twice
    reorder: float = 0.0  # an event swapped with its neighbour in delivery
    bad_total: float = 0.0  # a grand total that does not add up (off by 1.00)

    @classmethod
    def none(cls) -> Faults:
        return cls()

    @classmethod
    def demo(cls) -> Faults:
        return cls(
            guest_duplicate=0.05,
            missing_email=0.02,
            odd_sku=0.02,
            duplicate=0.03,
            reorder=0.05,
            bad_total=0.01,
        )


@dataclass
class _Customer:
    key: str
    email: str
    first_name: str
    last_name: str
    registered: bool


@dataclass
class _Order:
    number: str
    customer: _Customer | None
    email: str | None
    placed_at: datetime
    lines: list[dict[str, Any]]
    grand_total: Decimal
    dispatched: bool = False
    scan: int = -1
    refunded: Decimal = Decimal("0.00")
    revision: int = 0


@dataclass
class Generator:
    seed: int = 1
    customers: int = 2000
    products: int = 120
    currency: str = "GBP"
    faults: Faults = field(default_factory=Faults)
    mix: Mix = field(default_factory=Mix)
    start: datetime = field(default_factory=lambda: datetime(2026, 11, 2, 8, 0, tzinfo=UTC))
    live: bool = (
        False  # occurred_at = the real time of generation (the demo), else a simulated clock
    )
    erp: tuple[str, str] = ("demo-erp", "erp-main")
    # Direct program enrolments configured in Syncdesk: event type → program id. The truth then
    # expects each contact of such an event enrolled in that program exactly once.
    enrol_on: dict[str, int] = field(default_factory=dict)
    wms: tuple[str, str] = ("demo-wms", "wh-1")

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.truth = Truth(currency=self.currency)
        self.clock = self.start
        self._orders: list[_Order] = []
        self._open: list[_Order] = []  # valid, not fully refunded
        self._undispatched: list[_Order] = []
        self._in_transit: list[_Order] = []
        self._stock: dict[str, int] = {}
        self._seq = 0
        self._sent: list[dict[str, Any]] = []
        self._people = [self._make_customer(i) for i in range(self.customers)]
        self.catalogue = [self._make_product(i) for i in range(self.products)]
        self.legacy = {p["sku"]: f"LEG-{1000 + i}" for i, p in enumerate(self.catalogue)}
        actions: dict[str, Callable[[], list[dict[str, Any]]]] = {
            "new_order": self._new_order,
            "order_status": self._order_status,
            "dispatch": self._dispatch,
            "carrier_scan": self._carrier_scan,
            "stock": self._stock_change,
            "customer": self._customer_update,
            "refund": self._refund,
            "consent": self._consent,
        }
        self._actions = [actions[name] for name in actions]
        self._action_names = list(actions)
        self._weights = [getattr(self.mix, name) for name in actions]

    def use_mix(self, mix: Mix) -> None:
        """Draw the next events from another mix, with the same customers, orders and stock (a
        bulk backlog of status changes for the orders already placed, say)."""
        self.mix = mix
        self._weights = [getattr(mix, name) for name in self._action_names]

    # ---- the stream -------------------------------------------------------------------------

    def catalogue_events(self) -> list[dict[str, Any]]:
        """The full product snapshot and opening stock: what a backfill posts first."""
        events = []
        for product in self.catalogue:
            events.append(
                self._event(
                    self.erp,
                    "product.updated",
                    "product",
                    product["product_key"],
                    f"product:{product['sku']}:v1",
                    {
                        "sku": product["sku"],
                        "product_key": product["product_key"],
                        "status": "active",
                        "name": product["name"],
                        "price": money(product["price"], self.currency),
                    },
                )
            )
            level = self.rng.randint(0, 40)
            self._stock[product["sku"]] = level
            self.truth.saleable[product["sku"]] = level
            events.append(self._stock_event(product["sku"], "snapshot", level))
        return events

    def events(self, count: int) -> list[dict[str, Any]]:
        """`count` business events, then the faults of delivery (duplicates, reordering) applied."""
        out: list[dict[str, Any]] = []
        while len(out) < count:
            action = self.rng.choices(self._actions, self._weights)[0]
            out.extend(action())
        out = out[:count]
        self.truth.events += len(out)
        for event in out:
            self._enrol(event)
        delivered: list[dict[str, Any]] = []
        for event in out:
            delivered.append(event)
            self._sent.append(event)
            if self.faults.duplicate and self.rng.random() < self.faults.duplicate:
                delivered.append(self.rng.choice(self._sent[-50:]))
        if self.faults.reorder:
            for i in range(len(delivered) - 1):
                if self.rng.random() < self.faults.reorder:
                    delivered[i], delivered[i + 1] = delivered[i + 1], delivered[i]
        self.truth.deliveries += len(delivered)
        return delivered

    def _enrol(self, event: dict[str, Any]) -> None:
        program = self.enrol_on.get(event["event_type"])
        email = (event.get("identity") or {}).get("email_raw")
        if program is None or not email or event["source_event_id"] in self.truth.blocked:
            return
        self.truth.enrolments.setdefault(program, set()).add(normalise_email(email))

    def batches(self, total: int, size: int = 100) -> Iterator[list[dict[str, Any]]]:
        sent = 0
        while sent < total:
            batch = self.events(min(size, total - sent))
            sent += min(size, total - sent)
            yield batch

    # ---- envelope ---------------------------------------------------------------------------

    def _tick(self) -> datetime:
        if self.live:
            self.clock = datetime.now(UTC).replace(microsecond=0)
        else:
            self.clock += timedelta(seconds=self.rng.randint(1, 20))
        return self.clock

    def _event(
        self,
        source: tuple[str, str],
        event_type: str,
        entity_type: str,
        entity_key: str,
        native_id: str,
        data: dict[str, Any],
        *,
        identity: dict[str, Any] | None = None,
        links: dict[str, Any] | None = None,
        source_ref: str | None = None,
    ) -> dict[str, Any]:
        system, account = source
        at = self._tick().isoformat().replace("+00:00", "Z")
        source_event_id = f"{system}:{native_id}"
        return {
            "schema": "sync.event/v1",
            "event_type": event_type,
            "event_id": str(
                uuid.uuid5(NAMESPACE, f"{system}|{account}|{event_type}|{source_event_id}")
            ),
            "source": {"system": system, "account": account, "channel": "web-uk", "via": None},
            "source_event_id": source_event_id,
            "source_event_id_kind": "native",
            "occurred_at": at,
            "occurred_at_quality": "exact",
            "source_updated_at": at,
            "entity": {
                "type": entity_type,
                "key": f"{system}:{account}:{entity_key}",
                "source_id": entity_key.rsplit(":", 1)[-1],
                "source_ref": source_ref,
            },
            "links": links or {},
            "identity": identity or {"quality": "none"},
            "data": data,
        }

    def _identity(
        self, customer: _Customer | None, email_raw: str | None, guest: bool
    ) -> dict[str, Any]:
        if email_raw is None:
            return {
                "email": None,
                "email_raw": None,
                "phone_e164": "+447700900" + f"{self.rng.randint(0, 999):03d}",
                "source_customer_id": None,
                "is_guest": guest,
                "quality": "phone_only",
            }
        return {
            "email": normalise_email(email_raw),
            "email_raw": email_raw,
            "source_customer_id": None if guest or customer is None else customer.key,
            "is_guest": guest,
            "quality": "email",
        }

    # ---- catalogue and people ---------------------------------------------------------------

    def _make_customer(self, i: int) -> _Customer:
        first, last = self.rng.choice(FIRST), self.rng.choice(LAST)
        email = f"{first}.{last}.{i}@example.com".lower()
        return _Customer(f"C{10000 + i}", email, first, last, registered=self.rng.random() < 0.7)

    def _make_product(self, i: int) -> dict[str, Any]:
        name = PRODUCTS[i % len(PRODUCTS)]
        colour, size = COLOURS[(i // len(PRODUCTS)) % len(COLOURS)], SIZES[i % len(SIZES)]
        sku = f"{name[:3].upper()}-{i:03d}/{colour}-{size}"
        price = Decimal(self.rng.choice([12, 18, 25, 35, 45, 60, 85, 120])) - Decimal("0.01")
        return {
            "sku": sku,
            "product_key": f"P{i:04d}",
            "name": f"{name} {colour.title()} {size}",
            "price": price,
        }

    # ---- business actions -------------------------------------------------------------------

    def _new_order(self) -> list[dict[str, Any]]:
        self._seq += 1
        number = f"NW{100000 + self._seq}"
        person, guest, email_raw, blocked = self._order_buyer()
        lines, subtotal, line_discount_total, odd_sku = self._order_lines(number)
        blocked = blocked or odd_sku
        shipping = Decimal(self.rng.choice(["0.00", "3.95", "4.99"]))
        order_discount = (
            Decimal("5.00") if subtotal > 100 and self.rng.random() < 0.2 else Decimal("0.00")
        )
        grand = subtotal - line_discount_total + shipping - order_discount
        stated = grand
        if self.faults.bad_total and self.rng.random() < self.faults.bad_total:
            stated, blocked = grand + Decimal("1.00"), blocked or "order_total_mismatch"
        placed = self._tick()
        event = self._event(
            self.erp,
            "order.created",
            "order",
            f"order:{number}",
            f"order:{number}:created",
            {
                "order_key": f"{self.erp[0]}:{self.erp[1]}:order:{number}",
                "order_number": number,
                "channel_order_ref": number,
                "placed_at": placed.isoformat().replace("+00:00", "Z"),
                "currency": self.currency,
                "status": {"lifecycle": "open", "fulfilment": "unfulfilled", "financial": "paid"},
                "lines": lines,
                "tax_inclusive": True,
                "is_guest": guest,
                **self._order_money(
                    subtotal - line_discount_total, shipping, order_discount, stated
                ),
            },
            identity=self._identity(person, email_raw, guest),
            source_ref=number,
        )
        if blocked:
            self.truth.blocked[event["source_event_id"]] = blocked
            return [event]
        order = _Order(number, person, email_raw, placed, lines, grand)
        self._orders.append(order)
        self._open.append(order)
        self._undispatched.append(order)
        self.truth.add_order(
            OrderTruth(
                number,
                email_raw and normalise_email(email_raw),
                placed,
                self.currency,
                grand,
                skus=[ln["sku"] for ln in lines],
            )
        )
        return [event]

    def _order_buyer(self) -> tuple[_Customer, bool, str | None, str]:
        """Who orders: the person, whether as a guest, the email as typed (None: phone only) and
        the exception kind a missing email blocks the order with ("" when none)."""
        person = self.rng.choice(self._people)
        guest = not person.registered
        email_raw: str | None = person.email
        if self.faults.guest_duplicate and self.rng.random() < self.faults.guest_duplicate:
            guest, email_raw = True, f"  {person.email.title()} "
        blocked = ""
        if self.faults.missing_email and self.rng.random() < self.faults.missing_email:
            email_raw, blocked = None, "contact_without_email"
        return person, guest, email_raw, blocked

    def _order_lines(self, number: str) -> tuple[list[dict[str, Any]], Decimal, Decimal, str]:
        """One to three lines: the lines, their gross subtotal and discounts, and the exception
        kind a legacy SKU blocks the order with ("" when none)."""
        lines, subtotal, line_discount_total = [], Decimal("0.00"), Decimal("0.00")
        blocked = ""
        for n, product in enumerate(
            self.rng.sample(self.catalogue, self.rng.randint(1, 3)), start=1
        ):
            qty = self.rng.randint(1, 3)
            gross = product["price"] * qty
            discount = (
                (gross * Decimal("0.10")).quantize(CENT)
                if self.rng.random() < 0.15
                else Decimal("0.00")
            )
            total = gross - discount
            sku = product["sku"]
            if self.faults.odd_sku and self.rng.random() < self.faults.odd_sku:
                sku, blocked = self.legacy[sku], "sku_mapping_gap"
            lines.append(
                {
                    "line_key": f"{number}-{n}",
                    "sku": sku,
                    "sku_raw": sku,
                    "product_key": product["product_key"],
                    "name": product["name"],
                    "quantity": qty,
                    "unit_price": money(product["price"], self.currency),
                    "line_subtotal": money(gross, self.currency),
                    "line_discount": money(discount, self.currency),
                    "line_tax": money((total / 6).quantize(CENT, ROUND_HALF_UP), self.currency),
                    "line_total": money(total, self.currency),
                    "tax_rate": "0.20",
                }
            )
            subtotal += gross
            line_discount_total += discount
        return lines, subtotal, line_discount_total, blocked

    def _order_money(
        self, net: Decimal, shipping: Decimal, order_discount: Decimal, stated: Decimal
    ) -> dict[str, Any]:
        """An order's discounts, shipping and totals (`stated` is the grand total it claims)."""
        return {
            "discounts": [
                {
                    "code": "WELCOME5",
                    "amount": money(order_discount, self.currency),
                    "scope": "order",
                }
            ]
            if order_discount
            else [],
            "shipping": {
                "method": "Royal Mail Tracked 48",
                "amount": money(shipping, self.currency),
            },
            "totals": {
                "subtotal": money(net, self.currency),
                "discount": money(order_discount, self.currency),
                "shipping": money(shipping, self.currency),
                "tax": money((stated / 6).quantize(CENT, ROUND_HALF_UP), self.currency),
                "grand_total": money(stated, self.currency),
                "tax_inclusive": True,
            },
        }

    def _order_status(self) -> list[dict[str, Any]]:
        if not self._open:
            return self._new_order()
        order = self.rng.choice(self._open[-500:])
        order.revision += 1
        to = {"lifecycle": "open", "fulfilment": "processing", "financial": "paid"}
        return [
            self._event(
                self.erp,
                "order.status_changed",
                "order",
                f"order:{order.number}",
                f"order:{order.number}:status:{order.revision}",
                {
                    "order_key": f"{self.erp[0]}:{self.erp[1]}:order:{order.number}",
                    "to": to,
                    "from": None,
                    "source_status_raw": "Processing",
                    "order_number": order.number,
                },
                links={"channel_order_ref": order.number},
                source_ref=order.number,
            )
        ]

    def _dispatch(self) -> list[dict[str, Any]]:
        if not self._undispatched:
            return self._new_order()
        order = self._undispatched.pop(0)
        order.dispatched = True
        self._in_transit.append(order)
        self.truth.orders[order.number].dispatched = True
        self.truth.orders[order.number].dispatched_at = self.clock
        tracking = f"TT{self.rng.randint(10**9, 10**10 - 1)}GB"
        return [
            self._event(
                self.wms,
                "shipment.dispatched",
                "shipment",
                f"shipment:{order.number}-1",
                f"despatch:{order.number}-1",
                {
                    "shipment_key": f"{self.wms[0]}:{self.wms[1]}:shipment:{order.number}-1",
                    "order_key": f"{self.wms[0]}:{self.wms[1]}:order:{order.number}",
                    "dispatched_at": self.clock.isoformat().replace("+00:00", "Z"),
                    "lines": [{"sku": ln["sku"], "quantity": ln["quantity"]} for ln in order.lines],
                    "carrier": {
                        "code": "royal-mail",
                        "name": "Royal Mail",
                        "service": "Tracked 48",
                    },
                    "tracking_numbers": [tracking],
                    "tracking_urls": [
                        f"https://www.royalmail.com/track-your-item#/tracking-results/{tracking}"
                    ],
                    "is_partial": False,
                    "part": 1,
                    "parts": 1,
                },
                links={
                    "order_key": f"{self.wms[0]}:{self.wms[1]}:order:{order.number}",
                    "channel_order_ref": order.number,
                },
                source_ref=order.number,
            )
        ]

    def _carrier_scan(self) -> list[dict[str, Any]]:
        if not self._in_transit:
            return self._dispatch()
        order = self._in_transit[0]
        order.scan += 1
        status = SCANS[order.scan]
        if status == "delivered":
            self._in_transit.pop(0)
            self.truth.orders[order.number].delivered = True
        return [
            self._event(
                self.wms,
                "shipment.carrier_scanned",
                "shipment",
                f"shipment:{order.number}-1",
                f"scan:{order.number}-1:{status}",
                {
                    "shipment_key": f"{self.wms[0]}:{self.wms[1]}:shipment:{order.number}-1",
                    "scan_status": status,
                    "scanned_at": self.clock.isoformat().replace("+00:00", "Z"),
                },
                links={
                    "order_key": f"{self.wms[0]}:{self.wms[1]}:order:{order.number}",
                    "channel_order_ref": order.number,
                },
                source_ref=order.number,
            )
        ]

    def _stock_event(self, sku: str, mode: str, value: int) -> dict[str, Any]:
        self._seq += 1
        quantities = (
            {"on_hand": value, "allocated": 0, "saleable": value, "quarantined": 0}
            if mode == "snapshot"
            else {"on_hand": value, "saleable": value}
        )
        return self._event(
            self.wms,
            "stock.changed",
            "stock",
            f"stock:{sku}:main",
            f"stock:{sku}:{self._seq}",
            {
                "sku": sku,
                "location": {"key": "main", "name": "Main warehouse"},
                "quantities": quantities,
                "as_of": self.clock.isoformat().replace("+00:00", "Z"),
                "mode": mode,
            },
        )

    def _stock_change(self) -> list[dict[str, Any]]:
        sku = self.rng.choice(self.catalogue)["sku"]
        level = self._stock.get(sku, 0)
        if self.rng.random() < 0.2:
            new = self.rng.choice([0, 0, self.rng.randint(1, 60)])
            self._stock[sku] = self.truth.saleable[sku] = new
            return [self._stock_event(sku, "snapshot", new)]
        delta = self.rng.randint(-min(level, 5), 10)
        self._stock[sku] = self.truth.saleable[sku] = level + delta
        return [self._stock_event(sku, "delta", delta)]

    def _customer_update(self) -> list[dict[str, Any]]:
        person = self.rng.choice([p for p in self._people[:500] if p.registered] or self._people)
        person.last_name = self.rng.choice(LAST)
        self._seq += 1
        contact = self.truth.contact(person.email)
        contact.first_name, contact.last_name = person.first_name, person.last_name
        return [
            self._event(
                self.erp,
                "customer.upserted",
                "customer",
                f"customer:{person.key}",
                f"customer:{person.key}:{self._seq}",
                {
                    "customer_key": f"{self.erp[0]}:{self.erp[1]}:customer:{person.key}",
                    "first_name": person.first_name,
                    "last_name": person.last_name,
                    "is_guest": False,
                    "source_updated_at": self.clock.isoformat().replace("+00:00", "Z"),
                },
                identity=self._identity(person, person.email, guest=False),
            )
        ]

    def _refund(self) -> list[dict[str, Any]]:
        candidates = [o for o in self._open[-500:] if o.email]
        if not candidates:
            return self._new_order()
        order = self.rng.choice(candidates)
        line = self.rng.choice(order.lines)
        full = self.rng.random() < 0.4
        amount = (
            order.grand_total - order.refunded if full else Decimal(line["line_total"]["amount"])
        )
        amount = min(amount, order.grand_total - order.refunded)
        order.refunded += amount
        self._seq += 1
        if order.refunded >= order.grand_total:
            self._open.remove(order)
        self.truth.add_refund(order.number, amount)
        return [
            self._event(
                self.erp,
                "refund.issued",
                "refund",
                f"refund:{order.number}-{self._seq}",
                f"refund:{order.number}-{self._seq}",
                {
                    "refund_key": f"{self.erp[0]}:{self.erp[1]}:refund:{order.number}-{self._seq}",
                    "order_key": f"{self.erp[0]}:{self.erp[1]}:order:{order.number}",
                    "refunded_at": self.clock.isoformat().replace("+00:00", "Z"),
                    "amount": money(amount, self.currency),
                    "reason": "Customer return",
                    "lines": []
                    if full
                    else [
                        {
                            "line_key": line["line_key"],
                            "sku": line["sku"],
                            "quantity": line["quantity"],
                            "amount": line["line_total"],
                        }
                    ],
                },
                links={
                    "order_key": f"{self.erp[0]}:{self.erp[1]}:order:{order.number}",
                    "channel_order_ref": order.number,
                },
                source_ref=order.number,
            )
        ]

    def _consent(self) -> list[dict[str, Any]]:
        person = self.rng.choice(self._people)
        status = self.rng.choice(["subscribed", "subscribed", "unsubscribed"])
        contact = self.truth.contact(person.email)
        contact.subscribed = status == "subscribed"
        contact.consents.append(contact.subscribed)
        self._seq += 1
        return [
            self._event(
                self.erp,
                "consent.changed",
                "consent",
                f"consent:{person.key}:email",
                f"consent:{person.key}:{self._seq}",
                {
                    "channel": "email",
                    "status": status,
                    "opt_in_level": "single",
                    "consent_at": self.clock.isoformat().replace("+00:00", "Z"),
                    "consent_source": "checkout",
                },
                identity=self._identity(person, person.email, guest=not person.registered),
            )
        ]
