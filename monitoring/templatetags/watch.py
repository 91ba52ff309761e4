from __future__ import annotations

import json
from typing import Any

from django import template

from monitoring.watch.flow_health import fmt_seconds

register = template.Library()


@register.filter
def seconds(value: float | None) -> str:
    """A duration in seconds, in the unit a person reads best (— for none)."""
    return fmt_seconds(value)


@register.filter
def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)
