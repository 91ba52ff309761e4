"""The canonical event schema, applied: which candidate events are valid, and why the others
are not, path by path.

Each event type has a validator with the published schema's branch for that type folded in, and
in front of it fastjsonschema's predicate compiled from the same schema (`fast_check`; about a
third of the hand-written predicate it replaced, `bench/validation.py`): the predicate is trusted
only when it answers "valid"; otherwise jsonschema runs and reports the field errors. Values the
schema allows but no database stores (NUL, lone surrogates, NaN, nesting past `MAX_DEPTH`) are
refused here, with a reason, as a database error at insert time would fail the whole request.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from monitoring.pipeline.normalise import parse_time

log = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "canonical-event.schema.json"
MAX_ERRORS_KEPT = 50

Check = Callable[[Any], bool]
_DRAFT_07 = "http://json-schema.org/draft-07/schema#"
# The keywords fastjsonschema compiles as the published schema's draft (2020-12) means them.
# fastjsonschema knows drafts 4 to 7: a keyword outside this set (`unevaluatedProperties`,
# `prefixItems`, `dependentRequired`, `format`...) could be ignored or read another way, so an
# event type whose schema uses one is checked by jsonschema alone.
_SAME_IN_DRAFT_07 = {
    "type",
    "const",
    "enum",
    "required",
    "properties",
    "items",
    "allOf",
    "anyOf",
    "if",
    "then",
    "minLength",
    "maxLength",
    "pattern",
    "$ref",
}
_ANNOTATIONS = {"$schema", "$id", "title", "description", "examples", "$comment"}


def _keyword_reading(keyword: str, value: Any) -> tuple[str, list[Any]]:
    """Why draft 7 would read this keyword otherwise ("" when it would not), and the subschemas
    under it."""
    if keyword in ("$defs", "properties"):
        return "", list(value.values()) if isinstance(value, dict) else [None]
    if keyword in ("allOf", "anyOf"):
        return "", list(value) if isinstance(value, list) else [None]
    if keyword in ("items", "if", "then"):
        return "", [value]
    if keyword in ("const", "enum"):
        members = [value] if keyword == "const" else value
        # fastjsonschema compares with ==, so True would equal 1: strings only
        strings = isinstance(members, list) and all(isinstance(m, str) for m in members)
        return "" if strings else f"{keyword} of other than strings", []
    if keyword == "$ref":  # never fetched over the network
        local = isinstance(value, str) and value.startswith("#/")
        return "" if local else f"$ref {value!r:.60} is not local", []
    return "" if keyword in _SAME_IN_DRAFT_07 else f"keyword {keyword!r}", []


def _draft_07_reading(node: Any) -> str:
    """Why fastjsonschema would not read this schema as 2020-12 does ("" when it would)."""
    if isinstance(node, bool):
        return ""
    if not isinstance(node, dict):
        return f"not a schema: {node!r:.60}"
    if "$ref" in node and set(node) - _ANNOTATIONS - {"$ref"}:
        return "$ref beside other keywords"  # draft 7 reads the $ref alone
    for keyword, value in node.items():
        if keyword in _ANNOTATIONS:
            continue
        reason, subschemas = _keyword_reading(keyword, value)
        reason = reason or next((r for r in map(_draft_07_reading, subschemas) if r), "")
        if reason:
            return reason
    return ""


def fast_check(schema: dict[str, Any]) -> Check | None:
    """fastjsonschema's compiled predicate of `schema`, or None when one of its keywords would
    read differently in draft 7 (then jsonschema decides). Compiled from a copy: fastjsonschema
    writes into the schema it is given."""
    reason = _draft_07_reading(schema)
    if reason:
        log.warning(
            "no fast check for schema %r (%s): jsonschema validates", schema.get("$id"), reason
        )
        return None
    compiled = fastjsonschema.compile(
        {**copy.deepcopy(schema), "$schema": _DRAFT_07}, use_default=False, use_formats=False
    )

    def check(event: Any) -> bool:
        try:
            compiled(event)
        except fastjsonschema.JsonSchemaValueException:
            return False
        return True

    return check


@lru_cache(maxsize=1)
def _fast_checks() -> dict[str, Check | None]:
    """Each event type's fast check, compiled once per process."""
    return {event_type: fast_check(v.schema) for event_type, v in _validators().items()}


def _is_valid(event: Any) -> bool:
    """Whether the event is valid: the fast check's "valid" is trusted; its "invalid" is not
    (jsonschema then lists the errors, and finds none when the two disagree)."""
    validators = _validators()
    event_type = event.get("event_type") if isinstance(event, dict) else None
    key = event_type if isinstance(event_type, str) and event_type in validators else ""
    check = _fast_checks().get(key)
    if check is not None:
        return check(event)
    return bool(validators[key].is_valid(event))


