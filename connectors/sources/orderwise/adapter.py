"""OrderWise (UK ERP/WMS, customer-hosted): a poller of API Export Definitions, and the legacy push.

What is public (the shared reference `reference/sources.md` §7, [3p] and [code]): each customer runs
its own instance (a base URL containing ``OWAPI``/``AWAPI``); Basic credentials, either on every
call or exchanged at ``GET …/token/gettoken`` for a bearer token; keyset paging by ``limit`` +
``last_id``; and, as the change feed, **API Export Definitions**: admin-authored SQL run by id and
polled. Their times are the server's local time. No payload is public, so the columns are **ours**:
the SQL on the setup page (templates/connectors/setup/orderwise.html) returns, for every definition,

- ``row_id``: an ascending integer key (``oh_id``, ``dh_id``…), the keyset;
- ``amended``: when the row last changed, server local time;
- the stream's columns below (OrderWise's own names where sources.md lists them).

| stream | one row per | events |
|---|---|---|
| orders | order line | ``order.created``, ``order.status_changed`` (through the status map), a guest ``customer.upserted`` |
| deliveries | delivery line | ``shipment.dispatched``; ``shipment.tracking_updated`` once a consignment number appears |
| credit_notes | credit note line | ``refund.issued`` |
| customers | customer contact | ``customer.upserted`` (shared web accounts skipped: they are not people) |
| products | variant | ``product.updated`` |
| stock | variant × location | ``stock.changed`` (snapshot) |

Each poll reads one page of one stream: ``GET {base_url}{export_path}`` with ``limit``, ``last_id``
and ``since`` (watermark less the look-back, server local time). The adapter applies the keyset and
the window itself too, so a definition that ignores the parameters still pages correctly.

The **legacy e-commerce push** (`parse_webhook`): the session POSTs the form field ``ExportData=``
carrying XML (``order/orderNo``, ``orderStatus``, ``deliveries/…/deliveryNumber|deliveryDate|
courierName|consignmentNumbers``).

Statuses (``os_description``) are per tenant: ``options["status_map"]``. An unknown status changes
nothing: no status event, and a warning (`OrderwisePage.warnings` when polled, an item error when
pushed) for the engine to raise as an alert.
"""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from connectors.models import Connection
from connectors.sources.base import (
    Event,
    ItemError,
    Page,
    Setting,
    SourceAdapter,
    SourceError,
    WebhookItems,
    WebhookRequestData,
)
from connectors.sources.orderwise.api import OrderwiseAPI, export_rows, row_id_of
from connectors.sources.orderwise.mapping import DEFAULTS, Mapper, tenant_zone

STREAMS = ("products", "customers", "orders", "deliveries", "credit_notes", "stock")


@dataclass
class OrderwisePage(Page):
    """A page, plus what the engine should raise as alerts: ``{"code", "message", "subject"}``.

    Codes: ``unknown_status`` (not in the status map: nothing changed), ``window_gap`` (longer since
    the last poll than the export definition's window: changes may be missed, run a backfill),
    ``oversized_order`` (one order has more lines than a page), ``unreadable`` (a row skipped)."""

    warnings: list[dict[str, str]] = field(default_factory=list)


# -- the adapter -----------------------------------------------------------------------------


