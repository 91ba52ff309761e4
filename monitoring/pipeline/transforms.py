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


# -- SKU cleaning rules ---------------------------------------------------------------------------
#
# A flow's SKUs go through its cleaning rules (`Flow.sku_cleaning`, one rule a line) after
# staging's own cleaning (trim + NFC) and before aliases and the catalogue check, so a source that
# writes `uk_ab_12` can match the catalogue's `AB-12` without an alias per SKU.
#
# | rule | does |
# |---|---|
# | `trim` | strips surrounding white space; `trim:<chars>` strips those characters instead |
# | `upper`, `lower` | changes the case |
# | `replace:<from>=<to>` | replaces every `<from>` with `<to>` (empty `<to>`: removes it) |
# | `strip_prefix:<text>`, `strip_suffix:<text>` | removes the text at the start / end, if there |

SKU_RULES_MAX = 1000  # characters of a flow's rules
SKU_CASES = {"upper": str.upper, "lower": str.lower}


def parse_sku_rules(text: str) -> list[tuple[str, Any]]:
    """The rules as (name, argument), in order; raises TransformError naming the line."""
    rules: list[tuple[str, Any]] = []
    if len(text) > SKU_RULES_MAX:
        raise TransformError(f"At most {SKU_RULES_MAX} characters.")
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip("\r\n\t ")
        if not line:
            continue
        name, colon, arg = line.partition(":")
        if not colon and line in ("trim", *SKU_CASES):
            rules.append((line, None))
        elif name == "trim" and colon and arg:
            rules.append(("trim", arg))
        elif name == "replace" and colon:
            source, eq, target = arg.partition("=")
            if not eq or not source:
                raise TransformError(f"Line {number}: replace:<from>=<to>, e.g. replace:_=-")
            rules.append(("replace", (source, target)))
        elif name in ("strip_prefix", "strip_suffix") and colon and arg:
            rules.append((name, arg))
        else:
            raise TransformError(
                f"Line {number}: “{line}” is not a rule; use trim, trim:<chars>, upper, lower, "
                "replace:<from>=<to>, strip_prefix:<text> or strip_suffix:<text>."
            )
    return rules


def clean_sku_by_rules(sku: str, rules: str) -> str:
    """`sku` (already trimmed and NFC) after a flow's cleaning rules; never raises (rules that do
    not parse leave the SKU as it was: the form refuses them before they are saved)."""
    if not rules or not sku:
        return sku
    try:
        parsed = parse_sku_rules(rules)
    except TransformError:
        return sku
    for name, arg in parsed:
        if name == "trim":
            sku = sku.strip() if arg is None else sku.strip(arg)
        elif name in SKU_CASES:
            sku = SKU_CASES[name](sku)
        elif name == "replace":
            sku = sku.replace(arg[0], arg[1])
        elif name == "strip_prefix":
            sku = sku.removeprefix(arg)
        elif name == "strip_suffix":
            sku = sku.removesuffix(arg)
    return sku.strip()
