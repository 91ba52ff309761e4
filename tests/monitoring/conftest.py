from __future__ import annotations

import pytest
from django.core.cache import cache

from tests.monitoring.engine import Source


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()


@pytest.fixture
def erp(world):
    return Source(world.workspace, "brightpearl")


@pytest.fixture
def wms(world):
    return Source(world.workspace, "mintsoft")
