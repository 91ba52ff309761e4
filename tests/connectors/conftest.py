"""Fixtures for the DotDigital client: a client wired to the sandbox whose every exchange is
checked against DotDigital's published specs when the test ends.

`make_client(**kwargs)` builds more clients (another password, another lane, a fake clock);
`exchanges` lists every response the clients received; `client` is the default one.
"""

from __future__ import annotations

import importlib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from connectors.budget import RateBudget, TierLimit
from connectors.dotdigital.client import DotDigitalClient
from connectors.dotdigital.transport import DEFAULT_TIERS

# Faults of the published specs met by the client's own calls, beyond the loader's SPEC_FAULTS.
CLIENT_SPEC_FAULTS = {
    "suppressed-since-date-format": (
        "The 3.1 preferences document declares suppressed-since's {date} as format 'date' while "
        "its own description says an ISO 8601 dateTime, and the v2 swagger declares date-time "
        "(DotDigital's Magento connector sends the last run's finish time). That one request is "
        "validated against the v2 swagger; its answer against the preferences document."
    ),
}


def check_exchange(contract: Any, response: requests.Response) -> None:
    """Validate one exchange against the specs, allowing only the named faults above."""
    path = urlsplit(str(response.request.url)).path
    if path.startswith("/v2/contacts/suppressed-since/"):
        from openapi_core.contrib.requests import RequestsOpenAPIRequest

        failures = list(
            contract.spec("v2").iter_request_errors(RequestsOpenAPIRequest(response.request))
        )
        if failures:
            describe = importlib.import_module("openapi_contract").describe
            raise AssertionError(f"GET {path}: request breaks the v2 spec: {describe(failures)}")
        contract.check(response, request=False)
        return
    contract.check(response)


class FakeClock:
    """A clock that moves only when slept on; it also moves the sandbox's clock, if given."""

    def __init__(self, sandbox: Any = None) -> None:
        self.now = time.time()
        self.sandbox = sandbox
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        if self.sandbox is not None and seconds > 0:
            self.sandbox.advance_clock(seconds)


@pytest.fixture
def exchanges() -> list[requests.Response]:
    return []


@pytest.fixture
def make_client(
    sandbox: Any, db: Any, contract: Any, exchanges: list[requests.Response]
) -> Iterator[Callable[..., DotDigitalClient]]:
    def record(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        exchanges.append(response)

    def make(
        *,
        password: str | None = None,
        tiers: dict[str, TierLimit] | None = None,
        clock: FakeClock | None = None,
        **kwargs: Any,
    ) -> DotDigitalClient:
        session = requests.Session()
        session.hooks["response"].append(record)
        key = kwargs.pop("account_key", f"test:{uuid.uuid4()}")
        if clock is not None:
            kwargs.setdefault(
                "budget", RateBudget(key, tiers or DEFAULT_TIERS, clock=clock, reserve=0.2)
            )
            kwargs.setdefault("sleep", clock.sleep)
        kwargs.setdefault("discovery_url", sandbox.url)
        kwargs.setdefault("max_wait", 0.0)
        return DotDigitalClient(
            sandbox.auth[0],
            sandbox.auth[1] if password is None else password,
            account_key=key,
            tiers=tiers,
            session=session,
            **kwargs,
        )

    yield make
    # Contract: every request the clients sent and every answer they got, against the specs
    # (with only the named spec faults of openapi_contract.SPEC_FAULTS patched).
    for response in exchanges:
        check_exchange(contract, response)


# NB: under tests/connectors/ `client` is this DotDigital client, not pytest-django's test client;
# tests here that need Django's use `django.test.Client()` directly.
@pytest.fixture
def client(make_client: Callable[..., DotDigitalClient]) -> DotDigitalClient:
    return make_client()
