"""Brightpearl's products and their availability → `product.updated` and `stock.changed` events
(pure functions, no I/O).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from connectors.sources.brightpearl.mapping import Context, Event, envelope, parse_time
from connectors.sources.values import clean, digest, list_at, object_at, rfc3339, text_or_none

#: product `status` → canonical product status
PRODUCT_STATUS = {
    "LIVE": "active",
    "DISABLED": "inactive",
    "ARCHIVED": "inactive",
    "DISCONTINUED": "discontinued",
}


def product_sku(raw: Mapping[str, Any]) -> str | None:
    identity = object_at(raw, "identity")
    sku = identity.get("sku")
    return sku if isinstance(sku, str) and sku.strip() else None


def product_updated(raw: Mapping[str, Any], ctx: Context) -> Event | None:
    product_id = text_or_none(raw.get("id"))
    sku_raw = product_sku(raw)
    if product_id is None or sku_raw is None:
        return None  # a product without a SKU cannot be matched to anything downstream
    updated = parse_time(raw.get("updatedOn"))
    identity = object_at(raw, "identity")
    channels = list_at(raw, "salesChannels")
    name = next(
        (c.get("productName") for c in channels if isinstance(c, Mapping) and c.get("productName")),
        None,
    )
    composition = object_at(raw, "composition")
    key = ctx.key("product", product_id)
    return envelope(
        ctx,
        "product.updated",
        f"product:{product_id}:{rfc3339(updated) if updated else raw.get('version', 'v')}",
        updated,
        {"type": "product", "key": key, "source_id": product_id, "source_ref": sku_raw},
        {
            "sku": clean(sku_raw),
            "sku_raw": sku_raw,
            "product_key": key,
            "status": PRODUCT_STATUS.get(str(raw.get("status") or "").upper(), "inactive"),
            "status_raw": raw.get("status"),
            "name": name,
            "barcodes": [
                b for b in (identity.get(k) for k in ("barcode", "ean", "upc", "isbn")) if b
            ],
            "is_bundle": bool(composition.get("bundle")),
        },
        updated=updated,
    )


def stock_events(
    availability: Mapping[str, Any],
    skus: Mapping[str, str],
    ctx: Context,
    as_of: datetime | None,
) -> list[Event]:
    """product-availability per warehouse → `stock.changed` snapshots. Brightpearl's `inStock` is
    what is physically there (canonical on_hand) and its `onHand` is in stock less allocated
    (canonical saleable): 60 in stock, 12 allocated, 48 on hand in the recorded payload."""
    events = []
    for product_id, entry in sorted(availability.items()):
        sku_raw = skus.get(str(product_id))
        if sku_raw is None or not isinstance(entry, Mapping):
            continue
        warehouses = object_at(entry, "warehouses")
        for warehouse_id, counts in sorted(warehouses.items()):
            if not isinstance(counts, Mapping):
                continue
            quantities = {
                "on_hand": counts.get("inStock"),
                "allocated": counts.get("allocated"),
                "saleable": counts.get("onHand"),
                "quarantined": None,  # quarantine is a location type in Brightpearl [verify]
                "incoming": counts.get("inTransit"),
            }
            fingerprint = digest(*quantities.values())
            moment = as_of or ctx.received_at
            sku = clean(sku_raw)
            events.append(
                envelope(
                    ctx,
                    "stock.changed",
                    f"stock:{product_id}:{warehouse_id}:{fingerprint}:{rfc3339(moment)}",
                    as_of,
                    {"type": "stock", "key": ctx.key("stock", f"{warehouse_id}:{product_id}")},
                    {
                        "sku": sku,
                        "sku_raw": sku_raw,
                        "product_key": ctx.key("product", product_id),
                        "location": {"key": ctx.key("warehouse", warehouse_id)},
                        "quantities": quantities,
                        "source_quantities_raw": dict(counts),
                        "as_of": rfc3339(moment),
                        "mode": "snapshot",
                    },
                )
            )
    return events
