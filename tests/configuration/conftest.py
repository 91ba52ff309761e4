"""The DotDigital sandbox (a real process) for "Test connection", and helpers for these tests."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.connectors.dotdigital.conftest import dotdigital_sandbox, sandbox  # noqa: F401


@pytest.fixture
def admin_client(world) -> Client:
    c = Client()
    c.force_login(world.admin)
    return c


@pytest.fixture
def member_client(world) -> Client:
    c = Client()
    c.force_login(world.member)
    return c
