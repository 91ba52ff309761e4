"""Order keys: a source's own key for an order (`data.order_key`) names it in that source's key
space. A shipment, refund, return or status change from the same source system as its order
finds it by that key (in `data` or `links`) whatever the flow's join key; across sources the
join key decides. The first order a key is seen with keeps it.
"""

from __future__ import annotations

from collections.abc import Iterable

from monitoring.models import Order, OrderKey, SourceEvent
from monitoring.pipeline.staging.batch import Batch, parent_keys


def _owner(batch: Batch, workspace_id: int, system: str, key: str) -> int | None:
    """The pk of the order the key names, if any."""
    cache = batch.cache
    if cache is not None and (workspace_id, system, key) in cache.order_keys:
        return cache.order_keys[(workspace_id, system, key)]
    owner = (
        OrderKey.objects.filter(workspace_id=workspace_id, source_system=system, order_key=key)
        .values_list("order_id", flat=True)
        .first()
    )
    if cache is not None:
        cache.order_keys[(workspace_id, system, key)] = owner
    return owner


def order_by_key(event: SourceEvent, batch: Batch) -> Order | None:
    """The order the event names by one of its source's order keys (locked), or None."""
    for key in parent_keys(event):
        pk = _owner(batch, event.workspace_id, event.source_system, key)
        if pk is None:
            continue
        cache = batch.cache
        if cache is not None and pk in cache.orders:
            return cache.orders[pk]
        order = Order.objects.select_for_update().get(pk=pk)
        return cache.keep_order(order) if cache is not None else order
    return None


def give_keys(event: SourceEvent, order: Order, batch: Batch, keys: Iterable[str]) -> None:
    """The order is known by these keys of the event's source from now on (a key another order
    holds stays with it); orphans waiting for one are released at the end of the batch."""
    ws, system, cache = event.workspace_id, event.source_system, batch.cache
    for key in dict.fromkeys(keys):
        if not key or _owner(batch, ws, system, key) is not None:
            continue
        batch.released_keys.setdefault(ws, set()).add((system, key))
        if cache is None:
            OrderKey.objects.bulk_create(
                [OrderKey(workspace_id=ws, source_system=system, order_key=key, order=order)],
                ignore_conflicts=True,
            )
            continue
        batch.wrote = True  # a row the batch will insert: only a rollback undoes it
        cache.order_keys[(ws, system, key)] = order.pk
        cache.new_order_keys.append(
            OrderKey(workspace_id=ws, source_system=system, order_key=key, order_id=order.pk)
        )
