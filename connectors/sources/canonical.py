"""The canonical webhook: any WMS, ERP or iPaaS flow that posts our canonical events.

The body is JSON: one event, a list of events, or ``{"events": [...], "backfill": true}``. The header ``X-Syncdesk-Backfill: true`` marks a backfill too.
Patchworks relays the same format (``source.via`` says so).
"""

from __future__ import annotations

import json
from typing import Any

from connectors.models import Connection
from connectors.sources.base import ItemError, SourceAdapter, WebhookItems, WebhookRequestData
from connectors.sources.registry import register

JSON_TYPES = ("application/json", "application/cloudevents-batch+json")


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in {"1", "true", "yes"})


@register("canonical")
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
            document = json.loads(request.body)
        except (ValueError, UnicodeDecodeError) as exc:
            items.errors.append(ItemError(None, [{"path": "", "message": f"Not JSON: {exc}"}]))
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
