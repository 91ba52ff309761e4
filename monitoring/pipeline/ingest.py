"""Step 1, arrive: validate canonical events against the published schema, deduplicate them on
(workspace, source system, source account, source_event_id) and store them as rows to stage.

`receive_webhook` answers the webhook table of design.md; `ingest_events` is shared by the
webhook, the notification fetch and the poller, so the same event arriving by two of them is
stored once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from connectors.models import Connection
from connectors.sources.base import ItemError, SourceAdapter, WebhookItems, WebhookRequestData
from exceptions_inbox.recording import record_occurrence
from monitoring.models import Flow, SourceEvent, SourceNotification, WebhookRequest
from monitoring.pipeline.event_schema import MAX_ERRORS_KEPT, utc_time, validate_event
from monitoring.pipeline.lane_rules import LANES, intake_lane, quiet_zero_snapshots
from monitoring.pipeline.normalise import is_credit_document
from monitoring.pipeline.rows import arrays, insert_rows
from monitoring.pipeline.wake import wake_fetch, wake_staging

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 5 * 1024 * 1024
STORED_PART_BYTES = 64 * 1024  # of a body over the limit
ORDER_CHILDREN = {"shipment.dispatched", "refund.issued", "return.received"}
ORDER_BODIES = {"order.created", "order.updated"}


def max_body_bytes() -> int:
    return int(getattr(settings, "SYNCDESK_WEBHOOK_MAX_BYTES", MAX_BODY_BYTES))


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
    """The value naming the workspace's order, by the flow's join key. A credit note or return
    sent as an order document names the order it credits in `links` only: its `data` is its own."""
    links = event.get("links") or {}
    data = event.get("data") or {}
    if event.get("event_type") in ORDER_BODIES and is_credit_document(data):
        return str(links.get(join_key) or "")[:255] if isinstance(links, dict) else ""
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


def _routing_flows(connection: Connection) -> list[Flow]:
    """The connection's active flows, with only the columns routing reads (of some thirty): a
    one-event request reads them on every call."""
    qs = Flow.objects.filter(source=connection, is_active=True).only(
        "pk", "event_types", "join_key"
    )
    return list(qs.order_by("pk"))


def _flow_for(flows: Sequence[Flow], event_type: str) -> Flow | None:
    return next((f for f in flows if f.takes(event_type)), None)


def _store_rows(
    connection: Connection,
    rows: dict[tuple[str, str, str], SourceEvent],
    by_key: dict[tuple[str, str, str], list[Result]],
    intake: uuid.UUID,
) -> None:
    """Insert the new events, skipping those stored already, and give every result its event's
    id; an event stored by an earlier intake makes its results duplicates."""
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
    flows = _routing_flows(connection)
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
            lane=intake_lane(
                event["event_type"],
                event.get("data"),
                backfill=backfill or via == SourceEvent.Via.BACKFILL,
            ),
        )
        if flow is None:
            row.state = SourceEvent.State.SKIPPED
            row.reason = f"No active flow of this connection takes {event['event_type']}."
            row.staged_at = now
        rows[key] = row
    if rows:
        quiet_zero_snapshots(connection.workspace_id, rows.values())
        _store_rows(connection, rows, by_key, intake)
        for lane in LANES:
            wake_staging(
                {
                    r.flow_id
                    for r in rows.values()
                    if r.flow_id and r.state == SourceEvent.State.RECEIVED and r.lane == lane
                },
                lane=lane,
            )
    return results


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    #: whether an event of the body carries a data signal (`signal_warnings`): only then are the
    #: stored events read back for the inbox's warnings
    signalled: bool = False


QUERY_KEY = ":query"  # no HTTP header can be named so (HTTP/2 writes its pseudo-headers alike)


def _stored_headers(headers: Mapping[str, str], query_string: str = "") -> dict[str, str]:
    """The headers kept with a stored request (never a credential), and the URL's query string
    under `QUERY_KEY`: for some sources (Mintsoft's callback URLs) it is what says what happened."""
    keep = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in ("authorization", "cookie", "proxy-authorization"):
            continue
        if lower.startswith("x-") or lower in ("content-type", "content-length", "user-agent"):
            keep[name] = value[:500]
    if query_string:
        keep[QUERY_KEY] = query_string[:2000]
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
    """Store the body whole, then its events (or notifications); the answer commits with them.
    Inside the caller's transaction when there is one (no savepoint: a failure fails it all)."""
    with transaction.atomic(savepoint=False):
        stored = WebhookRequest.objects.create(
            workspace_id=connection.workspace_id,
            connection=connection,
            content_type=data.content_type[:200],
            headers=_stored_headers(data.headers, data.query_string),
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
    signalled = any(
        isinstance(e, dict) and isinstance(e.get("data"), dict) and e["data"].get("signal")
        for e in items.events
    )
    return Answer(202 if valid else 400, body, signalled)
