"""Each error class, backoff on 429 by probing within the window the reset header names, injected faults, and no secret in logs."""

from __future__ import annotations

import base64
import logging
import socket
import traceback
from datetime import datetime

import pytest
import requests

from connectors.budget import TierLimit
from connectors.dotdigital import errors
from connectors.dotdigital.transport import (
    DEFAULT_TIERS,
    RATE_LIMIT_PROBE,
    RATE_LIMIT_PROBE_MAX,
    Timeouts,
)
from connectors.dotdigital.types import ContactWrite
from tests.connectors.conftest import FakeClock


def test_a_wrong_password_is_a_connection_problem(make_client):
    client = make_client(password="not-the-password")
    with pytest.raises(errors.AuthenticationFailed) as caught:
        client.list_data_fields()
    assert isinstance(caught.value, errors.ConnectionProblem) and caught.value.permanent
    assert caught.value.status == 401


def test_a_wrong_region_is_a_connection_problem_after_rediscovery(client, sandbox):
    client.list_data_fields()
    sandbox.account(failure="wrong_region")
    with pytest.raises(errors.WrongRegion) as caught:
        client.list_data_fields()
    assert caught.value.status == 403 and caught.value.text == "Access is denied."
    # It asked account-info once more before giving up: the endpoint had not moved.
    assert [c["path"] for c in sandbox.calls()][-2:] == ["/v2/data-fields", "/v2/account-info"]


def test_a_feature_the_account_lacks_is_a_connection_problem(client, sandbox):
    sandbox.account(failure="feature_not_active", match="/insightData")
    client.list_data_fields()
    with pytest.raises(errors.FeatureNotActive) as caught:
        client.get_collection_schema("Orders")
    assert caught.value.code == "server:featureNotActive"
    assert isinstance(caught.value, errors.ConnectionProblem)


def test_a_429_blocks_the_tier_a_second_then_longer_while_probes_meet_429s_until_the_window_resets(
    make_client, sandbox
):
    sandbox.set_profile(base="fast", tier_limits={"single": 3})
    # Start at the top of a rate window (the sandbox's clock is virtual), so that a loaded machine
    # cannot cross into the next window between filling the tier and the client's call.
    now = datetime.fromisoformat(sandbox.state()["now"].replace("Z", "+00:00")).timestamp()
    ahead = 60 - now % 60 + 0.5
    sandbox.advance_clock(ahead)
    clock = FakeClock(sandbox)
    clock.now = now + ahead  # the client's clock reads the sandbox's time
    client = make_client(clock=clock, max_wait=120.0)
    other = requests.Session()  # another integration spending the same account's calls
    other.auth = sandbox.auth
    for _ in range(3):
        other.get(f"{sandbox.url}/contacts/v3/email/x@example.com")
    client.discover()
    result = client.upsert_contact(ContactWrite(email="late@example.com"))
    assert result.created
    statuses = [
        c["status"] for c in sandbox.calls() if c["path"].startswith("/contacts/v3/email/late")
    ]
    # The window really is spent: each probe meets a 429 until it resets, then the call goes.
    assert statuses[-1] == 201 and set(statuses[:-1]) == {429} and len(statuses) >= 3
    assert len(statuses) <= 60 / RATE_LIMIT_PROBE_MAX + 4
    assert all(0 < waited <= RATE_LIMIT_PROBE_MAX for waited in clock.slept)
    assert clock.slept[:3] == [RATE_LIMIT_PROBE, 2 * RATE_LIMIT_PROBE, RATE_LIMIT_PROBE_MAX], (
        "a second, then twice as long while each probe meets a 429"
    )
    assert 55 <= sum(clock.slept) <= 60 + RATE_LIMIT_PROBE_MAX


def test_a_429_without_room_to_wait_says_when_to_retry_and_the_budget_holds_callers_back(
    make_client, sandbox
):
    sandbox.set_profile(base="fast", tier_limits={"single": 1})
    client = make_client()
    client.upsert_contact(ContactWrite(email="one@example.com"))
    # The answer's headers told the budget the real limit (1), so the next call stays home.
    with pytest.raises(errors.RateLimited) as caught:
        client.upsert_contact(ContactWrite(email="two@example.com"))
    assert caught.value.status is None and 0 < caught.value.retry_after <= 60
    assert [c["status"] for c in sandbox.calls() if c["tier"] == "single"] == [201]
    assert client.budget.usage("single") == (1, 1)


def test_a_429_storm_blocks_the_tier_for_seconds_and_the_probe_after_it_goes_through(
    make_client, sandbox
):
    clock = FakeClock(sandbox)
    client = make_client(clock=clock)
    client.discover()
    sandbox.faults(rate_limit_burst=1)
    with pytest.raises(errors.RateLimited) as caught:
        client.list_data_fields()
    # The 429 names the end of the window; the tier waits only until a probe.
    assert caught.value.status == 429 and 0 < caught.value.retry_after <= RATE_LIMIT_PROBE
    # Blocked locally meanwhile: nobody calls the read tier before the probe.
    with pytest.raises(errors.RateLimited) as held:
        client.list_data_fields()
    assert held.value.status is None and 0 < held.value.retry_after <= RATE_LIMIT_PROBE
    clock.sleep(RATE_LIMIT_PROBE)
    client.list_data_fields()  # the storm is over: the probe's answer says the window has room
    assert client.budget.usage("read")[0] < client.budget.usage("read")[1] - 1
    paths = [(c["path"], c["status"]) for c in sandbox.calls()]
    assert paths == [
        ("/v2/account-info", 200),
        ("/v2/data-fields", 429),
        ("/v2/data-fields", 200),
    ]


