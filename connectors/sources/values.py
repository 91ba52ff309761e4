"""How every adapter reads a source's values: amounts, quantities, times and text.

Sources write numbers as JSON numbers, numeric strings or nested objects, and times as ISO 8601,
.NET's `/Date(ms)/` or local clock readings; these turn them into what canonical events carry
(Decimal amounts as strings, whole quantities as ints, RFC 3339 UTC times). Where sources differ
(a money scale, whether a bad quantity is an error) the adapter decides and calls these.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

DOTNET_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")


def decimal(value: Any, *, finite: bool = True) -> Decimal | None:
    """A JSON number, numeric string or Decimal as a Decimal; None when absent, a boolean or not a
    number. With `finite`, NaN and infinities are None too."""
    if value is None or isinstance(value, bool) or value == "":
        return None
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() or not finite else None


def whole_or_text(number: Decimal, *, normalise: bool = True) -> int | str:
    """A quantity as canonical events carry it: an int when whole, else a decimal string (without
    trailing zeros when `normalise`)."""
    if number == number.to_integral_value():
        return int(number)
    return f"{number.normalize():f}" if normalise else f"{number:f}"


def quantity(value: Any, *, normalise: bool = True) -> int | str | None:
    """`whole_or_text` of a source's quantity; None when it is absent or not a number."""
    number = decimal(value)
    return None if number is None else whole_or_text(number, normalise=normalise)


def money(value: Any, currency: str) -> dict[str, str] | None:
    """A money object keeping the source's digits: at least 2 and at most 4 decimal places."""
    number = decimal(value)
    if number is None:
        return None
    places = -int(number.as_tuple().exponent)
    if places > 4:
        number = number.quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN)
    elif places < 2:
        number = number.quantize(Decimal("0.01"))
    return {"amount": f"{number:f}", "currency": currency}


def rfc3339(moment: datetime) -> str:
    """A time as canonical events carry it: UTC, `Z`."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_iso(value: Any) -> datetime | None:
    """An ISO 8601 string (`Z` for UTC) as a datetime, naive when it has no offset (the adapter
    knows which zone that means); None when absent or unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None


def parse_dotnet(text: str) -> datetime | None:
    """.NET JSON's `/Date(ms)/`: epoch milliseconds, UTC whatever the optional +hhmm suffix (it
    only says which zone to display in); None when `text` is not one."""
    match = DOTNET_DATE.match(text)
    return datetime.fromtimestamp(int(match[1]) / 1000, UTC) if match else None


def clean(value: Any) -> str:
    """Text as written, stripped and in Unicode NFC (so equal names and SKUs compare equal)."""
    return unicodedata.normalize("NFC", str(value if value is not None else "").strip())


def text_or_none(value: Any) -> str | None:
    """Text stripped, or None when there is none."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def object_at(record: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """A nested object of a record, or {} when it is missing or not an object."""
    value = record.get(name)
    return value if isinstance(value, Mapping) else {}


def list_at(record: Mapping[str, Any], name: str) -> list[Any]:
    """A nested list of a record, or [] when it is missing or not a list."""
    value = record.get(name)
    return value if isinstance(value, list) else []


def normalise_email(raw: Any) -> str | None:
    """An email address lower-cased, or None when it cannot be one."""
    if not isinstance(raw, str):
        return None
    email = unicodedata.normalize("NFC", raw.strip()).lower()
    if "@" not in email or email.startswith("@") or email.endswith("@") or " " in email:
        return None
    return email


def fingerprint(*parts: Any) -> str:
    """A short stable digest of JSON-able parts (for ids and change detection)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def digest(*parts: Any) -> str:
    """A short stable digest of parts joined as text."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:16]


def lenient_email(raw: Any) -> str | None:
    """`clean` text lower-cased when it has an @ (for sources that validate addresses themselves)."""
    text = clean(raw).lower()
    return text if "@" in text else None