@lru_cache(maxsize=1)
def _validators() -> dict[str, Any]:
    """One compiled validator per event type, with the published schema's `allOf` branch for
    that type folded in, and "" for an unknown type: the same rules, without evaluating twelve
    `if`s per event (the validator is most of a webhook request's time)."""
    schema = json.loads(SCHEMA_PATH.read_text())
    branches = schema.pop("allOf")
    validators = {"": Draft202012Validator(schema)}
    for branch in branches:
        event_type = branch["if"]["properties"]["event_type"]["const"]
        data = {"allOf": [schema["properties"]["data"], branch["then"]["properties"]["data"]]}
        typed = {**schema, "properties": {**schema["properties"], "data": data}}
        validators[event_type] = Draft202012Validator(typed)
    return validators


def _validator(event: Any) -> Any:
    validators = _validators()
    event_type = event.get("event_type") if isinstance(event, dict) else None
    return validators.get(event_type if isinstance(event_type, str) else "", validators[""])


MAX_DEPTH = 64  # nesting of one event; deeper would exhaust the validator's recursion


def _printable(text: str) -> str:
    """A path or message safe to store: NUL and lone surrogates escaped (PostgreSQL and UTF-8)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\u0000")


def _storable_text(text: str) -> bool:
    """No NUL and no lone surrogate (ASCII without NUL, the common case, is decided at once)."""
    if text.isascii():
        return "\x00" not in text
    return _printable(text) == text


def _surely_storable(event: Any) -> bool:
    """True when no string, key or number of the event could fail to store, found at C speed:
    json.dumps refuses NaN and infinities, the UTF-8 encoding a lone surrogate, the text shows a
    NUL as its escape, and fewer than MAX_DEPTH brackets bound the nesting. False means "look"
    (a backslash before "u0000" in a string, or a long order, is no fault)."""
    try:
        text = json.dumps(event, ensure_ascii=False, allow_nan=False)
        text.encode()
    except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        return False
    return "\\u0000" not in text and text.count("{") + text.count("[") <= MAX_DEPTH


def _unstorable(event: Any) -> list[dict[str, str]]:
    """What the schema allows but no database stores: strings (keys too) with NUL or a lone
    surrogate, NaN and infinities, nesting deeper than MAX_DEPTH. Each is refused here with a
    reason, as a database error at insert time would fail the whole request."""
    return [] if _surely_storable(event) else _unstorable_values(event)


def _unstorable_values(event: Any) -> list[dict[str, str]]:
    """`_unstorable` value by value, naming each one's path."""
    errors: list[dict[str, str]] = []
    stack: list[tuple[Any, str, int]] = [(event, "", 0)]
    while stack and len(errors) < MAX_ERRORS_KEPT:
        value, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            errors.append({"path": _printable(path), "message": f"nested deeper than {MAX_DEPTH}"})
            continue
        if isinstance(value, dict):
            items: Iterable[tuple[Any, Any]] = value.items()
        elif isinstance(value, list):
            items = enumerate(value)
        else:
            items = ()
            if isinstance(value, float) and not math.isfinite(value):
                errors.append({"path": _printable(path), "message": "not a finite number"})
            elif isinstance(value, str) and not _storable_text(value):
                errors.append(
                    {"path": _printable(path), "message": "contains NUL or a lone surrogate"}
                )
        for key, inner in items:
            name = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and not _storable_text(key):
                errors.append(
                    {"path": _printable(name), "message": "key contains NUL or a lone surrogate"}
                )
            stack.append((inner, name, depth + 1))
    return sorted(errors, key=lambda e: e["path"])


def utc_time(value: Any) -> datetime | None:
    """An RFC 3339 time as aware UTC, or None when it is none or falls outside years 1-9999 in
    UTC (stored in UTC, so no database meets an offset it cannot hold, e.g. PostgreSQL's +23:59)."""
    parsed = parse_time(value)
    try:
        return parsed.astimezone(UTC) if parsed is not None else None
    except OverflowError:
        return None


def validate_event(event: Any) -> list[dict[str, str]]:
    """Field-level errors of one candidate event (empty when it is valid)."""
    unstorable = _unstorable(event)
    if unstorable:
        return unstorable[:MAX_ERRORS_KEPT]
    errors = []
    for name in ("occurred_at", "source_updated_at", "received_at"):
        value = event.get(name) if isinstance(event, dict) else None
        if isinstance(value, str) and utc_time(value) is None:
            errors.append({"path": name, "message": "is not a valid date-time"})
    if not errors and _is_valid(event):
        return []
    validator = _validator(event)
    for error in validator.iter_errors(event):
        path = ".".join(str(p) for p in error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, dict):
            for name in error.validator_value:
                if name not in error.instance:
                    errors.append(
                        {"path": f"{path}.{name}" if path else name, "message": "is required"}
                    )
            continue
        if error.validator in ("allOf", "if"):
            continue  # the nested errors say what is wrong
        errors.append({"path": _printable(path), "message": _printable(error.message[:300])})
    return sorted(errors, key=lambda e: e["path"])[:MAX_ERRORS_KEPT]
