from __future__ import annotations

import json
from typing import Any

from django import template

register = template.Library()


@register.filter
def pretty_json(value: Any) -> str:
    """A payload as indented JSON (anything JSON cannot hold is shown as text)."""
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)
