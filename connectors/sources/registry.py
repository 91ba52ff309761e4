"""Every source Syncdesk reads: one line each. Adding a source is its folder plus its line here.

A line gives the connection kind (the value stored in `Connection.kind`), the label people see,
the adapter class and, when `make demo` replays the source, its recording. `Connection.Kind`'s
choices are DotDigital followed by these, in this order: changing the list needs a migration.

`connectors.models` reads this table for the kinds, and the adapters use `connectors.models`, so
the adapter classes and recordings are named by their dotted path (as Django's settings name
classes) and imported on the first lookup.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from connectors.sources.base import Recording, SourceAdapter


@dataclass(frozen=True)
class Source:
    kind: str
    label: str
    #: dotted path of the `SourceAdapter` subclass
    adapter: str
    #: dotted path of the source's `Recording` for `make demo`, if it has one
    recording: str = ""


SOURCES = (
    Source("canonical", "Canonical webhook (any WMS or ERP)", "connectors.sources.canonical.adapter.CanonicalAdapter"),
    Source("mintsoft", "Mintsoft", "connectors.sources.mintsoft.adapter.MintsoftAdapter", "connectors.sources.mintsoft.demo.RECORDING"),
    Source("brightpearl", "Brightpearl", "connectors.sources.brightpearl.adapter.BrightpearlAdapter", "connectors.sources.brightpearl.demo.RECORDING"),
    Source("orderwise", "Orderwise", "connectors.sources.orderwise.adapter.OrderwiseAdapter", "connectors.sources.orderwise.demo.RECORDING"),
    Source("stokly", "Stokly", "connectors.sources.stokly.adapter.StoklyAdapter", "connectors.sources.stokly.demo.RECORDING"),
    Source("patchworks", "Patchworks", "connectors.sources.patchworks.adapter.PatchworksAdapter", "connectors.sources.patchworks.demo.RECORDING"),
)  # fmt: skip

ADAPTERS: dict[str, SourceAdapter] = {}


def get_adapter(kind: str) -> SourceAdapter | None:
    """The adapter for a connection kind, or None when the kind has none (DotDigital)."""
    _load()
    return ADAPTERS.get(kind)


def adapter_classes() -> dict[str, type[SourceAdapter]]:
    """Each source kind's adapter class, in the table's order."""
    _load()
    return {kind: type(adapter) for kind, adapter in ADAPTERS.items()}


def recordings() -> dict[str, Recording]:
    """Each recorded source's `Recording` for `make demo`, by kind, in the table's order."""
    found: dict[str, Recording] = {}
    for source in SOURCES:
        if source.recording:
            found[source.kind] = import_string(source.recording)
    return found


_loaded = False
_loading = threading.Lock()


def _load() -> None:
    """Import the adapters once. The flag is set after the imports, under a lock: gunicorn runs
    several threads a worker, and one that found it set while another was still importing would
    look up a kind not registered yet and refuse its webhook."""
    global _loaded
    if _loaded:
        return
    with _loading:
        if not _loaded:
            _import_adapters()
            _loaded = True


def _import_adapters() -> None:
    for source in SOURCES:
        ADAPTERS[source.kind] = import_string(source.adapter)()