@dataclass
class Cursor:
    stream: str = STREAMS[0]
    last_id: int = 0
    marks: dict[str, str] = field(default_factory=dict)  # stream → newest `amended` seen (UTC)
    round_max: str | None = None
    polled: dict[str, str] = field(default_factory=dict)  # stream → when its last round ended

    @classmethod
    def load(cls, text: str) -> Cursor:
        if not text:
            return cls()
        try:
            cursor = cls(**json.loads(text))
        except (ValueError, TypeError) as exc:
            raise SourceError(f"Unreadable OrderWise cursor: {exc}", permanent=True) from exc
        if cursor.stream not in STREAMS:
            cursor.stream = STREAMS[0]
        return cursor

    def dump(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    def next_stream(self) -> bool:
        index = STREAMS.index(self.stream) + 1
        self.stream, self.last_id, self.round_max = STREAMS[index % len(STREAMS)], 0, None
        return index >= len(STREAMS)


class OrderwiseAdapter(SourceAdapter):
    kind = "orderwise"
    settings = (
        Setting(
            "base_url",
            "API address",
            "options",
            kind="url",
            guards_secrets=True,
            help_text="Your own OrderWise server's API, usually ending in /OWAPI or /AWAPI.",
        ),
        Setting("username", "API user", "credentials", help_text="A dedicated API user."),
        Setting("password", "Password", "credentials", secret=True),
    )
    can_poll = True

    #: tests replace these
    session_factory: Any = None
    clock: Any = staticmethod(time.time)

    def api(self, connection: Connection) -> OrderwiseAPI:
        session = self.session_factory() if self.session_factory else None
        return OrderwiseAPI(connection, session=session, clock=self.clock)

    def mapper(self, connection: Connection) -> Mapper:
        options = {**DEFAULTS, **(connection.options or {})}
        return Mapper(str(options.get("account") or connection.pk), options, tenant_zone(options))

    def test_connection(self, connection: Connection) -> str:
        options = {**DEFAULTS, **(connection.options or {})}
        definitions = options.get("export_definitions") or {}
        if not definitions:
            raise SourceError(
                "No export definitions set (options: export_definitions).", permanent=True
            )
        stream, number = next(iter(definitions.items()))
        with self.api(connection) as api:
            rows = export_rows(
                api.get(str(options["export_path"]).format(id=number), {"limit": 1, "last_id": 0})
            )
        return f"Connected to OrderWise: export definition {number} ({stream}) answered {len(rows)} row(s)."

    def poll(self, connection: Connection, cursor: str) -> Page:
        mapper = self.mapper(connection)
        state = Cursor.load(cursor)
        definitions: Mapping[str, Any] = mapper.options.get("export_definitions") or {}
        if not definitions:
            raise SourceError(
                "No export definitions set (options: export_definitions).", permanent=True
            )
        for _ in range(len(STREAMS)):
            if state.stream in definitions:
                break
            if state.next_stream():
                return OrderwisePage([], state.dump(), reached_present=True)
        with self.api(connection) as api:
            events, ended = self._read(api, mapper, state, definitions[state.stream])
        return OrderwisePage(events, state.dump(), reached_present=ended, warnings=mapper.warnings)

    def backfill(self, connection: Connection, start: datetime, end: datetime, cursor: str) -> Page:
        """History: the same definitions from an empty cursor (each from its first row)."""
        return self.poll(connection, cursor)

    def _read(
        self, api: OrderwiseAPI, mapper: Mapper, state: Cursor, definition: Any
    ) -> tuple[list[Event], bool]:
        options = mapper.options
        size = max(2, int(options["page_size"]))
        now = datetime.fromtimestamp(api.clock(), UTC)
        stream = state.stream
        lookback = timedelta(minutes=float(options["lookback_minutes"]))
        mark = datetime.fromisoformat(state.marks[stream]) if stream in state.marks else None
        since = mark - lookback if mark else None
        last_polled = state.polled.get(stream)
        window = timedelta(minutes=float(options["export_window_minutes"]))
        if (
            state.last_id == 0
            and last_polled
            and now - datetime.fromisoformat(last_polled) > window
        ):
            mapper.warn(
                "window_gap",
                f"Longer since the last poll of {stream} than its export definition's window "
                f"({window}): changes in between may be missed. Run a backfill.",
                stream,
            )
        params: dict[str, Any] = {"limit": size, "last_id": state.last_id}
        if since is not None:
            params["since"] = since.astimezone(mapper.zone).strftime("%Y-%m-%dT%H:%M:%S")
        raw_rows = export_rows(api.get(str(options["export_path"]).format(id=definition), params))
        full = len(raw_rows) >= size
        rows = []
        for row in raw_rows:
            row_id = row_id_of(row)
            if row_id is None:
                mapper.warn("unreadable", "Row without an integer row_id: skipped.", stream)
            elif row_id > state.last_id:
                rows.append(row)
        rows.sort(key=lambda r: row_id_of(r) or 0)
        if full and rows:
            # the last id's rows may run on to the next page: read it whole next time
            last = row_id_of(rows[-1])
            kept = [r for r in rows if row_id_of(r) != last]
            if kept:
                rows = kept
            else:
                mapper.warn(
                    "oversized_order", f"Row {last} has more rows than a page ({size}).", stream
                )
        in_window = []
        newest = None
        for row in rows:
            amended, _ = mapper.time(row.get("amended"))
            if amended is not None:
                newest = max(newest, amended) if newest else amended
                if since is not None and amended < since:
                    continue  # before the window: read in an earlier round
            in_window.append(row)
        mapper.since = since
        events = getattr(mapper, stream)(in_window, now)
        if newest is not None:
            current = datetime.fromisoformat(state.round_max) if state.round_max else None
            state.round_max = (max(newest, current) if current else newest).isoformat()
        if full and rows:
            state.last_id = row_id_of(rows[-1]) or state.last_id
            return events, False
        if state.round_max:
            state.marks[stream] = state.round_max
        state.polled[stream] = now.isoformat()
        return events, state.next_stream()

    # -- the legacy e-commerce push
    def parse_webhook(self, connection: Connection, request: WebhookRequestData) -> WebhookItems:
        items = WebhookItems()
        received = datetime.now(UTC)
        charset = "utf-8"
        match = re.search(r"charset=([\w-]+)", request.content_type or "", re.I)
        if match:
            charset = match[1]
        try:
            text = request.body.decode(charset)
        except (LookupError, UnicodeDecodeError):
            text = request.body.decode("latin-1")
        if text.lstrip().startswith("<"):
            xml_text = text
        else:
            fields = parse_qs(text, keep_blank_values=True)
            values = fields.get("ExportData")
            if not values:
                items.errors.append(
                    ItemError(
                        None, [{"path": "ExportData", "message": "No ExportData form field."}]
                    )
                )
                return items
            xml_text = values[0]
        if not xml_text.lstrip().startswith("<"):
            items.errors.append(
                ItemError(
                    None,
                    [
                        {
                            "path": "ExportData",
                            "message": "A '~'-separated list of ids (an acknowledgement), not status "
                            "XML: nothing to sync. Point the session's status export here instead.",
                        }
                    ],
                )
            )
            return items
        if "<!DOCTYPE" in xml_text.upper() or "<!ENTITY" in xml_text.upper():
            items.errors.append(
                ItemError(None, [{"path": "ExportData", "message": "DTDs are refused."}])
            )
            return items
        try:
            document = ET.fromstring(xml_text)
        except ET.ParseError as exc:
            items.errors.append(
                ItemError(None, [{"path": "ExportData", "message": f"Not XML: {exc}"}])
            )
            return items
        mapper = self.mapper(connection)
        mapper.legacy(document, received, items)
        if not items.events and not items.errors:
            items.errors.append(
                ItemError(None, [{"path": "ExportData", "message": "No <order> in the XML."}])
            )
        return items
