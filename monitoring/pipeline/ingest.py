"""Step 1, arrive: validate canonical events against the published schema, deduplicate them on
(workspace, source system, source account, source_event_id) and store them as rows to stage.

`receive_webhook` answers the webhook table of design.md; `ingest_events` is shared by the
webhook, the notification fetch and the poller, so the same event arriving by two of them is
stored once.
"""

from __future__ import annotations

import json
import logging
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from connectors.models import Connection
from connectors.sources.base import ItemError, SourceAdapter, WebhookItems, WebhookRequestData
from exceptions_inbox.recording import record_occurrence
from monitoring.models import Flow, SourceEvent, SourceNotification, WebhookRequest
from monitoring.pipeline.normalise import parse_time
from monitoring.pipeline.rows import arrays, insert_rows
from monitoring.pipeline.wake import wake_fetch, wake_staging

log = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "canonical-event.schema.json"
MAX_BODY_BYTES = 5 * 1024 * 1024
STORED_PART_BYTES = 64 * 1024  # of a body over the limit
MAX_ERRORS_KEPT = 50
ORDER_CHILDREN = {"shipment.dispatched", "refund.issued", "return.received"}


def max_body_bytes() -> int:
    return int(getattr(settings, "SYNCDESK_WEBHOOK_MAX_BYTES", MAX_BODY_BYTES))


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


def _compile(node: Any, defs: dict[str, Any], cache: dict[str, Check]) -> Check:
    """A predicate equal to jsonschema's `is_valid` for the keywords the canonical schema uses
    (type, const and enum of strings, required, properties, items, allOf, anyOf, if/then,
    minLength, maxLength, pattern and local $refs); anything else raises _Unsupported. Only the
    answer "valid" is trusted: on False the full validator runs and reports the errors."""
    if node is True or node == {}:
        return _always
    if not isinstance(node, dict):
        raise _Unsupported(repr(node))
    checks: list[Check] = []
    for keyword, value in node.items():
        if keyword in _ANNOTATIONS or keyword == "then":  # "then" goes with its "if"
            continue
        if keyword == "type":
            names = [value] if isinstance(value, str) else list(value)
            checks.append(_one_of_types([_TYPES[n] for n in names]))
        elif keyword in ("const", "enum"):
            allowed = [value] if keyword == "const" else list(value)
            if not all(isinstance(a, str) for a in allowed):
                raise _Unsupported(keyword)
            checks.append(_member(frozenset(allowed)))
        elif keyword == "required":
            checks.append(_required(list(value)))
        elif keyword == "properties":
            checks.append(
                _properties([(name, _compile(sub, defs, cache)) for name, sub in value.items()])
            )
        elif keyword == "items":
            checks.append(_items(_compile(value, defs, cache)))
        elif keyword in ("allOf", "anyOf"):
            subs = [_compile(sub, defs, cache) for sub in value]
            checks.append(_all(subs) if keyword == "allOf" else _any(subs))
        elif keyword == "if":
            if "else" in node:
                raise _Unsupported("else")
            condition = _compile(value, defs, cache)
            checks.append(_if_then(condition, _compile(node.get("then", True), defs, cache)))
        elif keyword == "minLength":
            checks.append(_length(int(value), None))
        elif keyword == "maxLength":
            checks.append(_length(None, int(value)))
        elif keyword == "pattern":
            checks.append(_pattern(re.compile(value).search))
        elif keyword == "$ref":
            if not value.startswith("#/$defs/") or "/" in value[8:]:
                raise _Unsupported(value)
            name = value[8:]
            if name not in cache:
                cache[name] = _always  # a placeholder while a recursive ref compiles
                cache[name] = _compile(defs[name], defs, cache)
            checks.append(_ref(name, cache))
        else:
            raise _Unsupported(keyword)
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


@dataclass
class Result:
    index: int
    status: str  # accepted, duplicate, invalid
    source_event_id: str = ""
    event_id: int | None = None
    errors: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "status": self.status}
        if self.source_event_id:
            out["source_event_id"] = self.source_event_id
        if self.event_id is not None:
            out["event_id"] = self.event_id
        if self.errors:
            out["errors"] = self.errors
        return out


def order_ref_for(event: Mapping[str, Any], join_key: str) -> str:
    """The value naming the workspace's order, by the flow's join key."""
    links = event.get("links") or {}
    data = event.get("data") or {}
    if join_key == Flow.JoinKey.CHANNEL_ORDER_REF:
        value = links.get("channel_order_ref") or data.get("channel_order_ref")
    else:
        value = links.get("order_number") or data.get("order_number")
        if not value and event.get("event_type") in ORDER_CHILDREN:
            value = (event.get("entity") or {}).get("source_ref")
    return str(value or "")[:255]


