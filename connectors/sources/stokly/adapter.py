"""Stokly (Stok.ly, UK inventory/OMS): a poller of its REST API.

What is public (the shared reference `reference/sources.md` §6, mostly [code] from client scripts):
an HMAC-signed grant
(`POST /v1/grant` with ``{accountkey, clientId, signature = hex(HMAC-SHA256(secret, clientId))}``)
returning a bearer token with an expiry; lists paged by ``page`` (0-based) + ``size`` (≤1000) with
``{"data": [...], "metadata": {"count": n}}``; a filter language (``[field]>={value}``, ``&&``,
``{@null;}``); JSON numbers (floats) for money. No webhook API was found, so this is poll-only.

One `poll` call reads one page of one stream; the cursor (JSON) says which stream, which page and
each stream's watermark. A round goes through the streams in order and ends with
``reached_present``:

| stream | endpoint | incremental by | events |
|---|---|---|---|
| listings | ``/v0/channels/{listing_channel_id}/listings`` | a full sweep every ``catalogue_sweep_minutes`` | ``product.updated`` |
| customers | ``/v0/customers`` | ``[{customer_date_field}]>=`` watermark − look-back | ``customer.upserted`` |
| orders | ``/v2/saleorders`` (+ ``/items`` per order) | ``[createdAt]>=`` watermark − look-back | ``order.created``, ``order.status_changed`` (+ a guest ``customer.upserted``) |
| order_status | ``/v2/saleorders`` | orders created in the last ``status_window_days`` | ``order.status_changed`` when ``stage``/``itemStatuses`` differ |
| invoices | ``/v0/invoices`` | ``[issueDate]>=`` watermark − look-back | ``order.status_changed`` (financial: paid) |
| inventory | ``/v1/inventory-records`` | a full sweep every ``stock_sweep_minutes`` | ``stock.changed`` per bin (snapshot) |

Money is read with ``json.loads(..., parse_float=Decimal)``: never a float. Kit components (items
with ``parentId``) keep their quantity and lose their money, which stays on the parent line.
Statuses map through a per-tenant table; an unknown one changes nothing and is reported in
``Page.warnings`` (see `StoklyPage`). Refunds: no public Stokly credit/refund resource was found, so
this adapter emits no ``refund.issued`` (connectors/sources/stokly/README.md).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.models import Connection
from connectors.sources.base import Event, Page, Setting, SourceAdapter, SourceError
from connectors.sources.stokly.api import StoklyAPI, filter_literal, filter_time
from connectors.sources.stokly.mapping import DATED, STREAMS, SWEPT, Mapper, parse_time
from connectors.sources.values import (
    fingerprint,
    rfc3339,
)


@dataclass
class StoklyPage(Page):
    """A page, plus what the engine should raise as alerts (unknown statuses, skipped records).

    Each warning is ``{"code", "message", "subject"}``; the page's events are unaffected."""

    warnings: list[dict[str, str]] = field(default_factory=list)


# -- the poller ------------------------------------------------------------------------------


