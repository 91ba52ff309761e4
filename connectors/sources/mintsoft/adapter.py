"""Mintsoft (The Access Group's 3PL WMS): order callbacks and a poller.

Webhooks: Mintsoft calls a URL per order (its `ExtraCode` fields, set when the order is created or
through `PUT /api/Order/{id}/ConnectActions`): `ExtraCode1` on despatch, `ExtraCode2` on cancel,
`ExtraCode3` on delivery (Tracking Events module only), `ExtraCode5` on split. The body of each is
the order JSON of `GET /api/Order/{id}`, which does not say which callback it is, so each URL
names itself: `/hooks/<token>/?callback=despatched|cancelled|delivered|split` (or the header
`X-Mintsoft-Callback`). Without a name, a cancelled or despatched status is read from the body;
a delivery can never be inferred.

Poller: one call per `poll`, cycling orders (`/api/Order/List` by `SinceLastUpdated`, paged),
returns (`/api/Return/SearchByDate`, a day at a time) and stock per warehouse
(`/api/Reports/ProductsInLocationReport`); the cycle ends with `reached_present`.

Options (connection.options): `base_url`, `client_id`, `warehouse_ids` (list), `time_zone`
(default Europe/London: Mintsoft writes times without an offset), `currency` (default GBP),
`status_map` (status id → canonical dimensions, overriding the built-in table),
`returns_lookback_days` (default 30), `page_size` (default 100).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests

from connectors.models import Connection
from connectors.sources.base import (
    ItemError,
    Page,
    Setting,
    SettingsForm,
    SourceAdapter,
    WebhookItems,
    WebhookRequestData,
    signal_warnings,
    warning,
)
from connectors.sources.mintsoft import mapping, stock
from connectors.sources.mintsoft.api import MintsoftApi, MintsoftError

__all__ = ["MintsoftAdapter", "MintsoftError"]

log = logging.getLogger(__name__)

POLL_MARGIN = timedelta(minutes=5)  # re-read this much before the newest update seen
DEFAULT_PAGE_SIZE = 100
PHASES = ("orders", "returns", "stock")


def context(connection: Connection, received_at: datetime | None = None) -> mapping.Context:
    options = connection.options or {}
    try:
        tz = ZoneInfo(str(options.get("time_zone") or "Europe/London"))
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo("Europe/London")
    return mapping.Context(
        account=str(options.get("client_id") or options.get("account") or f"c{connection.pk}"),
        tz=tz,
        currency=str(options.get("currency") or "GBP").upper(),
        received_at=received_at or datetime.now(UTC),
        status_overrides=options.get("status_map") or {},
    )


def _callback(request: WebhookRequestData) -> str | None:
    """The callback the URL names (`?callback=despatched`, or the `X-Mintsoft-Callback` header)."""
    named = request.query.get("callback") or []
    value = named[0] if named else _header(request.headers, "X-Mintsoft-Callback")
    return value.strip().lower() if value and value.strip() else None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


class MintsoftAdapter(SourceAdapter):
    kind = "mintsoft"
    settings = (
        Setting(
            "base_url",
            "API address",
            "options",
            kind="url",
            initial="https://api.mintsoft.co.uk",
            guards_secrets=True,
        ),
        Setting(
            "client_id",
            "Client id",
            "options",
            required=False,
            help_text="Optional: the Mintsoft client whose orders and stock this connection reads.",
        ),
        Setting(
            "api_key",
            "API key",
            "credentials",
            secret=True,
            required=False,
            help_text="Sent as the ms-apikey header: ask Mintsoft for a key that never expires. "
            "Or leave it blank and give a username and password to log in with.",
        ),
        Setting("username", "Username", "credentials", required=False),
        Setting("password", "Password", "credentials", secret=True, required=False),
    )
    can_poll = True

    def validate_settings(self, form: SettingsForm) -> None:
        """An API key, or a username and password to get one."""
        if form.given("api_key"):
            return
        if not form.given("username") and not form.given("password"):
            form.add_error("api_key", "Give an API key, or a username and password.")
            return
        for name in ("username", "password"):
            if not form.given(name) and not form.has_error(name):
                form.add_error(name, "Needed with the username and password way in.")

    def __init__(
        self,
        session_factory: Callable[[], requests.Session] = requests.Session,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.session_factory = session_factory
        self.now = now

    def api(self, connection: Connection) -> MintsoftApi:
        return MintsoftApi(connection, session=self.session_factory())

    # -- callbacks ------------------------------------------------------------------------

    def parse_webhook(self, connection: Connection, request: WebhookRequestData) -> WebhookItems:
        items = WebhookItems()
        try:
            document = json.loads(request.body)
        except (ValueError, UnicodeDecodeError) as exc:
            items.errors.append(ItemError(None, [{"path": "", "message": f"Not JSON: {exc}"}]))
            return items
        named = _callback(request)
        if named is not None and named not in mapping.CALLBACKS:
            items.errors.append(
                ItemError(
                    None,
                    [
                        {
                            "path": "callback",
                            "message": f"Unknown callback {named!r}: one of {', '.join(mapping.CALLBACKS)}.",
                        }
                    ],
                )
            )
            return items
        orders = document if isinstance(document, list) else [document]
        ctx = context(connection, self.now())
        for index, order in enumerate(orders):
            if not isinstance(order, Mapping):
                items.errors.append(
                    ItemError(index, [{"path": "", "message": "An order must be a JSON object."}])
                )
                continue
            try:
                events = mapping.callback_events(order, ctx, named or mapping.infer_callback(order))
            except mapping.MappingError as exc:
                items.errors.append(ItemError(index, [{"path": exc.path, "message": exc.message}]))
                continue
            items.events.extend(events)
            items.positions.extend([index] * len(events))
        return items

    # -- polling --------------------------------------------------------------------------

    def poll(self, connection: Connection, cursor: str) -> Page:
        state = _load_cursor(cursor)
        api = self.api(connection)
        ctx = context(connection, self.now())
        phase = state.get("phase", "orders")
        skipped: list[dict[str, str]] = []
        if phase == "returns":
            events = self._poll_returns(api, ctx, connection, state, skipped)
        elif phase == "stock":
            events = self._poll_stock(api, ctx, connection, state)
        else:
            events = self._poll_orders(api, ctx, connection, state, skipped)
        reached = state.pop("_reached_present", False)
        return Page(
            events=events,
            cursor=json.dumps(state, sort_keys=True),
            reached_present=reached,
            warnings=skipped + signal_warnings(events),
        )

    def _poll_orders(
        self,
        api: MintsoftApi,
        ctx: mapping.Context,
        connection: Connection,
        state: dict[str, Any],
        skipped: list[dict[str, str]],
    ) -> list[dict[str, Any]]:
        orders_state = state.setdefault("orders", {})
        page_no = int(orders_state.get("page") or 1)
        limit = int((connection.options or {}).get("page_size") or DEFAULT_PAGE_SIZE)
        rows = api.get(
            "/api/Order/List",
            {
                "ClientId": (connection.options or {}).get("client_id"),
                "SinceLastUpdated": orders_state.get("since"),
                "PageNo": page_no,
                "Limit": limit,
                "IncludeOrderItems": "true",
                "SortOldestFirst": "true",
            },
        )
        rows = rows if isinstance(rows, list) else []
        events: list[dict[str, Any]] = []
        newest = orders_state.get("newest")
        for row in rows:
            if not isinstance(row, Mapping):
                continue
            try:
                events.extend(mapping.order_events(row, ctx))
            except mapping.MappingError as exc:
                log.warning("Mintsoft order skipped (%s): %s", row.get("ID"), exc)
                skipped.append(_skipped("order", row, exc))
                continue
            updated = mapping.parse_time(row.get("LastUpdated"), ctx.tz)
            if updated is not None:
                stamp = updated[0].astimezone(ctx.tz).replace(tzinfo=None).isoformat()
                newest = max(newest or stamp, stamp)
        orders_state["newest"] = newest
        if len(rows) >= limit:
            orders_state["page"] = page_no + 1
        else:
            # All caught up: next time from the newest update seen, less a margin (the clocks of
            # Mintsoft's writers and our reads differ; duplicates are dropped by id).
            if newest:
                since = datetime.fromisoformat(newest) - POLL_MARGIN
                orders_state["since"] = since.isoformat(timespec="seconds")
            orders_state["page"] = 1
            state["phase"] = "returns"
        return events

    def _poll_returns(
        self,
        api: MintsoftApi,
        ctx: mapping.Context,
        connection: Connection,
        state: dict[str, Any],
        skipped: list[dict[str, str]],
    ) -> list[dict[str, Any]]:
        returns_state = state.setdefault("returns", {})
        today = ctx.received_at.astimezone(ctx.tz).date()
        lookback = int((connection.options or {}).get("returns_lookback_days") or 30)
        day = date.fromisoformat(returns_state["date"]) if returns_state.get("date") else None
        day = day or today - timedelta(days=lookback)
        rows = api.get("/api/Return/SearchByDate", {"Date": day.isoformat()})
        rows = rows if isinstance(rows, list) else []
        reasons: dict[int, Mapping[str, Any]] | None = None
        events = []
        for row in rows:
            if not isinstance(row, Mapping):
                continue
            items = row.get("ReturnItems")
            if items is None and row.get("ID"):
                items = api.get(f"/api/Return/{row['ID']}/Items")
                row = {**row, "ReturnItems": items if isinstance(items, list) else []}
            needs_reasons = any(
                isinstance(i, Mapping) and not i.get("StockAction")
                for i in row.get("ReturnItems") or ()
            )
            if needs_reasons and reasons is None:
                listed = api.get("/api/Return/Reasons")
                reasons = {
                    int(r["ID"]): r
                    for r in (listed if isinstance(listed, list) else [])
                    if isinstance(r, Mapping) and r.get("ID") is not None
                }
            try:
                event = mapping.return_received(row, ctx, reasons)
            except mapping.MappingError as exc:
                log.warning("Mintsoft return skipped (%s): %s", row.get("ID"), exc)
                skipped.append(_skipped("return", row, exc))
                continue
            if event is not None:
                events.append(event)
        if day < today:
            returns_state["date"] = (day + timedelta(days=1)).isoformat()
        else:
            # Today is read again next cycle, and yesterday too: a return booked in on one day
            # may be confirmed the next.
            returns_state["date"] = (today - timedelta(days=1)).isoformat()
            state["phase"] = "stock"
        return events

    def _poll_stock(
        self, api: MintsoftApi, ctx: mapping.Context, connection: Connection, state: dict[str, Any]
    ) -> list[dict[str, Any]]:
        options = connection.options or {}
        warehouses: list[Any] = list(options.get("warehouse_ids") or []) or [None]
        stock_state = state.setdefault("stock", {})
        index = int(stock_state.get("index") or 0) % len(warehouses)
        warehouse = warehouses[index]
        rows = api.get(
            "/api/Reports/ProductsInLocationReport",
            {"warehouseId": warehouse, "clientId": options.get("client_id")},
        )
        rows = rows if isinstance(rows, list) else []
        location_key = str(warehouse) if warehouse is not None else None
        levels = stock.stock_levels(
            (r for r in rows if isinstance(r, Mapping)), ctx, warehouse_key=location_key
        )
        seen: dict[str, dict[str, str]] = stock_state.setdefault("seen", {})
        as_of = ctx.received_at
        events = []
        current: dict[str, dict[str, str]] = {}
        for (location, sku_raw), level in sorted(levels.items()):
            fingerprint = stock.stock_fingerprint(level)
            current.setdefault(location, {})[sku_raw] = fingerprint
            if seen.get(location, {}).get(sku_raw) != fingerprint:
                events.append(stock.stock_changed(level, ctx, location, as_of))
        # A SKU the report stopped listing has nothing left there: say so once.
        locations = {location_key} if location_key is not None else set(seen) | set(current)
        for location in sorted(locations):
            for sku_raw in sorted(set(seen.get(location, {})) - set(current.get(location, {}))):
                level = stock.empty_level(sku_raw, location)
                events.append(stock.stock_changed(level, ctx, location, as_of))
            seen[location] = current.get(location, {})
        stock_state["index"] = index + 1
        if index + 1 >= len(warehouses):
            stock_state["index"] = 0
            state["phase"] = "orders"
            state["_reached_present"] = True
        return events

    def backfill(self, connection: Connection, start: datetime, end: datetime, cursor: str) -> Page:
        """Orders placed between `start` and `end`, a page at a time (`SinceDate`, oldest first)."""
        ctx = context(connection, self.now())
        page_no = int(cursor or 1)
        limit = int((connection.options or {}).get("page_size") or DEFAULT_PAGE_SIZE)
        rows = self.api(connection).get(
            "/api/Order/List",
            {
                "ClientId": (connection.options or {}).get("client_id"),
                "SinceDate": start.astimezone(ctx.tz)
                .replace(tzinfo=None)
                .isoformat(timespec="seconds"),
                "PageNo": page_no,
                "Limit": limit,
                "IncludeOrderItems": "true",
                "SortOldestFirst": "true",
            },
        )
        rows = rows if isinstance(rows, list) else []
        events = []
        skipped: list[dict[str, str]] = []
        past_end = False
        for row in rows:
            if not isinstance(row, Mapping):
                continue
            placed = mapping.parse_time(row.get("OrderDate"), ctx.tz)
            if placed is not None and placed[0] >= end:
                past_end = True
                continue
            try:
                events.extend(mapping.order_events(row, ctx))
            except mapping.MappingError as exc:
                log.warning("Mintsoft order skipped (%s): %s", row.get("ID"), exc)
                skipped.append(_skipped("order", row, exc))
        done = past_end or len(rows) < limit
        return Page(
            events=events,
            cursor=str(page_no + 1),
            reached_present=done,
            warnings=skipped + signal_warnings(events),
        )

    def test_connection(self, connection: Connection) -> str:
        statuses = self.api(connection).get("/api/Order/Statuses")
        count = len(statuses) if isinstance(statuses, list) else 0
        renamed = [
            f"{s.get('Name')}→{s.get('ExternalName')}"
            for s in (statuses if isinstance(statuses, list) else [])
            if isinstance(s, Mapping)
            and s.get("ExternalName")
            and s.get("Name") != s.get("ExternalName")
            and s.get("Name") not in ("INVOICED", "INVOICEFAILED")
        ]
        line = f"Connected to Mintsoft: {count} order statuses."
        if renamed:
            line += f" Renamed by this account (mapped by id, so no change needed): {', '.join(renamed)}."
        return line


def _skipped(what: str, row: Mapping[str, Any], exc: mapping.MappingError) -> dict[str, str]:
    return warning(
        "record_skipped",
        f"A Mintsoft {what} could not be read and was skipped: {exc.path} {exc.message}.",
        str(row.get("OrderNumber") or row.get("ID") or ""),
    )


def _load_cursor(cursor: str) -> dict[str, Any]:
    if not cursor:
        return {"phase": "orders"}
    try:
        state = json.loads(cursor)
    except ValueError:
        # An old-style cursor (a bare timestamp) means "orders since then".
        return {"phase": "orders", "orders": {"since": cursor}}
    return state if isinstance(state, dict) else {"phase": "orders"}
