"""Source kind → adapter. Adapters register themselves on import (see `_load`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from connectors.sources.base import SourceAdapter

A = TypeVar("A", bound=type[SourceAdapter])

ADAPTERS: dict[str, SourceAdapter] = {}


def register(*kinds: str) -> Callable[[A], A]:
    """Class decorator: the adapter serves these connection kinds."""

    def decorate(cls: A) -> A:
        for kind in kinds or (cls.kind,):
            ADAPTERS[kind] = cls()
        return cls

    return decorate


def get_adapter(kind: str) -> SourceAdapter | None:
    """The adapter for a connection kind, or None when the kind has none (yet)."""
    _load()
    return ADAPTERS.get(kind)


_loaded = False
_loading = threading.Lock()


def _load() -> None:
    """Import the adapters once. The flag is set after the imports, under a lock: set before
    them, a second thread (gunicorn runs four a worker) found it set while the first was still
    importing, looked up a kind not registered yet and answered 404 (`make demo-check` caught
    a Brightpearl webhook refused that way)."""
    global _loaded
    if _loaded:
        return
    with _loading:
        if not _loaded:
            _import_adapters()
            _loaded = True


def _import_adapters() -> None:
    from connectors.sources import (  # noqa: F401  (each registers itself)
        brightpearl,
        canonical,
        mintsoft,
        orderwise,
        patchworks,
        stokly,
    )
