"""The state DotDigital should end in, computed from business facts alone (no engine code).

Rules, stated here so a reader can check them against design.md:
- one contact per normalised email (trim, NFC, lower-case); an order without an email makes none;
- ORDER_COUNT counts a contact's delivered orders; LTV = Σ their grand totals − Σ their refunds,
  in the workspace currency; LAST_ORDER_DATE is the latest placed_at;
- an order blocked by a business fault (bad total, unknown SKU, no email) is not in DotDigital, and
  its later events are not generated;
- REFUNDED is true for an order with any refund;
- FIRSTNAME/LASTNAME come from customer records (``customer.upserted``) only: an order names no one;
- a contact's email channel: ``consents`` lists its ``consent.changed`` statuses in order (True =
  subscribed); ``subscribed`` is the last of them;
- direct program enrolments: with ``Generator(enrol_on={event_type: program_id})`` every contact
  of such an event is enrolled in that program once (``enrolments``: program id → emails).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal


def normalise_email(raw: str) -> str:
    return unicodedata.normalize("NFC", raw.strip()).lower()


@dataclass
class ContactTruth:
    email: str
    first_name: str = ""
    last_name: str = ""
    order_count: int = 0
    ltv: Decimal = Decimal("0.00")
    last_order_date: datetime | None = None
    subscribed: bool | None = None  # None: never changed by a consent event
    consents: list[bool] = field(default_factory=list)  # every consent change, in order


@dataclass
class OrderTruth:
    order_number: str
    email: str | None
    placed_at: datetime
    currency: str
    grand_total: Decimal
    refunded: Decimal = Decimal("0.00")
    dispatched: bool = False
    dispatched_at: datetime | None = None
    delivered: bool = False
    skus: list[str] = field(default_factory=list)

    @property
    def is_refunded(self) -> bool:
        return self.refunded > 0


@dataclass
class Truth:
    currency: str = "GBP"
    contacts: dict[str, ContactTruth] = field(default_factory=dict)
    orders: dict[str, OrderTruth] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)  # source_event_id → exception kind
    saleable: dict[str, int] = field(default_factory=dict)  # sku → saleable units (all locations)
    enrolments: dict[int, set[str]] = field(default_factory=dict)  # program id → emails
    events: int = 0  # distinct events generated (duplicates not counted)
    deliveries: int = 0  # webhook deliveries, duplicates included

    def contact(self, email: str) -> ContactTruth:
        key = normalise_email(email)
        if key not in self.contacts:
            self.contacts[key] = ContactTruth(email=key)
        return self.contacts[key]

    def add_order(self, order: OrderTruth) -> None:
        self.orders[order.order_number] = order
        if order.email:
            contact = self.contact(order.email)
            contact.order_count += 1
            contact.ltv += order.grand_total
            if contact.last_order_date is None or order.placed_at > contact.last_order_date:
                contact.last_order_date = order.placed_at

    def add_refund(self, order_number: str, amount: Decimal) -> None:
        order = self.orders[order_number]
        order.refunded += amount
        if order.email:
            self.contact(order.email).ltv -= amount
