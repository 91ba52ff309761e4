"""The catalogue: `product.updated` and `stock.changed` (levels per location, from snapshots and
the deltas after them).

Saleable stock is what DotDigital's back-in-stock and low-stock logic reads, so it is never
guessed: a snapshot's own figure wins; without one it is derived from on-hand less allocated and
quarantined when the source sends either (and flagged `derived`); from on-hand alone it stays
unknown (None), the planner leaves the Stock record as DotDigital has it, and the flow gets one
`source_warning` saying what to configure.
"""

from __future__ import annotations

from collections.abc import Iterable

from exceptions_inbox.recording import record_occurrence
from monitoring.models import (
    Flow,
    Product,
    SourceEvent,
    StockDelta,
    StockLevel,
)
from monitoring.pipeline.normalise import (
    clean_sku,
    money,
    parse_time,
    stock_level_key,
)
from monitoring.pipeline.staging.batch import STAGE, Batch, Outcome, State, StateCache, save_row


def stage_product(event: SourceEvent, flow: Flow, batch: Batch) -> None:
    if not flow.masters_products:
        raise Outcome(State.SKIPPED, "This flow does not master the catalogue.")
    data = event.data
    sku = clean_sku(data.get("sku"))
    cache, ws = batch.cache, event.workspace_id
    if cache is not None and (ws, sku) in cache.products:
        product = cache.products[(ws, sku)]
    else:
        product = Product.objects.select_for_update().filter(workspace_id=ws, sku=sku).first()
    if product is not None and event.source_version < product.source_version:
        raise Outcome(State.SKIPPED, "Superseded: a newer version of this product is staged.")
    if product is None:
        product = Product(workspace_id=ws, sku=sku)
    if cache is not None:
        cache.products[(ws, sku)] = product
    product.flow = flow
    product.sku_key = sku.casefold()
    product.product_key = str(data.get("product_key"))
    product.name = str(data.get("name") or "")[:300]
    product.status = str(data.get("status") or "active")
    product.price = money(data.get("price"))
    product.currency = str((data.get("price") or {}).get("currency") or "")
    product.source_version = event.source_version
    save_row(batch, product)


QUANTITIES = ("on_hand", "allocated", "saleable", "quarantined", "incoming")


def stage_stock(event: SourceEvent, flow: Flow, batch: Batch) -> None:
    """Snapshots replace; deltas apply once each (a row per event), in as_of order after the
    latest snapshot; deltas older than the snapshot drop."""
    data = event.data
    as_of = parse_time(data.get("as_of")) or event.source_version
    key = (event.workspace_id, *stock_level_key(data))
    cache = batch.cache
    deltas: list[StockDelta] | None = None
    if cache is None:
        level, _ = StockLevel.objects.select_for_update().get_or_create(
            workspace_id=key[0], sku=key[1], location_key=key[2]
        )
    else:
        level, deltas = _stock_level(cache, key)
    # The last known saleable: across an unknown spell, the figure before it.
    before = level.saleable if level.saleable is not None else level.previous_saleable
    quantities = {k: data["quantities"].get(k) for k in QUANTITIES}
    if data["mode"] == "snapshot":
        if level.snapshot_as_of and as_of <= level.snapshot_as_of:
            raise Outcome(State.SKIPPED, "Superseded: a newer stock snapshot is staged.")
        level.snapshot = quantities
        level.snapshot_as_of = as_of
        level.derived = data.get("derived") or []
    else:
        if level.snapshot_as_of and as_of <= level.snapshot_as_of:
            raise Outcome(State.SKIPPED, "Dropped: older than the latest stock snapshot.")
        if deltas is None:
            StockDelta.objects.get_or_create(
                event=event, defaults={"level": level, "as_of": as_of, "quantities": quantities}
            )
        elif not any(d.event_id == event.pk for d in deltas):
            delta = StockDelta(level=level, event=event, as_of=as_of, quantities=quantities)
            deltas.append(delta)
            save_row(batch, delta)
    _recompute_stock(level, deltas)
    level.previous_saleable = before
    level.as_of = max(filter(None, [level.as_of, as_of]))
    save_row(batch, level)
    if data["mode"] == "snapshot" and on_hand_only(quantities):
        _warn_no_saleable(event, flow, batch)
    event.lane = (
        SourceEvent.Lane.REALTIME
        if crossed_zero(before, level.saleable) and not event.is_backfill
        else SourceEvent.Lane.BULK
    )


