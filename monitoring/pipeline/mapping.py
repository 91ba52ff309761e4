"""Field mappings: the merged state, as DotDigital writes. Pure functions over preloaded rows.

What each staged event becomes (one `OpSpec` per destination key; `plan.py` coalesces them):

| event | operations |
|---|---|
| customer.upserted | the contact (its mapped data fields) |
| consent.changed | a subscription change (`consent.py` decides at send time) |
| order.*, shipment.*, refund.issued, return.received | the contact (aggregates), its `Orders` record, list memberships |
| product.updated | the account-scoped `Products` record |
| stock.changed | the account-scoped `Stock` record (saleable units over every location), none while a location's is unknown |

Data fields come from the flow's `FieldMapping` rows (a new flow gets the defaults:
FIRSTNAME, LASTNAME, ORDER_COUNT, LTV, LAST_ORDER_DATE, LAST_DISPATCH_DATE, REFUNDED, paths
`customer.<attribute>`); aggregate ones only once the flow's backfill is complete. Each field and
collection is written by one mapping from the merged state, so an ERP and a WMS never overwrite
each other: the ERP brings the money, the WMS the dispatch, into the same order record.

Values are kept in their wire form (what DotDigital's JSON takes: numbers, ISO 8601 UTC strings,
booleans); money stays `Decimal` in the state and becomes a JSON number only here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from monitoring.models import (
    DEFAULT_DISPATCHED_LIST,
    DEFAULT_RECENT_BUYERS_LIST,
    Customer,
    FieldMapping,
    Flow,
    Order,
    Product,
    SourceEvent,
)
from monitoring.pipeline import transforms
from monitoring.pipeline.normalise import clean_sku

CONTACT_EVENTS = {"customer.upserted"}
ORDER_EVENTS = {
    "order.created",
    "order.updated",
    "order.status_changed",
    "shipment.dispatched",
    "shipment.tracking_updated",
    "shipment.carrier_scanned",
    "refund.issued",
    "return.received",
}

# Insight collections: name, scope, DotDigital collection type.
ORDERS = ("Orders", "contact", "orders")
PRODUCTS = ("Products", "account", "catalog")
STOCK = ("Stock", "account", "custom")
COLLECTIONS = {c[0]: c for c in (ORDERS, PRODUCTS, STOCK)}

# DotDigital data field types per mapping type.
DATA_FIELD_TYPES: dict[str, str] = {
    FieldMapping.Type.STRING.value: "String",
    FieldMapping.Type.NUMERIC.value: "Numeric",
    FieldMapping.Type.DATE.value: "Date",
    FieldMapping.Type.BOOLEAN.value: "Boolean",
}

# Lists programs enrol from, configured per flow (`Flow.dispatched_list`, `recent_buyers_list`
# and their periods); these are a new flow's defaults. `post_purchase` lists are left when the
# order is refunded.
DISPATCHED_TODAY = DEFAULT_DISPATCHED_LIST
RECENT_BUYERS = DEFAULT_RECENT_BUYERS_LIST


@dataclass(frozen=True)
class ListRule:
    name: str
    post_purchase: bool
    keep_for: timedelta


LIST_RULES = (
    ListRule(DISPATCHED_TODAY, post_purchase=True, keep_for=timedelta(days=1)),
    ListRule(RECENT_BUYERS, post_purchase=False, keep_for=timedelta(days=30)),
)


def list_rules(flow: Flow | None) -> tuple[ListRule, ...]:
    """The lists a flow's events keep (none named: none kept); without a flow, the defaults.
    "Back in stock" is not among them: no source sends who asked to be told (configuration only)."""
    if flow is None:
        return LIST_RULES
    rules = []
    if flow.dispatched_list:
        keep = timedelta(hours=flow.dispatched_keep_hours)
        rules.append(ListRule(flow.dispatched_list, post_purchase=True, keep_for=keep))
    if flow.recent_buyers_list:
        keep = timedelta(days=flow.recent_buyer_days)
        rules.append(ListRule(flow.recent_buyers_list, post_purchase=False, keep_for=keep))
    return tuple(rules)


@dataclass
class OpSpec:
    """One write wanted in DotDigital, before coalescing."""

    key: str
    kind: str
    record_key: str
    payload: dict[str, Any]
    contact_key: str = ""
    collection: str = ""
    customer_id: int | None = None


@dataclass(frozen=True)
class StockTotal:
    """A SKU's saleable units over every location: None when any location's is unknown (a sum
    of the known ones would claim the others hold none), `derived` when any is derived."""

    saleable: int | None
    as_of: datetime | None = None
    derived: bool = False


UNKNOWN_STOCK = StockTotal(None)
NO_SALEABLE = (
    "Not written: the SKU's saleable stock is unknown at a location (on-hand only, or no "
    "snapshot yet), so DotDigital's Stock record keeps its last Saleable and InStock."
)


def stock_total(levels: Iterable[tuple[int | None, datetime | None, list[str]]]) -> StockTotal:
    """The total of a SKU's levels, each (saleable, as of, derived quantities)."""
    levels = list(levels)
    if not levels or any(saleable is None for saleable, _, _ in levels):
        return UNKNOWN_STOCK
    return StockTotal(
        saleable=sum(saleable or 0 for saleable, _, _ in levels),
        as_of=max((as_of for _, as_of, _ in levels if as_of), default=None),
        derived=any("saleable" in (derived or []) for _, _, derived in levels),
    )


