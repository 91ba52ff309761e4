"""`{% object_url change as url %}`: the page of a history row's object (`audit.object_url`)."""

from __future__ import annotations

from django import template

from accounts import audit
from accounts.models import ConfigChange

register = template.Library()


@register.simple_tag
def object_url(change: ConfigChange) -> str | None:
    return audit.object_url(change)
