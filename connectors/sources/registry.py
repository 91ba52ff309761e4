"""Source kind → adapter. Adapters register themselves on import (see `_load`)."""

from __future__ import annotations

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


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from connectors.sources import (
            brightpearl,  # noqa: F401  (registers itself)
            canonical,  # noqa: F401  (registers itself)
            mintsoft,  # noqa: F401  (registers itself)
            orderwise,  # noqa: F401
            patchworks,  # noqa: F401
            stokly,  # noqa: F401
        )
