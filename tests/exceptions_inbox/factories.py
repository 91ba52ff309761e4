"""Groups and occurrences for inbox tests, recorded through the engine's own API."""

from __future__ import annotations

import itertools
from typing import Any

from accounts.models import Workspace
from exceptions_inbox.models import ExceptionGroup
from exceptions_inbox.recording import record_occurrence

_seq = itertools.count(1)


def make_group(
    workspace: Workspace,
    *,
    kind: str = "sku_mapping_gap",
    sku: str = "AB-12/RED",
    events: int = 1,
    flow_key: str = "flow:1",
    **extra: Any,
) -> ExceptionGroup:
    """A group with `events` blocked events (sku_mapping_gap by default: owned by ops)."""
    occurrence = None
    for _ in range(events):
        n = next(_seq)
        occurrence = record_occurrence(
            workspace=workspace,
            kind=kind,
            event_key=f"event:{n}",
            stage="stage",
            message=f"SKU {sku} is not in the catalogue",
            flow_key=flow_key,
            flow_label="Demo WMS",
            subject_key=f"{kind}:{sku}",
            subject_label=sku,
            sku=sku,
            source_event_id=f"src-{n}",
            order_number=f"SO-{n}",
            detail={"order_number": f"SO-{n}", "lines": [{"sku": sku, "qty": 1}]},
            **extra,
        )
    assert occurrence is not None
    return ExceptionGroup.objects.get(pk=occurrence.group_id)