@dataclass
class Context:
    """The state a batch of events needs, loaded set-based (a few queries per batch)."""

    now: datetime
    customers: dict[int, Customer] = field(default_factory=dict)
    orders: dict[int, Order] = field(default_factory=dict)
    shipments: dict[int, list[Any]] = field(default_factory=dict)  # order id → shipments
    products: dict[tuple[int, str], Product] = field(default_factory=dict)
    stock: dict[tuple[int, str], StockTotal] = field(default_factory=dict)
    mappings: dict[int, list[FieldMapping]] = field(default_factory=dict)  # flow id → mappings
    latest_dispatch: dict[int, tuple[datetime | None, bool]] = field(default_factory=dict)
    enrolments: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    list_rules: dict[int, tuple[ListRule, ...]] = field(default_factory=dict)  # flow id → rules
    # Why an event asks nothing of DotDigital, where it is not "nothing to change".
    reasons: dict[int, str] = field(default_factory=dict)  # event id → reason

    def rules_for(self, flow_id: int | None) -> tuple[ListRule, ...]:
        """The flow's list rules, read once per batch (the planner's batches are per flow)."""
        if not flow_id:
            return LIST_RULES
        if flow_id not in self.list_rules:
            self.list_rules[flow_id] = list_rules(Flow.objects.filter(pk=flow_id).first())
        return self.list_rules[flow_id]


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def number(value: Decimal | None) -> float | int | None:
    """A Decimal as a JSON number: its shortest float repr reads back as the same decimal."""
    if value is None:
        return None
    if value == value.to_integral_value() and abs(value) < 2**53:
        return int(value)
    return float(value)


