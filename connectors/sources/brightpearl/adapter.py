"""Brightpearl (ERP/OMS): id-only webhooks fetched within the shared budget, and a poller.

Webhooks: Brightpearl POSTs the registered `bodyTemplate` filled in (payloads/brightpearl/
webhook-get-registration.json): `accountCode`, `resourceType`, `id` (an ID set such as
`1-5,99`), `lifecycleEvent`, `fullEvent`, `raisedOn`, `brightpearlVersion`. Nothing in it is
trusted beyond the ids: `parse_webhook` returns notifications, the engine answers 202 at once,
and `fetch` GETs the records (sales orders and credits, goods-out notes, products with their
availability, contacts) on the realtime lane of the account's 200-a-minute budget.

Poller: order search by `updatedOn` (a safety margin behind the newest update seen), the orders
fetched by ID set: reconciles orders, statuses and credits that a lost webhook missed. Backfill:
order search by `createdOn` between two dates.

Consent: a contact's `marketingDetails.isReceiveEmailNewsletter` is the newsletter consent. A
`consent.changed` is made only when the flag differs from the last one seen for that contact
(`connection.options["newsletter"]`: contact id → flag and the change's time); a re-read of an
unchanged flag repeats that change's event id, which the engine drops as a duplicate (and which
recovers the event if the first one was never stored).

Options: `account_code`, `datacentre` (e.g. `euw1`) or `base_url`, `order_status_map`
(orderStatusId → open / on_hold / cancelled / closed), `oauth_url` (tests), `page_size`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from django.db import transaction

from connectors.budget import Lane, RateBudget
from connectors.models import Connection
from connectors.sources.base import (
    Event,
    Fetched,
    ItemError,
    Page,
    Setting,
    SourceAdapter,
    WebhookItems,
    WebhookRequestData,
    signal_warnings,
    warning,
)
from connectors.sources.brightpearl import mapping, products
from connectors.sources.brightpearl.api import BrightpearlApi, BrightpearlError, account_code
from connectors.sources.values import object_at, rfc3339

__all__ = ["BrightpearlAdapter", "BrightpearlError"]

log = logging.getLogger(__name__)

#: resourceType → (GET path template, ids per call)
RESOURCES: dict[str, tuple[str, int]] = {
    "order": ("/order-service/order/{ids}", 200),
    "sales-order": ("/order-service/order/{ids}", 200),
    "sales-credit": ("/order-service/order/{ids}", 200),
    "goods-out-note": ("/warehouse-service/order/*/goods-note/goods-out/{ids}", 500),
    "product": ("/product-service/product/{ids}", 200),
    "contact": ("/contact-service/contact/{ids}", 200),
}
AVAILABILITY = "/warehouse-service/product-availability/{ids}"
ORDER_SEARCH = "/order-service/order-search"
POLL_MARGIN = timedelta(minutes=5)
SEARCH_PAGE = 200  # one search page → one order GET (≤ 200 ids)
ORDER_TYPES = {"1", "3"}  # SALES_ORDER, SALES_CREDIT (the search's orderTypeNames)


def context(connection: Connection, received_at: datetime | None = None) -> mapping.Context:
    options = connection.options or {}
    return mapping.Context(
        account=account_code(connection),
        received_at=received_at or datetime.now(UTC),
        status_map={str(k): str(v) for k, v in (options.get("order_status_map") or {}).items()},
    )


def _chunks(ids: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _records(body: Any) -> list[tuple[str, Mapping[str, Any]]]:
    """`{"response": [...]}` or `{"response": {"id": {...}}}` as (id, record) pairs."""
    response = body.get("response") if isinstance(body, Mapping) else None
    if isinstance(response, list):
        return [
            (str(r.get("id") or r.get("contactId") or ""), r)
            for r in response
            if isinstance(r, Mapping)
        ]
    if isinstance(response, Mapping):
        return [(str(k), v) for k, v in response.items() if isinstance(v, Mapping)]
    return []


class BrightpearlAdapter(SourceAdapter):
    kind = "brightpearl"
    settings = (
        Setting(
            "datacentre",
            "Datacentre",
            "options",
            kind="code",
            initial="euw1",
            help_text="The first part of your API host: euw1, use1, usw1…",
            guards_secrets=True,
        ),
        Setting(
            "account_code",
            "Account code",
            "options",
            kind="code",
            help_text="Your Brightpearl account id, as in the API's URL path.",
        ),
        Setting("app_ref", "App reference", "credentials", help_text="brightpearl-app-ref."),
        Setting(
            "account_token",
            "Account token",
            "credentials",
            secret=True,
            help_text="brightpearl-account-token of the private app.",
        ),
    )
    sends_ids_only = True
    can_poll = True

    def __init__(
        self,
        session_factory: Callable[[], requests.Session] = requests.Session,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        budget_factory: Callable[[Connection], RateBudget] | None = None,
        sleep: Callable[[float], None] | None = None,
        max_wait: float = 2.0,
    ) -> None:
        self.session_factory = session_factory
        self.now = now
        self.budget_factory = budget_factory
        self.sleep = sleep
        self.max_wait = max_wait

    def api(self, connection: Connection, lane: Lane) -> BrightpearlApi:
        kwargs: dict[str, Any] = {
            "lane": lane,
            "session": self.session_factory(),
            "max_wait": self.max_wait,
        }
        if self.budget_factory is not None:
            kwargs["budget"] = self.budget_factory(connection)
        if self.sleep is not None:
            kwargs["sleep"] = self.sleep
        return BrightpearlApi(connection, **kwargs)

    # -- webhooks → notifications ---------------------------------------------------------

    def parse_webhook(self, connection: Connection, request: WebhookRequestData) -> WebhookItems:
        items = WebhookItems()
        try:
            document = json.loads(request.body)
        except (ValueError, UnicodeDecodeError) as exc:
            items.errors.append(ItemError(None, [{"path": "", "message": f"Not JSON: {exc}"}]))
            return items
        bodies = document if isinstance(document, list) else [document]
        expected = (connection.options or {}).get("account_code")
        for index, body in enumerate(bodies):
            errors = _notification_errors(body, expected)
            if errors:
                items.errors.append(ItemError(index, errors))
                continue
            items.notifications.append(
                {
                    "resource_type": str(body["resourceType"]).lower(),
                    "id_set": str(body["id"]),
                    "lifecycle_event": body.get("lifecycleEvent"),
                    "full_event": body.get("fullEvent"),
                    "raised_on": body.get("raisedOn"),
                    "account_code": body.get("accountCode"),
                }
            )
        return items

    # -- fetching -------------------------------------------------------------------------

    def fetch(self, connection: Connection, notification: Mapping[str, Any]) -> list[Event]:
        resource = str(notification.get("resource_type") or "")
        if resource not in RESOURCES:
            raise BrightpearlError(
                f"Syncdesk does not read Brightpearl {resource!r} resources.", permanent=True
            )
        try:
            ids = mapping.expand_id_set(notification.get("id_set", ""))
        except mapping.MappingError as exc:
            raise BrightpearlError(exc.message, permanent=True) from exc
        api = self.api(connection, Lane.REALTIME)
        ctx = context(connection, self.now())
        raised_on = mapping.parse_time(notification.get("raised_on"))
        path, per_call = RESOURCES[resource]
        events: list[Event] = []
        skipped: list[dict[str, str]] = []
        for chunk in _chunks(ids, per_call):
            id_set = mapping.compress_ids(chunk)
            records = _records(api.get(path.format(ids=id_set)))
            if resource in ("order", "sales-order", "sales-credit"):
                events += self._orders(records, ctx, skipped)
            elif resource == "goods-out-note":
                events += self._safely(
                    lambda rid, raw: mapping.goods_out_note_events(rid, raw, ctx),
                    records,
                    skipped,
                    "goods-out note",
                )
            elif resource == "product":
                events += self._products(api, records, id_set, ctx, raised_on)
            else:
                events += self._contacts(connection, records, ctx, skipped)
        return Fetched(events, warnings=skipped + signal_warnings(events))

    def _safely(
        self,
        make: Callable[[str, Mapping[str, Any]], list[Event]],
        records: list[tuple[str, Mapping[str, Any]]],
        skipped: list[dict[str, str]],
        what: str,
    ) -> list[Event]:
        events: list[Event] = []
        for record_id, raw in records:
            try:
                events += make(record_id, raw)
            except mapping.MappingError as exc:
                log.warning("Brightpearl record %s skipped: %s", record_id, exc)
                skipped.append(
                    warning(
                        "record_skipped",
                        f"A Brightpearl {what} could not be read and was skipped: "
                        f"{exc.path} {exc.message}.",
                        record_id,
                    )
                )
        return events

    def _orders(
        self,
        records: list[tuple[str, Mapping[str, Any]]],
        ctx: mapping.Context,
        skipped: list[dict[str, str]],
    ) -> list[Event]:
        return self._safely(
            lambda _rid, raw: mapping.order_events(raw, ctx), records, skipped, "order"
        )

    def _products(
        self,
        api: BrightpearlApi,
        records: list[tuple[str, Mapping[str, Any]]],
        id_set: str,
        ctx: mapping.Context,
        raised_on: datetime | None,
    ) -> list[Event]:
        events = [e for _rid, raw in records if (e := products.product_updated(raw, ctx))]
        skus = {rid: sku for rid, raw in records if (sku := products.product_sku(raw))}
        if skus:
            availability = api.get(AVAILABILITY.format(ids=id_set))
            response = availability.get("response") if isinstance(availability, Mapping) else None
            if isinstance(response, Mapping):
                events += products.stock_events(response, skus, ctx, raised_on)
        return events

    def _contacts(
        self,
        connection: Connection,
        records: list[tuple[str, Mapping[str, Any]]],
        ctx: mapping.Context,
        skipped: list[dict[str, str]] | None = None,
    ) -> list[Event]:
        events = self._safely(
            lambda _rid, raw: [mapping.customer_upserted(raw, ctx)],
            records,
            [] if skipped is None else skipped,
            "contact",
        )
        with transaction.atomic():
            if connection.pk:
                locked = (
                    Connection.objects.select_for_update().only("options").get(pk=connection.pk)
                )
                options = dict(locked.options or {})
            else:
                options = dict(connection.options or {})
            seen: dict[str, str] = dict(options.get("newsletter") or {})
            for _rid, raw in records:
                try:
                    event = _consent(raw, ctx, seen)
                except mapping.MappingError as exc:
                    log.warning("Brightpearl contact consent skipped: %s", exc)
                    continue
                if event is not None:
                    events.append(event)
            options["newsletter"] = seen
            if connection.pk:
                Connection.objects.filter(pk=connection.pk).update(options=options)
            connection.options = options
        return events

    # -- polling and backfill -------------------------------------------------------------

    def poll(self, connection: Connection, cursor: str) -> Page:
        state = _load_cursor(cursor)
        first = int(state.get("first") or 1)
        since = state.get("since")
        api = self.api(connection, Lane.BULK)
        ctx = context(connection, self.now())
        params = {"updatedOn": f"{since}/" if since else None}
        ids, more, returned = self._search(api, params, first)
        skipped: list[dict[str, str]] = []
        events = self._orders(self._get_orders(api, ids), ctx, skipped)
        warnings = skipped + signal_warnings(events)
        newest = mapping.parse_time(state.get("newest"))
        for event in events:
            updated = mapping.parse_time(event.get("source_updated_at"))
            if updated is not None and (newest is None or updated > newest):
                newest = updated
        state["newest"] = rfc3339(newest) if newest else None
        if more:
            state["first"] = first + max(returned, 1)
            return Page(events, json.dumps(state, sort_keys=True), warnings=warnings)
        if newest is not None:
            state["since"] = rfc3339(newest - POLL_MARGIN)
        state["first"] = 1
        return Page(
            events, json.dumps(state, sort_keys=True), reached_present=True, warnings=warnings
        )

    def backfill(self, connection: Connection, start: datetime, end: datetime, cursor: str) -> Page:
        api = self.api(connection, Lane.BULK)
        ctx = context(connection, self.now())
        first = int(cursor or 1)
        params = {"createdOn": f"{rfc3339(start)}/{rfc3339(end)}"}
        ids, more, returned = self._search(api, params, first)
        skipped: list[dict[str, str]] = []
        events = self._orders(self._get_orders(api, ids), ctx, skipped)
        return Page(
            events,
            str(first + max(returned, 1)),
            reached_present=not more,
            warnings=skipped + signal_warnings(events),
        )

    def _search(
        self, api: BrightpearlApi, params: Mapping[str, Any], first: int
    ) -> tuple[list[int], bool, int]:
        """One page of order search: the sales order and credit ids, more pages?, rows returned."""
        page_size = int((api.connection.options or {}).get("page_size") or SEARCH_PAGE)
        body = api.get(
            ORDER_SEARCH, {**params, "pageSize": min(page_size, SEARCH_PAGE), "firstResult": first}
        )
        response = body.get("response") if isinstance(body, Mapping) else None
        if not isinstance(response, Mapping):
            return [], False, 0
        meta = object_at(response, "metaData")
        columns = [c.get("name") for c in meta.get("columns") or () if isinstance(c, Mapping)]
        try:
            id_at, type_at = columns.index("orderId"), columns.index("orderTypeId")
        except ValueError as exc:
            raise BrightpearlError(
                "Order search answered without orderId/orderTypeId columns."
            ) from exc
        ids = [
            int(row[id_at])
            for row in response.get("results") or ()
            if isinstance(row, list) and str(row[type_at]) in ORDER_TYPES
        ]
        returned = int(meta.get("resultsReturned") or len(response.get("results") or ()))
        return ids, bool(meta.get("morePagesAvailable")), returned

    def _get_orders(
        self, api: BrightpearlApi, ids: list[int]
    ) -> list[tuple[str, Mapping[str, Any]]]:
        records: list[tuple[str, Mapping[str, Any]]] = []
        for chunk in _chunks(sorted(set(ids)), RESOURCES["order"][1]):
            records += _records(
                api.get(RESOURCES["order"][0].format(ids=mapping.compress_ids(chunk)))
            )
        return records

    # -- admin ----------------------------------------------------------------------------

    def test_connection(self, connection: Connection) -> str:
        api = self.api(connection, Lane.REALTIME)
        statuses = [
            s
            for _rid, s in _records(api.get("/order-service/order-status"))
            if s.get("orderTypeCode") in ("SO", None)
        ]
        mapped = {str(k) for k in ((connection.options or {}).get("order_status_map") or {})}
        unmapped = [
            f"{s.get('statusId')} {s.get('name')}"
            for s in statuses
            if str(s.get("statusId")) not in mapped
        ]
        line = (
            f"Connected to Brightpearl account {api.account}: {len(statuses)} sales order statuses."
        )
        if unmapped:
            line += f" Not mapped yet (they will change nothing): {', '.join(unmapped)}."
        return line

    def write_back_opt_out(
        self, connection: Connection, email: str, opted_out_at: datetime
    ) -> None:
        """Untick the newsletter flag of every contact with this primary email."""
        api = self.api(connection, Lane.REALTIME)
        body = api.get("/contact-service/contact-search", {"primaryEmail": email})
        response = body.get("response") if isinstance(body, Mapping) else None
        if not isinstance(response, Mapping):
            return
        meta = object_at(response, "metaData")
        columns = [c.get("name") for c in meta.get("columns") or () if isinstance(c, Mapping)]
        if "contactId" not in columns:
            raise BrightpearlError("Contact search answered without a contactId column.")
        at = columns.index("contactId")
        for row in response.get("results") or ():
            if isinstance(row, list):
                api.request(
                    "PATCH",
                    f"/contact-service/contact/{int(row[at])}",
                    json_body=[
                        {
                            "op": "replace",
                            "path": "/marketingDetails/isReceiveEmailNewsletter",
                            "value": False,
                        }
                    ],
                )


def _notification_errors(body: Any, expected_account: Any) -> list[dict[str, str]]:
    if not isinstance(body, Mapping):
        return [{"path": "", "message": "A notification must be a JSON object."}]
    errors = []
    for name in ("resourceType", "id"):
        if not body.get(name):
            errors.append({"path": name, "message": "is required"})
    if errors:
        return errors
    resource = str(body["resourceType"]).lower()
    if resource not in RESOURCES:
        errors.append(
            {
                "path": "resourceType",
                "message": f"Syncdesk does not read {resource!r}; unsubscribe it.",
            }
        )
    try:
        mapping.expand_id_set(body["id"])
    except mapping.MappingError as exc:
        errors.append({"path": "id", "message": exc.message})
    if expected_account and body.get("accountCode") and body["accountCode"] != expected_account:
        errors.append({"path": "accountCode", "message": "is not this connection's account"})
    return errors


def _consent(raw: Mapping[str, Any], ctx: mapping.Context, seen: dict[str, str]) -> Event | None:
    """The contact's newsletter consent event, and `seen` updated (contact id → "flag|at|status"):
    a new event only when the flag differs from the last one seen; otherwise that change's event
    again (a duplicate to the engine)."""
    flag = mapping.newsletter_flag(raw)
    if flag is None:
        return None
    contact_id = mapping.Contact(raw, ctx).id
    bit = "1" if flag else "0"
    previous = seen.get(contact_id, "").split("|")
    if len(previous) == 3 and previous[0] == bit:
        _, at_text, status = previous
        at = mapping.parse_time(at_text)
    else:
        at = mapping.parse_time(raw.get("updatedOn")) or ctx.received_at
        # The first sight of an unticked box is "never subscribed", not an opt-out.
        status = (
            "subscribed" if flag else ("unsubscribed" if len(previous) == 3 else "not_subscribed")
        )
        at_text = rfc3339(at)
        seen[contact_id] = f"{bit}|{at_text}|{status}"
    return mapping.consent_changed(
        raw, ctx, status, f"contact:{contact_id}:newsletter:{status}:{at_text}", at
    )


def _load_cursor(cursor: str) -> dict[str, Any]:
    if not cursor:
        return {}
    try:
        state = json.loads(cursor)
    except ValueError:
        return {"since": cursor}
    return state if isinstance(state, dict) else {}
