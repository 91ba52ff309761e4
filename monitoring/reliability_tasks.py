"""Tasks of retention and erasure: thin, taking ids (star-imported at the end of tasks.py)."""

from __future__ import annotations

from celery import shared_task

__all__ = ["sweep_retention"]


@shared_task(name="monitoring.sweep_retention")
def sweep_retention() -> int:
    """Beat, hourly: redact payloads past retention, in batches (safe to run twice at once)."""
    from monitoring.privacy.retention import sweep_retention as sweep

    return sweep().total
