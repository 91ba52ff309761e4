"""/api/v1/'s URLs: the routes of each resource registered on `core.api`, and the OpenAPI
document with the links between operations."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.urls import URLPattern, URLResolver
from django.views.decorators.http import require_GET

from api import events, inbox, watch
from api.core import api
from api.links import add_links

# Imported for what they register on `api`: their routes.
ROUTES = (events, inbox, watch)

_schema = api.get_openapi_schema


def _schema_with_links(*args: Any, **kwargs: Any) -> Any:
    return add_links(_schema(*args, **kwargs))


api.get_openapi_schema = _schema_with_links  # type: ignore[method-assign]


def api_urls() -> tuple[list[URLResolver | URLPattern], str, str]:
    """The API's URL patterns; none needs a session (the sign-in redirect never applies)."""
    patterns, app_name, namespace = api.urls
    for pattern in patterns:
        if isinstance(pattern, URLPattern):
            if pattern.name in ("openapi-json", "openapi-view"):
                pattern.callback = require_GET(pattern.callback)
            login_not_required(pattern.callback)
    return patterns, app_name, namespace
