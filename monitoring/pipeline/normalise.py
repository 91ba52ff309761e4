"""Small pure helpers: emails, SKUs, money and times as the engine keeps them."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

# Minor units per currency (ISO 4217 exponents); two unless listed.
_EXPONENT = {
    "JPY": 0,
    "KRW": 0,
    "ISK": 0,
    "CLP": 0,
    "VND": 0,
    "BHD": 3,
    "KWD": 3,
    "OMR": 3,
    "JOD": 3,
}


def normalise_email(raw: str | None) -> str:
    """Trim, NFC and lower-case the whole address (design.md); '' when there is none."""
    if not raw:
        return ""
    return unicodedata.normalize("NFC", raw.strip()).lower()


def clean_sku(raw: str | None) -> str:
    """The SKU as stored: NFC and trimmed (the byte-exact value stays in the event)."""
    return unicodedata.normalize("NFC", (raw or "").strip())


def stock_level_key(data: dict[str, Any]) -> tuple[str, str]:
    """(SKU, location) of a validated `stock.changed` event's data: the `StockLevel` it moves."""
    return clean_sku(data.get("sku")), str(data["location"]["key"])


def sku_match_key(sku: str, case_sensitive: bool) -> str:
    return sku if case_sensitive else sku.casefold()


def money(value: Any) -> Decimal | None:
    """The amount of a money object {"amount": "12.50", "currency": "GBP"} (None when absent)."""
    if isinstance(value, dict):
        value = value.get("amount")
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def minor_unit(currency: str) -> Decimal:
    return Decimal(1).scaleb(-_EXPONENT.get(currency, 2))


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


# `data.document_type` of an order document a source sends for money going back to the customer:
# the canonical schema has no such mark, and a source that keeps credits as orders (Brightpearl's
# sales credits, an ERP's credit notes, a returns document) sends its document this way, naming
# the order it credits in `links` as a refund does.
CREDIT_DOCUMENTS = frozenset({"credit_note", "return"})


def is_credit_document(data: Any) -> bool:
    """Whether an order document is marked as a credit note or return (staged as a refund)."""
    return isinstance(data, dict) and data.get("document_type") in CREDIT_DOCUMENTS


def quantity(value: Any) -> Decimal | None:
    """A quantity (an integer or a decimal string) as Decimal; None when absent or not a number."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None
