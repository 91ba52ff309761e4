from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import cache

from outbound.models import Event, Subscription, new_signing_secret
from tests.monitoring.engine import Source
from tests.outbound.receiver import Receiver, start_receiver


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    cache.clear()  # the webhook endpoint's per-client limits


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver, server = start_receiver()
    yield receiver
    if receiver.hold is not None:
        receiver.hold.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def erp(world) -> Source:
    return Source(world.workspace, "brightpearl")


def subscribe(workspace, url: str, events=None, **extra) -> Subscription:
    return Subscription.objects.create(
        workspace=workspace,
        name=extra.pop("name", "Ticketing"),
        url=url,
        events=list(events or Event.values),
        secret={"signing_secret": new_signing_secret()},
        **extra,
    )