def test_the_flat_schemes_apiusage_exceeded_is_retryable(make_client, sandbox):
    sandbox.set_profile(base="fast", flat_calls_per_hour=1)
    sandbox.add_api_user("apiuser-flat@apiconnector.com", "flat-pw", scheme="flat")
    client = make_client()
    client.api_user = "apiuser-flat@apiconnector.com"
    client.session.auth = ("apiuser-flat@apiconnector.com", "flat-pw")
    with pytest.raises(errors.RateLimited) as caught:
        client.list_data_fields()
        client.list_data_fields()
    assert caught.value.code == "ERROR_APIUSAGE_EXCEEDED" and caught.value.retry_after


@pytest.mark.parametrize(("status", "burst"), [(500, 1), (503, 2)])
def test_server_errors_are_retryable(client, sandbox, status, burst):
    client.discover()
    sandbox.faults(error_burst=burst, error_status=status)
    with pytest.raises(errors.ServerError) as caught:
        client.upsert_contact(ContactWrite(email="x@example.com"))
    assert caught.value.status == status and not caught.value.permanent
    assert client.upsert_contact(ContactWrite(email="x@example.com")).created


def test_a_passing_503_to_an_idempotent_call_is_tried_once_more_at_once(client, sandbox):
    client.discover()
    sandbox.faults(error_burst=1, error_status=503)
    assert client.upsert_contact(ContactWrite(email="once@example.com")).created  # a PATCH
    assert sandbox.control("GET", "faults")["injected"]["error"] == 1


def test_a_503_to_a_post_is_never_repeated_by_the_client(client, sandbox):
    # An import or an enrolment may have applied: the row decides, with what it knows.
    client.discover()
    sandbox.faults(error_burst=1, error_status=503)
    with pytest.raises(errors.ServerError):
        client.create_address_book("Dispatched today")
    assert client.create_address_book("Dispatched today").name == "Dispatched today"


def test_a_hang_past_the_timeout_is_a_retryable_timeout(make_client, sandbox):
    client = make_client(timeouts=Timeouts(single=0.3))
    client.discover()
    sandbox.faults(hang_burst=1, hang_seconds=2)
    with pytest.raises(errors.CallTimeout) as caught:
        client.upsert_contact(ContactWrite(email="slow@example.com"))
    assert isinstance(caught.value, errors.RetryableError)
    assert "0.3s" in str(caught.value)


def test_a_dropped_connection_is_retryable_and_may_have_been_applied(client, sandbox):
    client.discover()
    sandbox.faults(drop_burst=1)
    with pytest.raises(errors.ConnectionDropped) as caught:
        client.upsert_contact(ContactWrite(email="drop@example.com"))
    assert not isinstance(caught.value, errors.NotSent), "the request reached DotDigital"
    assert client.upsert_contact(ContactWrite(email="drop@example.com")).created


def test_no_connection_at_all_is_not_sent(make_client):
    with socket.socket() as closed:  # a port nothing listens on once this closes
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    client = make_client(
        discovery_url=f"http://127.0.0.1:{port}", endpoint=f"http://127.0.0.1:{port}"
    )
    with pytest.raises(errors.NotSent) as caught:
        client.upsert_contact(ContactWrite(email="nobody@example.com"))
    assert isinstance(caught.value, errors.RetryableError)


def test_no_password_or_authorization_value_reaches_a_log_or_an_error(make_client, sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    password = "s3cret-Pa55word"
    sandbox.add_api_user("apiuser-logs@apiconnector.com", password)
    header = base64.b64encode(f"apiuser-logs@apiconnector.com:{password}".encode()).decode()
    seen: list[str] = []

    def attempt(client, call):
        try:
            call(client)
        except errors.DotDigitalError as exc:
            seen.extend([str(exc), repr(exc), "".join(traceback.format_exception(exc))])
            logging.getLogger("test").exception("call failed")

    good = make_client(timeouts=Timeouts(single=0.3))
    good.api_user = "apiuser-logs@apiconnector.com"
    good.session.auth = ("apiuser-logs@apiconnector.com", password)
    good.discover()
    sandbox.faults(drop_burst=1)
    attempt(good, lambda c: c.upsert_contact(ContactWrite(email="a@example.com")))
    sandbox.faults(hang_burst=1, hang_seconds=2)
    attempt(good, lambda c: c.upsert_contact(ContactWrite(email="b@example.com")))
    sandbox.faults(error_burst=1, error_status=500)
    attempt(good, lambda c: c.list_data_fields())
    sandbox.add_api_user("apiuser-logs@apiconnector.com", "changed")
    attempt(good, lambda c: c.list_data_fields())
    seen.extend([repr(good), caplog.text])
    assert len(seen) > 4
    text = "\n".join(seen)
    assert password not in text and header not in text
    assert "401" in text  # the failures themselves were logged


def test_the_client_takes_tiers_from_the_budget_for_every_call(client, sandbox):
    client.upsert_contact(ContactWrite(email="t@example.com"))
    client.list_data_fields()
    assert client.budget.usage("single")[0] == 1
    assert client.budget.usage("read")[0] == 2  # account-info and data-fields
    assert set(DEFAULT_TIERS) >= {"single", "import", "status", "read", "enrolment"}
    assert DEFAULT_TIERS["enrolment"] == TierLimit(20, 3600.0)
