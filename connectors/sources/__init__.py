"""Source adapters: one per source kind, turning what a source sends or serves into canonical
events (../shared/reference/sources.md §10). `get_adapter(kind)` finds the one for a connection."""

from __future__ import annotations

from connectors.sources.base import (
    Page,
    SourceAdapter,
    SourceError,
    WebhookItems,
    WebhookRequestData,
)
from connectors.sources.registry import ADAPTERS, get_adapter, register

__all__ = [
    "ADAPTERS",
    "Page",
    "SourceAdapter",
    "SourceError",
    "WebhookItems",
    "WebhookRequestData",
    "get_adapter",
    "register",
]
