from __future__ import annotations

from django import template

from monitoring.watch.flow_health import fmt_seconds

register = template.Library()


@register.filter
def seconds(value: float | None) -> str:
    """A duration in seconds, in the unit a person reads best (— for none)."""
    return fmt_seconds(value)
