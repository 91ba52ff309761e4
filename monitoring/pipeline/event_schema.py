"""The canonical event schema, applied: which candidate events are valid, and why the others
are not, path by path.

Each event type has a validator with the published schema's branch for that type folded in, and
in front of it a predicate compiled from the same schema (`_compile`): the predicate is trusted
only when it answers "valid"; otherwise jsonschema runs and reports the field errors. Values the
schema allows but no database stores (NUL, lone surrogates, NaN, nesting past `MAX_DEPTH`) are
refused here, with a reason, as a database error at insert time would fail the whole request.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from monitoring.pipeline.normalise import parse_time

log = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "canonical-event.schema.json"
MAX_ERRORS_KEPT = 50

Check = Callable[[Any], bool]
_ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description", "examples", "default"}
_TYPES: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


class _Unsupported(Exception):
    """A keyword the fast check does not know: the event type keeps jsonschema's is_valid."""


def _always(value: Any) -> bool:
    return True


def _one_of_types(kinds: list[Check]) -> Check:
    def check(v: Any) -> bool:
        return any(k(v) for k in kinds)

    return check


def _member(members: frozenset[str]) -> Check:
    def check(v: Any) -> bool:
        return isinstance(v, str) and v in members

    return check


def _required(names: list[str]) -> Check:
    def check(v: Any) -> bool:
        return not isinstance(v, dict) or all(k in v for k in names)

    return check


def _properties(props: list[tuple[str, Check]]) -> Check:
    def check(v: Any) -> bool:
        return not isinstance(v, dict) or all(c(v[k]) for k, c in props if k in v)

    return check


def _items(item: Check) -> Check:
    def check(v: Any) -> bool:
        return not isinstance(v, list) or all(item(x) for x in v)

    return check


def _all(checks: list[Check]) -> Check:
    def check(v: Any) -> bool:
        return all(c(v) for c in checks)

    return check


def _any(checks: list[Check]) -> Check:
    def check(v: Any) -> bool:
        return any(c(v) for c in checks)

    return check


def _if_then(condition: Check, then: Check) -> Check:
    def check(v: Any) -> bool:
        return not condition(v) or then(v)

    return check


def _length(low: int | None, high: int | None) -> Check:
    def check(v: Any) -> bool:
        if not isinstance(v, str):
            return True
        return (low is None or len(v) >= low) and (high is None or len(v) <= high)

    return check


def _pattern(search: Callable[[str], Any]) -> Check:
    def check(v: Any) -> bool:
        return not isinstance(v, str) or search(v) is not None

    return check


def _ref(name: str, cache: dict[str, Check]) -> Check:
    def check(v: Any) -> bool:
        return cache[name](v)

    return check


Compiler = Callable[[Any, dict[str, Any], dict[str, Any], dict[str, Check]], Check]


def _type(value: Any, node: dict[str, Any], defs: dict[str, Any], cache: dict[str, Check]) -> Check:
    names = [value] if isinstance(value, str) else list(value)
    return _one_of_types([_TYPES[n] for n in names])


def _members(allowed: list[Any]) -> Check:
    if not all(isinstance(a, str) for a in allowed):
        raise _Unsupported("const/enum of other than strings")
    return _member(frozenset(allowed))


def _sub(value: Any, defs: dict[str, Any], cache: dict[str, Check]) -> Check:
    return _compile(value, defs, cache)


def _if(value: Any, node: dict[str, Any], defs: dict[str, Any], cache: dict[str, Check]) -> Check:
    if "else" in node:
        raise _Unsupported("else")
    return _if_then(_sub(value, defs, cache), _sub(node.get("then", True), defs, cache))


def _local_ref(
    value: Any, node: dict[str, Any], defs: dict[str, Any], cache: dict[str, Check]
) -> Check:
    if not value.startswith("#/$defs/") or "/" in value[8:]:
        raise _Unsupported(value)
    name = value[8:]
    if name not in cache:
        cache[name] = _always  # a placeholder while a recursive ref compiles
        cache[name] = _compile(defs[name], defs, cache)
    return _ref(name, cache)


# Each keyword the canonical schema uses, and how it compiles ("then" goes with its "if").
_KEYWORDS: dict[str, Compiler] = {
    "type": _type,
    "const": lambda value, node, defs, cache: _members([value]),
    "enum": lambda value, node, defs, cache: _members(list(value)),
    "required": lambda value, node, defs, cache: _required(list(value)),
    "properties": lambda value, node, defs, cache: _properties(
        [(name, _sub(sub, defs, cache)) for name, sub in value.items()]
    ),
    "items": lambda value, node, defs, cache: _items(_sub(value, defs, cache)),
    "allOf": lambda value, node, defs, cache: _all([_sub(sub, defs, cache) for sub in value]),
    "anyOf": lambda value, node, defs, cache: _any([_sub(sub, defs, cache) for sub in value]),
    "if": _if,
    "minLength": lambda value, node, defs, cache: _length(int(value), None),
    "maxLength": lambda value, node, defs, cache: _length(None, int(value)),
    "pattern": lambda value, node, defs, cache: _pattern(re.compile(value).search),
    "$ref": _local_ref,
}


def _compile(node: Any, defs: dict[str, Any], cache: dict[str, Check]) -> Check:
    """A predicate equal to jsonschema's `is_valid` for the keywords in `_KEYWORDS` (local $refs
    only); anything else raises _Unsupported. Only the answer "valid" is trusted: on False the
    full validator runs and reports the errors."""
    if node is True or node == {}:
        return _always
    if not isinstance(node, dict):
        raise _Unsupported(repr(node))
    checks: list[Check] = []
    for keyword, value in node.items():
        if keyword in _ANNOTATIONS or keyword == "then":
            continue
        compiler = _KEYWORDS.get(keyword)
        if compiler is None:
            raise _Unsupported(keyword)
        checks.append(compiler(value, node, defs, cache))
    if not checks:
        return _always
    return checks[0] if len(checks) == 1 else _all(checks)


@lru_cache(maxsize=1)
def _fast_checks() -> dict[str, Check]:
    """The compiled predicate of each event type's validator (absent when it has a keyword the
    compiler does not know)."""
    checks: dict[str, Check] = {}
    for event_type, validator in _validators().items():
        schema = validator.schema
        try:
            checks[event_type] = _compile(schema, schema.get("$defs") or {}, {})
        except (_Unsupported, KeyError, TypeError, re.error):
            log.warning("no fast check for %r events: jsonschema validates them", event_type)
    return checks


def _is_valid(event: Any) -> bool:
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


def _unstorable(event: Any) -> list[dict[str, str]]:
    """What the schema allows but no database stores: strings (keys too) with NUL or a lone
    surrogate, NaN and infinities, nesting deeper than MAX_DEPTH. Each is refused here with a
    reason, as a database error at insert time would fail the whole request."""
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
