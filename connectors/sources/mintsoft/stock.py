"""Mintsoft's stock report → canonical `stock.changed` snapshots (pure functions, no I/O).

The ProductsInLocationReport lists each SKU per location; a level is one SKU at one warehouse,
summed from those rows, and a snapshot is sent when its fingerprint changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from connectors.sources.mintsoft.mapping import Context, Event, envelope, quantity
from connectors.sources.values import clean, digest, rfc3339, text_or_none


def _quarantine_location(row: Mapping[str, Any]) -> bool:
    kind = f"{row.get('LocationType') or ''} {row.get('Location') or ''}".upper()
    return "QUARANTINE" in kind or "DAMAGE" in kind


def stock_levels(
    rows: Iterable[Mapping[str, Any]], ctx: Context, warehouse_key: str | None = None
) -> dict[tuple[str, str], dict[str, Any]]:
    """The ProductsInLocationReport rows (one per SKU per location, quantities as strings) summed
    per warehouse and SKU. `Allocation` rows are on hand; `…_OffHand` rows (e.g. goods-in not put
    away) are not; quarantine/damaged locations are quarantined; rows with an `AllocatedOrder`
    are allocated. Saleable is derived: on hand − allocated − quarantined."""
    levels: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        sku_raw = row.get("ProductSKU")
        if not isinstance(sku_raw, str) or not sku_raw.strip():
            continue
        warehouse = str(row.get("Warehouse") or "default")
        key = (warehouse_key or warehouse, sku_raw)
        level = levels.setdefault(
            key,
            {
                "sku_raw": sku_raw,
                "warehouse": warehouse,
                "on_hand": 0,
                "allocated": 0,
                "quarantined": 0,
                "incoming": 0,
                "off_hand": 0,
                "quarantined_on_hand": 0,
                "name": row.get("ProductName"),
            },
        )
        qty = quantity(row.get("Quantity", 0))
        units = int(Decimal(str(qty)))
        off_hand = str(row.get("Type") or "").lower().endswith("_offhand")
        quarantined = _quarantine_location(row)
        if off_hand:
            level["off_hand"] += units
            if quarantined:
                level["quarantined"] += units
            elif "GOODS IN" in str(row.get("LocationType") or "").upper():
                level["incoming"] += units
            continue
        level["on_hand"] += units
        if quarantined:
            level["quarantined"] += units
            level["quarantined_on_hand"] += units
        if text_or_none(row.get("AllocatedOrder")):
            level["allocated"] += units
    return levels


def stock_fingerprint(level: Mapping[str, Any]) -> str:
    return digest(
        level["on_hand"],
        level["allocated"],
        level["quarantined"],
        level["incoming"],
        level["off_hand"],
    )


def stock_changed(
    level: Mapping[str, Any], ctx: Context, location_key: str, as_of: datetime
) -> Event:
    sku = clean(level["sku_raw"])
    saleable = max(0, level["on_hand"] - level["allocated"] - level["quarantined_on_hand"])
    location = {"key": ctx.key("warehouse", location_key), "name": level["warehouse"]}
    fingerprint = stock_fingerprint(level)
    return envelope(
        ctx,
        "stock.changed",
        f"stock:{location_key}:{sku}:{fingerprint}:{rfc3339(as_of)}",
        (as_of, "received_time"),
        {"type": "stock", "key": ctx.key("stock", f"{location_key}:{sku}")},
        {
            "sku": sku,
            "sku_raw": level["sku_raw"],
            "location": location,
            "quantities": {
                "on_hand": level["on_hand"],
                "allocated": level["allocated"],
                "saleable": saleable,
                "quarantined": level["quarantined"],
                "incoming": level["incoming"],
            },
            "derived": ["saleable"],
            "off_hand": level["off_hand"],
            "as_of": rfc3339(as_of),
            "mode": "snapshot",
        },
    )


def empty_level(sku_raw: str, warehouse: str) -> dict[str, Any]:
    """A SKU the report no longer lists: nothing left at that warehouse."""
    return {
        "sku_raw": sku_raw,
        "warehouse": warehouse,
        "on_hand": 0,
        "allocated": 0,
        "quarantined": 0,
        "incoming": 0,
        "off_hand": 0,
        "quarantined_on_hand": 0,
        "name": None,
    }