def crossed_zero(before: int | None, after: int | None) -> bool:
    """Into or out of stock since the last known figure: the transitions a back-in-stock program
    reads, on the realtime lane. An unknown after is none (nothing is written); a level never
    known counts as none in stock."""
    if after is None:
        return False
    return (before or 0) <= 0 < after or (before or 0) > 0 >= after


def on_hand_only(quantities: dict[str, int | None]) -> bool:
    """On-hand without saleable nor anything to derive it from (allocated, quarantined)."""
    return quantities.get("on_hand") is not None and all(
        quantities.get(name) is None for name in ("saleable", "allocated", "quarantined")
    )


NO_SALEABLE = (
    "The source sends on-hand stock only, no saleable figure: Syncdesk leaves Saleable and "
    "InStock in DotDigital's Stock collection as they are rather than guess them. Configure the "
    "source (its stock export or mapping) to send quantities.saleable, or allocated and "
    "quarantined beside on_hand, from which Syncdesk derives saleable."
)


def _warn_no_saleable(event: SourceEvent, flow: Flow, batch: Batch) -> None:
    """One `source_warning` per flow (seen again, not opened again, by later snapshots), filed
    once per batch: a stock feed is thousands of snapshots."""
    if flow.pk in batch.warned:
        return
    batch.warned.add(flow.pk)
    sku, location = stock_level_key(event.data)
    record_occurrence(
        workspace=event.workspace,
        kind="source_warning",
        event_key=f"warning:{flow.pk}:no_saleable",
        stage=STAGE,
        message=NO_SALEABLE,
        flow_key=flow.key,
        flow_label=flow.name,
        subject_key="no_saleable",
        subject_label="Stock without a saleable figure",
        detail={
            "code": "no_saleable",
            "event_id": event.pk,
            "sku": sku,
            "location": location,
        },
    )


def _stock_level(
    cache: StateCache, key: tuple[int, str, str]
) -> tuple[StockLevel, list[StockDelta]]:
    """The level (new if there is none) and its deltas after the snapshot, from the cache."""
    if key not in cache.levels:
        workspace_id, sku, location = key
        found = (
            StockLevel.objects.select_for_update()
            .filter(workspace_id=workspace_id, sku=sku, location_key=location)
            .first()
        )
        cache.levels[key] = found
        cache.deltas[key] = []
        if found is not None:
            deltas = StockDelta.objects.filter(level=found)
            if found.snapshot_as_of:
                deltas = deltas.filter(as_of__gt=found.snapshot_as_of)
            cache.deltas[key] = list(deltas.order_by("pk"))
    level = cache.levels[key]
    if level is None:
        level = StockLevel(workspace_id=key[0], sku=key[1], location_key=key[2])
        cache.levels[key] = level
    return level, cache.deltas[key]


def _recompute_stock(level: StockLevel, kept: list[StockDelta] | None = None) -> None:
    """The quantities: the snapshot plus the deltas after it (`kept`: the batch's list of the
    level's deltas, else read)."""
    deltas: Iterable[StockDelta]
    if kept is not None:
        deltas = [d for d in kept if not level.snapshot_as_of or d.as_of > level.snapshot_as_of]
    else:
        qs = level.deltas.all()
        if level.snapshot_as_of:
            qs = qs.filter(as_of__gt=level.snapshot_as_of)
        deltas = list(qs)
    for name in QUANTITIES:
        base = level.snapshot.get(name) if level.snapshot_as_of else None
        changes = [d.quantities.get(name) for d in deltas if d.quantities.get(name) is not None]
        # A delta moves a known figure; against an unknown one (no snapshot yet, or a snapshot
        # without it) it invents none.
        setattr(level, name, None if base is None else base + sum(changes))
    _derive_saleable(level)


def _derive_saleable(level: StockLevel) -> None:
    """Saleable from on-hand less allocated and quarantined, when the snapshot sent no saleable
    but either of them (5 on hand, 5 quarantined: 0 saleable), flagged `derived`; never below
    zero, so an oversold location does not hide another's stock in the SKU's total."""
    if level.saleable is not None or level.on_hand is None:
        return
    if level.allocated is None and level.quarantined is None:
        return
    level.saleable = max(0, level.on_hand - (level.allocated or 0) - (level.quarantined or 0))
    if "saleable" not in level.derived:
        level.derived = [*level.derived, "saleable"]