def source_version(event: Mapping[str, Any]) -> Any:
    data = event.get("data") or {}
    for value in (
        data.get("revision"),
        event.get("source_updated_at"),
        data.get("as_of"),
        event.get("occurred_at"),
    ):
        parsed = utc_time(value)
        if parsed is not None:
            return parsed
    return None


def _flow_for(flows: Sequence[Flow], event_type: str) -> Flow | None:
    return next((f for f in flows if f.takes(event_type)), None)


def ingest_events(
    connection: Connection,
    events: Sequence[Any],
    *,
    via: str,
    positions: Sequence[int] | None = None,
    backfill: bool = False,
    request: WebhookRequest | None = None,
    notification: SourceNotification | None = None,
) -> list[Result]:
    """Validate and store events; one result per event, in order. Call inside a transaction:
    the rows and the wake-up commit together."""
    now = timezone.now()
    intake = uuid.uuid4()
    positions = list(positions) if positions is not None else list(range(len(events)))
    flows = list(Flow.objects.filter(source=connection, is_active=True).order_by("pk"))
    results: list[Result] = []
    rows: dict[tuple[str, str, str], SourceEvent] = {}
    by_key: dict[tuple[str, str, str], list[Result]] = {}
    for index, event in zip(positions, events, strict=True):
        errors = validate_event(event)
        sid = str(event.get("source_event_id", ""))[:255] if isinstance(event, dict) else ""
        if errors:
            results.append(Result(index, "invalid", sid, errors=errors))
            continue
        source = event["source"]
        key = (source["system"], source.get("account") or "", sid)
        result = Result(index, "accepted", sid)
        results.append(result)
        if key in rows:
            result.status = "duplicate"
            by_key[key].append(result)
            continue
        by_key[key] = [result]
        flow = _flow_for(flows, event["event_type"])
        row = SourceEvent(
            workspace_id=connection.workspace_id,
            connection=connection,
            flow=flow,
            request=request,
            notification=notification,
            via=via,
            intake=intake,
            is_backfill=backfill or via == SourceEvent.Via.BACKFILL,
            source_system=key[0],
            source_account=key[1],
            source_event_id=sid,
            event_type=event["event_type"],
            entity_type=event["entity"]["type"],
            entity_key=event["entity"]["key"],
            source_version=source_version(event),
            occurred_at=utc_time(event["occurred_at"]) or now,
            received_at=now,
            next_attempt_at=now,
            envelope=event,
            order_ref=order_ref_for(event, flow.join_key if flow else Flow.JoinKey.ORDER_NUMBER),
            lane=SourceEvent.Lane.BULK if backfill else SourceEvent.Lane.REALTIME,
        )
        if flow is None:
            row.state = SourceEvent.State.SKIPPED
            row.reason = f"No active flow of this connection takes {event['event_type']}."
            row.staged_at = now
        rows[key] = row
    if rows:
        columns = ("id", "source_system", "source_account", "source_event_id", "intake")
        stored: list[tuple[Any, ...]] = []
        if arrays():
            # Not bulk_create: Django sends the envelopes as a jsonb[] array, which psycopg
            # escapes document by document, a third of the webhook's CPU (rows.py).
            stored = insert_rows(list(rows.values()), ignore_conflicts=True, returning=columns)
        else:
            SourceEvent.objects.bulk_create(rows.values(), ignore_conflicts=True, batch_size=500)
        if len(stored) < len(rows):  # duplicates (of stored events): their ids, read back
            stored = list(
                SourceEvent.objects.filter(
                    workspace_id=connection.workspace_id,
                    source_event_id__in={k[2] for k in rows},
                    source_system__in={k[0] for k in rows},
                ).values_list(*columns)
            )
        for pk, system, account, sid, row_intake in stored:
            for result in by_key.get((system, account, sid), ()):
                result.event_id = pk
                if row_intake != intake:
                    result.status = "duplicate"
        wake_flows = {
            r.flow_id for r in rows.values() if r.flow_id and r.state == SourceEvent.State.RECEIVED
        }
        if wake_flows:
            wake_staging(wake_flows, lane="bulk" if backfill else "realtime")
    return results


@dataclass
class Answer:
    status: int
    body: dict[str, Any]


def _stored_headers(headers: Mapping[str, str]) -> dict[str, str]:
    keep = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in ("authorization", "cookie", "proxy-authorization"):
            continue
        if lower.startswith("x-") or lower in ("content-type", "content-length", "user-agent"):
            keep[name] = value[:500]
    return keep