@dataclass
class Cursor:
    stream: str = STREAMS[0]
    page: int = 0
    marks: dict[str, str] = field(default_factory=dict)  # stream → watermark (source time)
    round_since: str | None = None  # the fixed filter time of the stream's current round
    round_max: str | None = None  # the newest source time seen in this round
    sweeps: dict[str, str] = field(default_factory=dict)  # stream → start of its last sweep
    sweep_at: str | None = None  # the start of the sweep under way

    @classmethod
    def load(cls, text: str) -> Cursor:
        if not text:
            return cls()
        try:
            raw = json.loads(text)
            cursor = cls(**raw)
        except (ValueError, TypeError) as exc:
            raise SourceError(f"Unreadable Stokly cursor: {exc}", permanent=True) from exc
        if cursor.stream not in STREAMS:
            cursor.stream = STREAMS[0]
        return cursor

    def dump(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    def next_stream(self) -> bool:
        """Move on to the next stream; True when that ends the round."""
        index = STREAMS.index(self.stream) + 1
        self.page, self.round_since, self.round_max, self.sweep_at = 0, None, None, None
        self.stream = STREAMS[index % len(STREAMS)]
        return index >= len(STREAMS)


@dataclass(frozen=True)
class _Window:
    """What reading one page of a stream needs: the client, the page, and the times it reads
    from (`since`: the round's filter time; `sweep`: the start of the sweep under way)."""

    api: StoklyAPI
    mapper: Mapper
    page: int
    size: int
    since: datetime | None
    sweep: datetime
    now: datetime

    def since_filter(self, date_field: str) -> list[str]:
        """The filter for records dated from the round's filter time (none: from the start)."""
        since = self.since
        return [f"[{date_field}]>={filter_literal(filter_time(since))}" if since else ""]


#: a page read: its rows, their events, and the source times that move the stream's watermark
_Read = tuple[list[dict[str, Any]], list[Event], list[datetime]]


def _stamps(rows: list[dict[str, Any]], date_field: str) -> list[datetime]:
    return [stamp for row in rows if (stamp := parse_time(row.get(date_field)))]


class StoklyAdapter(SourceAdapter):
    kind = "stokly"
    settings = (
        Setting(
            "base_url",
            "API address",
            "options",
            kind="url",
            initial="https://api.stok.ly",
            guards_secrets=True,
        ),
        Setting("account_key", "Account key", "credentials", help_text="Sent as accountkey."),
        Setting("client_id", "Client id", "credentials"),
        Setting(
            "secret",
            "Client secret",
            "credentials",
            secret=True,
            help_text="Signs the client id (HMAC-SHA256) to get an access token.",
        ),
    )
    can_poll = True

    #: tests replace these
    session_factory: Any = None
    clock: Any = staticmethod(time.time)

    def api(self, connection: Connection) -> StoklyAPI:
        session = self.session_factory() if self.session_factory else None
        return StoklyAPI(connection, session=session, clock=self.clock)

    def test_connection(self, connection: Connection) -> str:
        with self.api(connection) as api:
            rows, count = api.list_page("/v0/items", 0, 1)
        return f"Connected to Stokly: {count if count is not None else len(rows)} items visible."

    def poll(self, connection: Connection, cursor: str) -> Page:
        with self.api(connection) as api:
            return self._poll(api, connection, cursor)

    def _poll(self, api: StoklyAPI, connection: Connection, cursor: str) -> Page:
        state = Cursor.load(cursor)
        mapper = Mapper(str(api.credentials.get("account_key") or connection.pk), api.options)
        now = datetime.fromtimestamp(api.clock(), UTC)
        for _ in range(len(STREAMS)):
            if self._enabled(state.stream, api.options, state, now):
                break
            if state.next_stream():
                return StoklyPage([], state.dump(), reached_present=True)
        events, round_ended = self._read(api, mapper, state, now)
        return StoklyPage(
            events, state.dump(), reached_present=round_ended, warnings=mapper.warnings
        )

    def backfill(self, connection: Connection, start: datetime, end: datetime, cursor: str) -> Page:
        """History is the poll from an empty cursor (every watermark empty: from the start)."""
        return self.poll(connection, cursor)

    def _enabled(
        self, stream: str, options: Mapping[str, Any], state: Cursor, now: datetime
    ) -> bool:
        if stream == "listings" and not options.get("listing_channel_id"):
            return False
        if stream in SWEPT and state.page == 0 and state.sweep_at is None:
            last = parse_time(state.sweeps.get(stream))
            interval = timedelta(minutes=float(options[SWEPT[stream]]))
            if last is not None and now - last < interval:
                return False
        return True

    def _read(
        self, api: StoklyAPI, mapper: Mapper, state: Cursor, now: datetime
    ) -> tuple[list[Event], bool]:
        """One page of the cursor's stream; moves the cursor on. True when the round ended."""
        options = api.options
        size = max(1, min(1000, int(options["page_size"])))
        stream = state.stream
        lookback = timedelta(minutes=float(options["lookback_minutes"]))
        if stream in DATED and state.round_since is None:
            mark = parse_time(state.marks.get(stream))
            state.round_since = rfc3339(mark - lookback) if mark else ""
        if stream in SWEPT and state.sweep_at is None:
            state.sweep_at = rfc3339(now)
        window = _Window(
            api,
            mapper,
            state.page,
            size,
            since=parse_time(state.round_since),
            sweep=parse_time(state.sweep_at) or now,
            now=now,
        )
        readers = {
            "listings": self._listings,
            "customers": self._customers,
            "orders": self._orders,
            "order_status": self._order_statuses,
            "invoices": self._invoices,
            "inventory": self._inventory,
        }
        rows, events, newest = readers[stream](window)

        if newest:
            top = max(newest)
            current = parse_time(state.round_max)
            state.round_max = rfc3339(max(top, current) if current else top)
        if len(rows) < size:  # the stream is read to its end
            if stream in DATED and state.round_max:
                state.marks[stream] = state.round_max
            if stream in SWEPT and state.sweep_at:
                state.sweeps[stream] = state.sweep_at
            return events, state.next_stream()
        state.page += 1
        return events, False

    def _listings(self, w: _Window) -> _Read:
        path = f"/v0/channels/{w.api.options['listing_channel_id']}/listings"
        rows, _ = w.api.list_page(path, w.page, w.size)
        return rows, [e for r in rows if (e := w.mapper.listing_event(r, w.sweep))], []

    def _customers(self, w: _Window) -> _Read:
        date_field = str(w.api.options["customer_date_field"])
        rows, _ = w.api.list_page(
            "/v0/customers", w.page, w.size, sort=date_field, filters=w.since_filter(date_field)
        )
        events = [e for row in rows if (e := w.mapper.customer_event(row, w.now))]
        return rows, events, _stamps(rows, date_field)

    def _orders(self, w: _Window) -> _Read:
        rows = self._sale_orders(w, w.since)
        events: list[Event] = []
        for row in rows:
            events.extend(w.mapper.order_events(row, self._items(w.api, row), w.now))
            events.extend(self._guest(w.mapper, row, w.now))
        return rows, events, _stamps(rows, "createdAt")

    def _order_statuses(self, w: _Window) -> _Read:
        """Orders created within the status window, for their status changes only."""
        start = w.now - timedelta(days=float(w.api.options["status_window_days"]))
        rows = self._sale_orders(w, start)
        events = [
            event
            for row in rows
            for event in w.mapper.order_events(row, None, w.now)
            if event["event_type"] == "order.status_changed"
        ]
        return rows, events, _stamps(rows, "createdAt")

    def _sale_orders(self, w: _Window, start: datetime | None) -> list[dict[str, Any]]:
        filters = [f"[createdAt]>={filter_literal(filter_time(start))}" if start else ""]
        rows, _ = w.api.list_page(
            "/v2/saleorders", w.page, w.size, sort="createdAt", filters=filters
        )
        return rows

    def _invoices(self, w: _Window) -> _Read:
        rows, _ = w.api.list_page(
            "/v0/invoices", w.page, w.size, sort="issueDate", filters=w.since_filter("issueDate")
        )
        events = [e for row in rows if (e := w.mapper.invoice_event(row))]
        return rows, events, _stamps(rows, "issueDate")

    def _inventory(self, w: _Window) -> _Read:
        rows, _ = w.api.list_page("/v1/inventory-records", w.page, w.size)
        return rows, [e for r in rows if (e := w.mapper.stock_event(r, w.sweep))], []

    def _items(self, api: StoklyAPI, order: Mapping[str, Any]) -> list[dict[str, Any]]:
        order_id = order.get("saleOrderId")
        rows: list[dict[str, Any]] = []
        page = 0
        while True:
            batch, count = api.list_page(f"/v2/saleorders/{order_id}/items", page, 1000)
            rows.extend(batch)
            if len(batch) < 1000 or (count is not None and len(rows) >= count):
                return rows
            page += 1

    def _guest(self, mapper: Mapper, order: Mapping[str, Any], now: datetime) -> list[Event]:
        """An order without a Stokly customer but with an email: a guest person, keyed by email."""
        identity = mapper.identity(order)
        if not identity["is_guest"] or not identity["email"]:
            return []
        placed = parse_time(order.get("createdAt")) or now
        email = identity["email"]
        name = (order.get("shipping") or {}).get("name") or {}
        at = rfc3339(placed)
        return [
            mapper.envelope(
                "customer.upserted",
                "customer",
                f"email:{email}",
                f"guest:{fingerprint(email)}:{order.get('saleOrderId')}",
                at,
                {
                    "customer_key": mapper.key("customer", f"email:{email}"),
                    "source_updated_at": at,
                    "first_name": name.get("forename") if isinstance(name, dict) else None,
                    "last_name": name.get("surname") if isinstance(name, dict) else None,
                    "is_guest": True,
                },
                updated_at=at,
                identity=identity,
            )
        ]