def wire_value(value: Any, kind: str, transform: str = "") -> Any:
    """A state value as the mapping's DotDigital type takes it (None clears the field)."""
    if value is None:
        return None
    value = transforms.apply(value, transform)  # trim, case, date:<format>, scale:<n>, map:…
    if kind == FieldMapping.Type.NUMERIC:
        if isinstance(value, Decimal):
            return number(value)
        return value
    if kind == FieldMapping.Type.DATE:
        if isinstance(value, datetime):
            if "date_only" in transform.split("|"):
                return value.astimezone(UTC).strftime("%Y-%m-%d")
            return iso(value)
        return value
    if kind == FieldMapping.Type.BOOLEAN:
        return bool(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return iso(value)
    return str(value)


def resolve(path: str, customer: Customer) -> Any:
    """The value at `path` (`customer.<attribute>`) in the merged state."""
    head, _, attribute = path.partition(".")
    if head != "customer" or not attribute or attribute.startswith("_"):
        raise KeyError(path)
    return getattr(customer, attribute)


def contact_fields(
    customer: Customer, mappings: Iterable[FieldMapping], sends_aggregates: bool
) -> dict[str, dict[str, Any]]:
    """Mapped data fields of a contact: target → {path, type, transform, value}."""
    out: dict[str, dict[str, Any]] = {}
    for mapping in mappings:
        if not mapping.enabled or (mapping.is_aggregate and not sends_aggregates):
            continue
        try:
            raw = resolve(mapping.source_path, customer)
        except (KeyError, AttributeError):
            continue
        out[mapping.target.upper()] = {
            "path": mapping.source_path,
            "type": mapping.type,
            "transform": mapping.transform,
            "value": wire_value(raw, mapping.type, mapping.transform),
        }
    return out


def refresh_fields(fields: Mapping[str, Mapping[str, Any]], customer: Customer) -> dict[str, Any]:
    """The same fields with values read again from today's state (for coalescing)."""
    out: dict[str, Any] = {}
    for target, spec in fields.items():
        try:
            raw = resolve(str(spec["path"]), customer)
        except (KeyError, AttributeError):
            out[target] = dict(spec)
            continue
        out[target] = {
            **spec,
            "value": wire_value(raw, str(spec["type"]), str(spec.get("transform") or "")),
        }
    return out


def contact_spec(
    customer: Customer, mappings: Iterable[FieldMapping], sends_aggregates: bool
) -> OpSpec:
    return OpSpec(
        key=f"contact:{customer.email}",
        kind="contact",
        record_key=customer.email,
        payload={
            "email": customer.email,
            "fields": contact_fields(customer, mappings, sends_aggregates),
        },
        contact_key=customer.email,
        customer_id=customer.pk,
    )


def order_json(order: Order, shipments: list[Any]) -> dict[str, Any]:
    """The `Orders` record: the ERP's money and the WMS's dispatch in one document."""
    doc: dict[str, Any] = {
        "OrderNumber": order.order_number or order.channel_order_ref,
        "ChannelOrderRef": order.channel_order_ref or None,
        "PurchaseDate": iso(order.placed_at),
        "Currency": order.currency or None,
        "Status": order.lifecycle or None,
        "Fulfilment": order.fulfilment or None,
        "Financial": order.financial or None,
        "Subtotal": number(order.subtotal),
        "Discount": number(order.discount),
        "Shipping": number(order.shipping),
        "Tax": number(order.tax),
        "GrandTotal": number(order.grand_total),
        "RefundedTotal": number(order.refunded_total),
        "Refunded": bool(order.refunded_total and order.refunded_total > 0),
        "FirstDispatchedAt": iso(order.first_dispatched_at),
        "LastDispatchedAt": iso(order.last_dispatched_at),
        "Dispatched": order.first_dispatched_at is not None,
        "Products": [
            {
                "Sku": str(line.get("sku") or ""),
                "Name": str(line.get("name") or ""),
                "Qty": line.get("quantity"),
                "UnitPrice": _money_number(line.get("unit_price")),
                "LineTotal": _money_number(line.get("line_total")),
            }
            for line in (order.lines or [])
            if isinstance(line, dict)
        ],
    }
    if shipments:
        latest = max(shipments, key=lambda s: s.dispatched_at)
        carrier = latest.carrier if isinstance(latest.carrier, dict) else {}
        doc["Carrier"] = str(carrier.get("name") or carrier.get("code") or "") or None
        doc["TrackingNumbers"] = [str(t) for t in latest.tracking_numbers or []]
        doc["DeliveryStatus"] = latest.scan_status or None
        doc["FirstScanAt"] = iso(latest.first_scan_at)
    return {k: v for k, v in doc.items() if v is not None and v != []}


def _money_number(value: Any) -> float | int | None:
    if isinstance(value, dict):
        value = value.get("amount")
    if value in (None, ""):
        return None
    try:
        return number(Decimal(str(value)))
    except ArithmeticError:
        return None


def order_spec(
    order: Order, email: str, shipments: list[Any], customer_id: int | None = None
) -> OpSpec:
    """The order's record, named by its contact's email. With the contact's `customer_id` it
    need not wait for that contact's pending upsert once DotDigital knows the contact (only a new
    contact's records wait for it: `deliver.due_operations`)."""
    number_key = order.order_number or order.channel_order_ref or f"order-{order.pk}"
    name, scope, kind = ORDERS
    return OpSpec(
        key=f"insight:{name}:{number_key}",
        kind="insight",
        record_key=number_key,
        payload={
            "collection": name,
            "scope": scope,
            "collection_type": kind,
            "contact_email": email,
            "json": order_json(order, shipments),
        },
        contact_key=email,
        customer_id=customer_id,
        collection=name,
    )


def product_spec(product: Product) -> OpSpec:
    name, scope, kind = PRODUCTS
    doc = {
        "Sku": product.sku,
        "ProductKey": product.product_key,
        "Name": product.name,
        "Status": product.status,
        "Price": number(product.price),
        "Currency": product.currency or None,
    }
    return OpSpec(
        key=f"insight:{name}:{product.sku}",
        kind="insight",
        record_key=product.sku,
        payload={
            "collection": name,
            "scope": scope,
            "collection_type": kind,
            "contact_email": None,
            "json": {k: v for k, v in doc.items() if v is not None},
        },
        collection=name,
    )


def stock_spec(sku: str, total: StockTotal) -> OpSpec | None:
    """The Stock record, or none while the saleable total is unknown: the record is replaced
    whole, so writing it without Saleable would erase the last known figure (and InStock with
    it, which a back-in-stock program would read as a change)."""
    if total.saleable is None:
        return None
    name, scope, kind = STOCK
    doc: dict[str, Any] = {
        "Sku": sku,
        "Saleable": total.saleable,
        "InStock": total.saleable > 0,
        "SaleableDerived": total.derived,
    }
    if total.as_of is not None:
        doc["AsOf"] = iso(total.as_of)
    return OpSpec(
        key=f"insight:{name}:{sku}",
        kind="insight",
        record_key=sku,
        payload={
            "collection": name,
            "scope": scope,
            "collection_type": kind,
            "contact_email": None,
            "json": doc,
        },
        collection=name,
    )


def consent_spec(event: SourceEvent, customer: Customer) -> OpSpec | None:
    data = event.data
    if str(data.get("channel") or "email") != "email":
        return None
    quality = str(
        data.get("consent_at_quality") or event.envelope.get("occurred_at_quality") or "exact"
    )
    return OpSpec(
        key=f"consent:{customer.email}",
        kind="consent",
        record_key=customer.email,
        payload={
            "email": customer.email,
            "status": str(data.get("status") or ""),
            "consent_at": str(data.get("consent_at") or ""),
            "exact": quality == "exact",
            "opt_in": str(data.get("opt_in_level") or "single"),
            "event_id": event.pk,
        },
        contact_key=customer.email,
        customer_id=customer.pk,
    )


def list_specs(
    customer: Customer, ctx: Context, rules: Iterable[ListRule] = LIST_RULES
) -> list[OpSpec]:
    """Desired list memberships of a contact under a flow's `rules`, from today's state (the
    planner drops no-ops)."""
    out = []
    dispatched, refunded = ctx.latest_dispatch.get(customer.pk, (None, False))
    bought = max(filter(None, [customer.last_order_at, customer.last_dispatch_at]), default=None)
    for rule in rules:
        anchor = dispatched if rule.post_purchase else bought
        expires = anchor + rule.keep_for if anchor else None
        wanted = expires is not None and expires > ctx.now
        if rule.post_purchase and refunded:
            wanted = False
        out.append(
            OpSpec(
                key=f"list:{rule.name}:{customer.email}",
                kind="list_add" if wanted else "list_remove",
                record_key=customer.email,
                payload={
                    "email": customer.email,
                    "list": rule.name,
                    "expires_at": iso(expires) if wanted else None,
                },
                contact_key=customer.email,
                customer_id=customer.pk,
            )
        )
    return out


def specs_for(event: SourceEvent, ctx: Context, sends_aggregates: bool) -> list[OpSpec]:
    """What one staged event asks of DotDigital, from the state as it is now."""
    kind = event.event_type
    mappings = ctx.mappings.get(event.flow_id or 0, [])
    if kind in CONTACT_EVENTS:
        customer = ctx.customers.get(event.customer_id or 0)
        if customer is None or not customer.email:
            return []
        return [contact_spec(customer, mappings, sends_aggregates)]
    if kind == "consent.changed":
        customer = ctx.customers.get(event.customer_id or 0)
        if customer is None or not customer.email:
            return []
        spec = consent_spec(event, customer)
        return [spec] if spec else []
    if kind in ORDER_EVENTS:
        order = ctx.orders.get(event.order_id or 0)
        if order is None:
            return []
        customer = ctx.customers.get(order.customer_id or event.customer_id or 0)
        if customer is None or not customer.email:
            return []
        specs = [
            contact_spec(customer, mappings, sends_aggregates),
            order_spec(order, customer.email, ctx.shipments.get(order.pk, []), customer.pk),
        ]
        specs.extend(list_specs(customer, ctx, ctx.rules_for(event.flow_id)))
        return specs
    if kind == "product.updated":
        product = ctx.products.get((event.workspace_id, _sku(event)))
        return [product_spec(product)] if product else []
    if kind == "stock.changed":
        sku = _sku(event)
        stock = stock_spec(sku, ctx.stock.get((event.workspace_id, sku), UNKNOWN_STOCK))
        if stock is None:
            ctx.reasons[event.pk] = NO_SALEABLE
            return []
        return [stock]
    return []


def _sku(event: SourceEvent) -> str:
    return clean_sku(str(event.data.get("sku") or ""))


# -- checks before sending ------------------------------------------------------------------------


def check_data_field(target: str, value: Any, dd_type: str) -> str | None:
    """Why `value` does not fit DotDigital's data field type (None when it fits)."""
    if value is None:
        return None
    if dd_type == "String":
        ok = isinstance(value, str)
    elif dd_type == "Numeric":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif dd_type == "Date":
        ok = isinstance(value, str) and _is_iso(value)
    elif dd_type == "Boolean":
        ok = isinstance(value, bool)
    else:
        ok = True
    if ok:
        return None
    return f"{target} is a {dd_type} data field in DotDigital; {value!r} is not a {dd_type}."


def _is_iso(value: str) -> bool:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def json_type(value: Any) -> str | None:
    """The insight schema type DotDigital infers for a JSON value (None for null)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int | float):
        return "FLOAT"
    if isinstance(value, str):
        return "TIMESTAMP" if _looks_like_timestamp(value) else "STRING"
    if isinstance(value, dict):
        return "RECORD"
    return "UNKNOWN"


def _looks_like_timestamp(value: str) -> bool:
    return len(value) >= 10 and value[4:5] == "-" and value[7:8] == "-" and _is_iso(value)


def check_record(doc: Mapping[str, Any], schema: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Problems of an insight record against a collection's locked schema: {name: {type, mode,
    fields}} as DotDigital reports it. Types never change once set; objects may gain fields."""
    problems = []
    for name, value in doc.items():
        node = schema.get(name)
        label = f"{prefix}{name}"
        if node is None or value is None:
            continue
        repeated = node.get("mode") == "REPEATED"
        if isinstance(value, list) != repeated:
            problems.append(
                f"{label} is {'a list' if repeated else 'a single value'} in the collection's schema."
            )
            continue
        values = value if isinstance(value, list) else [value]
        for item in values:
            kind = json_type(item)
            if kind is None:
                continue
            locked = str(node.get("type"))
            if kind == locked or (locked == "STRING" and kind == "TIMESTAMP"):
                if kind == "RECORD" and isinstance(item, dict):
                    problems.extend(check_record(item, node.get("fields") or {}, f"{label}."))
                continue
            problems.append(f"{label} is {locked} in the collection's schema; got {kind}.")
            break
    return problems


def schema_map(fields: Iterable[Any]) -> dict[str, Any]:
    """The client's `SchemaField`s as {name: {type, mode, fields}}."""
    return {
        f.name: {"type": f.type, "mode": f.mode, "fields": schema_map(f.fields)} for f in fields
    }
