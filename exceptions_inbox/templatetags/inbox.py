from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django import template
from django.utils import timezone

register = template.Library()


@register.filter
def pretty_json(value: Any) -> str:
    """A payload as indented JSON (anything JSON cannot hold is shown as text)."""
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


AGE_UNITS = (
    (365 * 86400, "year"),
    (30 * 86400, "month"),
    (7 * 86400, "week"),
    (86400, "day"),
    (3600, "hour"),
    (60, "minute"),
)


def age(value: datetime) -> str:
    """How long ago, in its largest unit ("3 hours", "2 days"); "" inside a minute. Cheaper than
    timesince (the inbox shows two per row) and shorter in a list."""
    seconds = (timezone.now() - value).total_seconds()
    for size, unit in AGE_UNITS:
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return ""


@register.filter
def ago(value: datetime | None) -> str:
    """ "3 hours ago", or "just now" inside a minute."""
    if value is None:
        return ""
    text = age(value)
    return f"{text} ago" if text else "just now"