def _record_malformed(
    connection: Connection, stored: WebhookRequest, message: str, errors: Iterable[Any]
) -> None:
    flows = list(Flow.objects.filter(source=connection).order_by("pk")[:1])
    record_occurrence(
        workspace=connection.workspace,
        kind="malformed_payload",
        event_key=stored.key,
        stage="ingest",
        message=message,
        flow_key=flows[0].key if flows else "",
        flow_label=flows[0].name if flows else "",
        subject_key=f"connection:{connection.pk}",
        subject_label=connection.name,
        detail={"request_id": stored.pk, "errors": list(errors)[:MAX_ERRORS_KEPT]},
    )


def receive_too_large(
    connection: Connection,
    first_part: bytes,
    content_type: str,
    headers: Mapping[str, str],
    size: int,
) -> Answer:
    """Over the size limit: keep the headers and the first part, as an exception; answer 413."""
    with transaction.atomic():
        stored = WebhookRequest.objects.create(
            workspace_id=connection.workspace_id,
            connection=connection,
            content_type=content_type[:200],
            headers=_stored_headers(headers),
            body=first_part[:STORED_PART_BYTES],
            size=size,
            truncated=True,
            status_code=413,
        )
        _record_malformed(
            connection,
            stored,
            f"Body of {size} bytes is over the limit of {max_body_bytes()} bytes.",
            [],
        )
    return Answer(413, {"error": "too_large", "limit": max_body_bytes(), "request_id": stored.pk})


def receive_webhook(
    connection: Connection, adapter: SourceAdapter, data: WebhookRequestData
) -> Answer:
    """Store the body whole, then its events (or notifications); the answer commits with them."""
    with transaction.atomic():
        stored = WebhookRequest.objects.create(
            workspace_id=connection.workspace_id,
            connection=connection,
            content_type=data.content_type[:200],
            headers=_stored_headers(data.headers),
            body=data.body,
            size=len(data.body),
        )
        try:
            items = adapter.parse_webhook(connection, data)
        except Exception as exc:  # an adapter bug must not lose the body
            log.exception("adapter %s failed to parse request %s", adapter.kind, stored.pk)
            items = WebhookItems()
            items.errors.append(ItemError(None, [{"path": "", "message": f"Unreadable: {exc}"}]))
        answer = _store_items(connection, stored, items)
        WebhookRequest.objects.filter(pk=stored.pk).update(
            status_code=answer.status,
            accepted=answer.body.get("accepted", 0),
            duplicates=answer.body.get("duplicates", 0),
            invalid=answer.body.get("invalid", 0),
        )
    return answer


def _store_items(connection: Connection, stored: WebhookRequest, items: WebhookItems) -> Answer:
    if items.notifications:
        notes = SourceNotification.objects.bulk_create(
            [
                SourceNotification(
                    workspace_id=connection.workspace_id,
                    connection=connection,
                    request=stored,
                    payload=payload,
                )
                for payload in items.notifications
            ]
        )
        wake_fetch([n.pk for n in notes if n.pk is not None])
    results = ingest_events(
        connection,
        items.events,
        positions=items.positions,
        via=SourceEvent.Via.WEBHOOK,
        backfill=items.backfill,
        request=stored,
    )
    invalid = [r for r in results if r.status == "invalid"]
    unreadable = [
        {"index": e.index, "errors": e.errors} for e in items.errors
    ]  # not even a candidate event
    body: dict[str, Any] = {
        "request_id": stored.pk,
        "accepted": sum(r.status == "accepted" for r in results),
        "duplicates": sum(r.status == "duplicate" for r in results),
        "invalid": len(invalid) + sum(e.index is not None for e in items.errors),
        "notifications": len(items.notifications),
        "results": sorted(
            [r.as_dict() for r in results]
            + [
                {"index": e.index, "status": "invalid", "errors": e.errors}
                for e in items.errors
                if e.index is not None
            ],
            key=lambda r: r["index"],
        ),
    }
    if invalid or items.errors:
        errors = unreadable + [{"index": r.index, "errors": r.errors} for r in invalid]
        _record_malformed(
            connection,
            stored,
            f"{len(errors)} item(s) of webhook request {stored.pk} could not be read as events.",
            errors,
        )
        body["errors"] = [e for e in unreadable if e["index"] is None]
    valid = body["accepted"] + body["duplicates"] + body["notifications"]
    return Answer(202 if valid else 400, body)
