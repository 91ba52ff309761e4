"""The canonical webhook: any WMS, ERP or iPaaS flow that posts our canonical events.

The body is JSON: one event, a list of events, or ``{"events": [...], "backfill": true}``. The header ``X-Syncdesk-Backfill: true`` marks a backfill too.
Patchworks relays the same format (``source.via`` says so).
"""

from __future__ import annotations

import json
from typing import Any

from connectors.models import Connection
from connectors.sources.base import ItemError, SourceAdapter, WebhookItems, WebhookRequestData

JSON_TYPES = ("application/json", "application/cloudevents-batch+json")
# A body whose arrays and objects nest deeper than this is refused whole as malformed. Without a
# fixed limit, whether a deep body parses at all would depend on how deep the parser's own call
# stack happens to be (json's C scanner counts against Python's recursion limit), so one body
# could be refused on one path and taken on another. Well under the recursion limit, so anything
# within it parses on every path; each event is then held to the schema's own, much lower limit
# (64 levels: ingest's validation answers a deeper *event* invalid, field by field).
MAX_JSON_DEPTH = 512


def nesting_depth(document: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep arrays and objects nest in `document` (a scalar is 0), counted without recursion;
    stops counting once past `limit`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def load_json(body: bytes) -> Any:
    """The JSON document of a webhook body; ValueError (with a message for the sender) when it is
    not JSON or nests deeper than MAX_JSON_DEPTH."""
    too_deep = f"Not JSON we accept: arrays and objects nest deeper than {MAX_JSON_DEPTH} levels"
    try:
        document = json.loads(body)
    except RecursionError:
        raise ValueError(too_deep) from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"Not JSON: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"Not JSON: {exc}") from exc
    if nesting_depth(document) > MAX_JSON_DEPTH:
        raise ValueError(too_deep)
    return document


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in {"1", "true", "yes"})


class CanonicalAdapter(SourceAdapter):
    kind = "canonical"

    def parse_webhook(self, connection: Connection, request: WebhookRequestData) -> WebhookItems:
        items = WebhookItems(backfill=_flag(request.headers.get("X-Syncdesk-Backfill", "")))
        media_type = request.content_type.split(";", 1)[0].strip().lower()
        if media_type not in JSON_TYPES:
            items.errors.append(
                ItemError(
                    None,
                    [
                        {
                            "path": "",
                            "message": f"Content-Type must be application/json, not {media_type or 'missing'!r}",
                        }
                    ],
                )
            )
            return items
        try:
            document = load_json(request.body)
        except ValueError as exc:
            items.errors.append(ItemError(None, [{"path": "", "message": str(exc)}]))
            return items
        if isinstance(document, dict) and "events" in document:
            items.backfill = items.backfill or _flag(document.get("backfill"))
            document = document["events"]
        candidates = document if isinstance(document, list) else [document]
        if not candidates:
            items.errors.append(ItemError(None, [{"path": "events", "message": "No events."}]))
        for index, candidate in enumerate(candidates):
            if isinstance(candidate, dict):
                items.events.append(candidate)
                items.positions.append(index)
            else:
                items.errors.append(
                    ItemError(index, [{"path": "", "message": "An event must be a JSON object."}])
                )
        return items

    def test_connection(self, connection: Connection) -> str:
        return "A push-only source: events arrive on its webhook URL."
