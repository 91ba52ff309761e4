"""A field mapping's transform: steps applied to a state value before it takes its DotDigital type.

The transform is one string (it travels in each contact operation's payload, so coalescing can
re-apply it to today's state): steps separated by ``|``, applied left to right.

| step | does |
|---|---|
| `trim` | strips surrounding white space |
| `upper`, `lower`, `title` | changes the case |
| `date:<format>` | a date as text in a strftime format, in UTC (`date:%d/%m/%Y`): Text fields only |
| `date_only` | a Date field's value without its time (`YYYY-MM-DD`) |
| `scale:<n>` | a number rounded (half up) to n decimal places |
| `map:<from>=<to>;…` | a value map (e.g. loyalty tiers `map:1=Bronze;2=Silver;3=Gold`); others pass |

`parse` says what is wrong with a transform (for the form's field); `apply` never raises: a step
that does not fit the value leaves it as it was.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

CASES = {"upper": str.upper, "lower": str.lower, "title": str.title}
NAMES = ("trim", "upper", "lower", "title", "date_only", "date:", "scale:", "map:")
MAX_LENGTH = 60  # FieldMapping.transform's length


class TransformError(ValueError):
    """A transform that cannot be parsed; the message is for the person who typed it."""


def parse(transform: str) -> list[tuple[str, Any]]:
    """The steps of a transform as (name, argument); raises TransformError."""
    steps: list[tuple[str, Any]] = []
    if not transform.strip():
        return steps
    if len(transform) > MAX_LENGTH:
        raise TransformError(f"At most {MAX_LENGTH} characters.")
    for raw in transform.split("|"):
        step = raw.strip()
        name, colon, arg = step.partition(":")
        if not colon and step in ("trim", "date_only", *CASES):
            steps.append((step, None))
        elif name == "date" and colon:
            if "%" not in arg:
                raise TransformError(f"“{step}”: give a strftime format, e.g. date:%d/%m/%Y.")
            try:
                datetime(2000, 1, 2, tzinfo=UTC).strftime(arg)
            except ValueError as exc:
                raise TransformError(f"“{step}”: {exc}.") from None
            steps.append(("date", arg))
        elif name == "scale" and colon:
            if not arg.isdigit() or int(arg) > 6:
                raise TransformError(f"“{step}”: scale takes 0 to 6 decimal places.")
            steps.append(("scale", int(arg)))
        elif name == "map" and colon:
            pairs: dict[str, str] = {}
            for item in arg.split(";"):
                source, eq, target = item.partition("=")
                if not eq or not source.strip():
                    raise TransformError(f"“{item}”: a value map is from=to pairs split by ;.")
                pairs[source.strip()] = target.strip()
            steps.append(("map", pairs))
        else:
            raise TransformError(
                f"“{step}” is not a transform; use trim, upper, lower, title, date:<format>, "
                "date_only, scale:<n> or map:<from>=<to>;…"
            )
    return steps


def apply(value: Any, transform: str) -> Any:
    """`value` after the transform's steps (the caller then converts it to the field's type)."""
    if value is None or not transform:
        return value
    try:
        steps = parse(transform)
    except TransformError:
        return value
    for name, arg in steps:
        value = _step(value, name, arg)
    return value


def _step(value: Any, name: str, arg: Any) -> Any:
    if name == "trim" and isinstance(value, str):
        return value.strip()
    if name in CASES and isinstance(value, str):
        return CASES[name](value)
    if name == "date" and isinstance(value, datetime):
        return value.astimezone(UTC).strftime(arg)
    if name == "scale" and not isinstance(value, bool) and isinstance(value, Decimal | int | float):
        try:
            return Decimal(str(value)).quantize(Decimal(1).scaleb(-arg), rounding=ROUND_HALF_UP)
        except InvalidOperation:
            return value
    if name == "map":
        key = str(value).strip() if not isinstance(value, Decimal) else _plain(value)
        return arg.get(key, value)
    return value  # date_only is applied by the Date conversion itself


def _plain(value: Decimal) -> str:
    """12.0000 → "12", 12.5000 → "12.5": how a person writes the number in a map."""
    text = format(value.normalize(), "f")
    return text
