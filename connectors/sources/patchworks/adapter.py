"""Patchworks (UK iPaaS): process flows that relay events to us, and opt-outs written back.

Patchworks has no business schema of its own (the shared reference `reference/sources.md` §8):
a flow pulls from one connector and pushes whatever its scripts build. So the contract is ours: a
flow posts

1. **canonical events** (exactly what the canonical webhook takes: one event, a list, or
   ``{"events": [...], "backfill": true}``), or
2. the **standard start-flow payload** Patchworks' own inbound API uses: ``{"payload": "<JSON text>"}``,
   the body stringified inside ``payload``. The inner document is canonical events, or the
   despatch shape of Patchworks' documented example (``ORDER`` + ``DATA[]`` lines with ``SKU``,
   ``QUANTITY``, ``CARRIER``, ``TRACKING_NUMBER``), which becomes a ``shipment.dispatched``.

Every event gets ``source.via = "patchworks"``. Authenticity: the connection's webhook token in the
URL (as Patchworks' own trigger webhooks carry ``patchworks_signature``), or the same token sent as
``Authorization: Bearer <token>`` to a tokenless route (`connection_for_bearer` resolves it), so the
secret stays out of URLs and Patchworks' logs.

Opt-outs made in DotDigital are POSTed to a Patchworks trigger webhook (`write_back_opt_out`):
``options["opt_out_webhook_url"]`` plus, from the encrypted credentials, ``opt_out_signature``
(sent as the ``patchworks_signature`` query parameter) and/or ``opt_out_bearer_token``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from connectors.models import Connection
from connectors.sources.base import (
    Event,
    ItemError,
    Setting,
    SourceError,
    WebhookItems,
    WebhookRequestData,
)
from connectors.sources.canonical.adapter import CanonicalAdapter
from connectors.sources.values import rfc3339

VIA = "patchworks"
NAMESPACE = uuid.UUID("6f1c1b4e-2f7a-4b0e-9a51-5d1f3c2b7a10")  # eventgen's, so ids agree
TIMEOUT = (5.0, 30.0)  # connect, read: a trigger webhook answers at once ("Flow initialised.")
DESPATCH_KEYS = {"ORDER", "DATA"}


def bearer_token(headers: Mapping[str, str]) -> str:
    """The token of an ``Authorization: Bearer …`` header; empty when missing or malformed."""
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def connection_for_bearer(headers: Mapping[str, str]) -> Connection | None:
    """The Patchworks connection whose webhook token is sent as ``Authorization: Bearer …``.

    For the tokenless webhook route (``POST /hooks/``): the token is compared as the URL token
    is (hashed, constant time). None when the header is missing, malformed or names no
    Patchworks connection."""
    token = bearer_token(headers)
    if not token:
        return None
    connection = Connection.for_webhook_token(token)
    if connection is None or connection.kind != Connection.Kind.PATCHWORKS:
        return None
    return connection


def _now() -> datetime:
    return datetime.now(UTC)


def _despatch_event(
    connection: Connection, document: Mapping[str, Any]
) -> tuple[Event | None, str]:
    """Patchworks' documented start-flow example (a WMS despatch) as a ``shipment.dispatched``.

    It carries no time, so the event's time is when we received it (``received_time``), and no
    shipment id, so the shipment key is the order plus a fingerprint of its lines and tracking."""
    order = str(document.get("ORDER") or "").strip()
    rows = document.get("DATA")
    if not order:
        return None, "ORDER is empty."
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        return None, "DATA must be a non-empty list of line objects."
    lines: list[dict[str, Any]] = []
    tracking: list[str] = []
    carriers: list[str] = []
    for row in rows:
        raw_qty = str(row.get("QUANTITY", "")).strip()
        try:
            quantity = Decimal(raw_qty)
        except ArithmeticError:
            return None, f"QUANTITY {raw_qty!r} is not a number."
        sku_raw = row.get("SKU")
        lines.append(
            {
                "line_key": str(row["HOST_LINE_ID"]) if row.get("HOST_LINE_ID") else None,
                "sku": str(sku_raw).strip() if sku_raw is not None else None,
                "sku_raw": sku_raw,
                "quantity": int(quantity) if quantity == quantity.to_integral() else str(quantity),
            }
        )
        number = str(row.get("TRACKING_NUMBER") or "").strip()
        if number and number not in tracking:
            tracking.append(number)
        carrier = str(row.get("CARRIER") or "").strip()
        if carrier and carrier not in carriers:
            carriers.append(carrier)
    account = str(connection.options.get("source_account") or connection.pk)
    system = str(connection.options.get("source_system") or VIA)
    fingerprint = hashlib.sha256(
        json.dumps([order, lines, tracking], sort_keys=True, default=str).encode()
    ).hexdigest()[:16]
    shipment_id = f"{order}:{fingerprint}"
    source_event_id = f"{system}:despatch:{shipment_id}"
    received = rfc3339(_now())
    order_key = f"{system}:{account}:order:{order}"
    event: Event = {
        "schema": "sync.event/v1",
        "event_type": "shipment.dispatched",
        "event_id": str(
            uuid.uuid5(NAMESPACE, f"{system}|{account}|shipment.dispatched|{source_event_id}")
        ),
        "source": {"system": system, "account": account, "channel": None, "via": VIA},
        "source_event_id": source_event_id,
        "source_event_id_kind": "derived",
        "occurred_at": received,
        "occurred_at_quality": "received_time",
        "received_at": received,
        "entity": {
            "type": "shipment",
            "key": f"{system}:{account}:shipment:{shipment_id}",
            "source_id": None,
            "source_ref": order,
        },
        "links": {"order_key": order_key, "order_number": order},
        "identity": {"quality": "none"},
        "data": {
            "shipment_key": f"{system}:{account}:shipment:{shipment_id}",
            "order_key": order_key,
            "dispatched_at": received,
            "lines": lines,
            "tracking_numbers": tracking,
            "carrier": {"code": carriers[0], "name": carriers[0]} if len(carriers) == 1 else None,
            "carriers": carriers,
        },
    }
    return event, ""


class PatchworksAdapter(CanonicalAdapter):
    kind = "patchworks"
    settings = (
        Setting(
            "opt_out_webhook_url",
            "Opt-out trigger webhook",
            "options",
            required=False,
            kind="url",
            guards_secrets=True,
            help_text="Optional: the Patchworks trigger URL that opt-outs made in DotDigital are "
            "posted to (without its patchworks_signature).",
        ),
        Setting(
            "opt_out_signature",
            "Trigger signature",
            "credentials",
            secret=True,
            required=False,
            help_text="The trigger's patchworks_signature.",
        ),
        Setting(
            "opt_out_bearer_token",
            "Trigger bearer token",
            "credentials",
            secret=True,
            required=False,
        ),
    )

    def parse_webhook(self, connection: Connection, request: WebhookRequestData) -> WebhookItems:
        items = super().parse_webhook(connection, request)
        if items.errors and not items.events:
            return items  # not JSON at all: the canonical adapter said why
        if len(items.events) == 1 and _is_start_flow(items.events[0]):
            items = self._parse_start_flow(connection, request, items.events[0])
        for event in items.events:
            source = event.get("source")
            if isinstance(source, dict):
                source["via"] = VIA
        return items

    def _parse_start_flow(
        self, connection: Connection, request: WebhookRequestData, outer: Mapping[str, Any]
    ) -> WebhookItems:
        """``{"payload": "<JSON text>"}``: read the inner text as the body it stands for."""
        text = str(outer["payload"])
        try:
            inner = json.loads(text)
        except ValueError as exc:
            items = WebhookItems()
            items.errors.append(
                ItemError(None, [{"path": "payload", "message": f"Not JSON text: {exc}"}])
            )
            return items
        if isinstance(inner, dict) and inner.keys() >= DESPATCH_KEYS:
            items = WebhookItems()
            event, problem = _despatch_event(connection, inner)
            if event is None:
                items.errors.append(ItemError(0, [{"path": "payload", "message": problem}]))
            else:
                items.events.append(event)
                items.positions.append(0)
            return items
        # Anything else must be canonical events; the engine's schema check says what is wrong.
        nested = WebhookRequestData(text.encode(), "application/json", request.headers)
        items = super().parse_webhook(connection, nested)
        flag = outer.get("backfill")
        if flag is True or (isinstance(flag, str) and flag.lower() in {"1", "true", "yes"}):
            items.backfill = True
        return items

    def test_connection(self, connection: Connection) -> str:
        url = str(connection.options.get("opt_out_webhook_url") or "")
        if not url:
            return "Push-only: process flows post to this connection's webhook URL. No opt-out webhook is set."
        host = urlsplit(url).netloc
        return (
            "Push-only: process flows post to this connection's webhook URL. Opt-outs go to "
            f"{host} (not called by this test: it would start the flow)."
        )

    def write_back_opt_out(
        self, connection: Connection, email: str, opted_out_at: datetime
    ) -> None:
        """POST the opt-out to the flow's trigger webhook; raise SourceError when it is refused.

        4xx other than 408/429 is permanent (a wrong URL or signature will not mend by retrying);
        timeouts, dropped connections, 408, 429 and 5xx are transient."""
        url = str(connection.options.get("opt_out_webhook_url") or "").strip()
        if not url:
            raise SourceError("No opt-out webhook URL is set on this connection.", permanent=True)
        credentials: dict[str, Any] = dict(connection.credentials or {})
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        signature = str(credentials.get("opt_out_signature") or "")
        if signature and not any(k == "patchworks_signature" for k, _ in query):
            query.append(("patchworks_signature", signature))
        target = urlunsplit(parts._replace(query=urlencode(query)))
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        token = str(credentials.get("opt_out_bearer_token") or "")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        body = {
            "event_type": "consent.changed",
            "channel": "email",
            "status": "unsubscribed",
            "email": email,
            "opted_out_at": rfc3339(opted_out_at),
            "origin": "dotdigital",
            "idempotency_key": hashlib.sha256(
                f"{connection.pk}|{email}|{rfc3339(opted_out_at)}".encode()
            ).hexdigest(),
        }
        where = f"{parts.scheme}://{parts.netloc}{parts.path}"  # never the signature
        try:
            with requests.Session() as session:
                response = session.post(target, json=body, headers=headers, timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise SourceError(f"Patchworks opt-out webhook {where}: {type(exc).__name__}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        permanent = 400 <= status < 500 and status not in (408, 429)
        raise SourceError(
            f"Patchworks opt-out webhook {where} answered {status}: {response.text[:200]}",
            permanent=permanent,
        )


def _is_start_flow(document: Mapping[str, Any]) -> bool:
    """The start-flow envelope: a ``payload`` string and nothing canonical beside it."""
    return isinstance(document.get("payload"), str) and not {"schema", "event_type"} & set(document)
