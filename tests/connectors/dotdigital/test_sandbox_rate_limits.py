"""Tiered per-minute buckets with X-RateLimit-* headers, and the flat hourly scheme."""

from __future__ import annotations

import requests


def small_tiers(sandbox, **limits):
    sandbox.set_profile(
        base="fast",
        tier_limits={"single": 100, "import": 100, "status": 100, "read": 100, **limits},
    )


def test_every_call_carries_rate_limit_headers_for_its_tier(sandbox, contract):
    small_tiers(sandbox, read=7)
    r = contract.check(sandbox.api.get(f"{sandbox.url}/v2/data-fields"))
    assert r.headers["X-RateLimit-Limit"] == "7"
    assert r.headers["X-RateLimit-Remaining"] == "6"
    assert r.headers["X-RateLimit-Scope"] == "readCallRate"
    assert int(r.headers["X-RateLimit-Reset"]) % 60 == 0
    single = sandbox.api.get(f"{sandbox.url}/contacts/v3/email/x@emailsim.io")
    assert single.headers["X-RateLimit-Scope"] == "mediumCallRate"
    assert single.headers["X-RateLimit-Remaining"] == "99"


def test_exhausted_tier_answers_429_until_the_window_resets(sandbox, contract):
    small_tiers(sandbox, single=3)
    url = f"{sandbox.url}/contacts/v3/email/x@emailsim.io"
    assert [sandbox.api.get(url).status_code for _ in range(3)] == [404, 404, 404]
    limited = contract.check(sandbox.api.get(url))
    assert limited.status_code == 429
    assert limited.json() == {
        "errorCode": "server:tooManyRequests",
        "description": "Too Many Requests",
    }
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    other_tier = sandbox.api.get(f"{sandbox.url}/v2/data-fields")
    assert other_tier.status_code == 200
    sandbox.advance_clock(61)
    assert sandbox.api.get(url).status_code == 404


def test_imports_and_status_polls_have_their_own_buckets(sandbox):
    small_tiers(sandbox, **{"import": 1, "status": 2})
    body = {"contacts": [{"matchIdentifier": "email", "identifiers": {"email": "a@emailsim.io"}}]}
    first = sandbox.api.put(f"{sandbox.url}/contacts/v3/import", json=body)
    assert first.headers["X-RateLimit-Scope"] == "lowCallRate"
    assert sandbox.api.put(f"{sandbox.url}/contacts/v3/import", json=body).status_code == 429
    poll = f"{sandbox.url}/contacts/v3/import/{first.json()['importId']}"
    assert [sandbox.api.get(poll).status_code for _ in range(3)] == [200, 200, 429]
    tiers = [c["tier"] for c in sandbox.calls()]
    assert tiers == ["import", "import", "status", "status", "status"]


def test_flat_scheme_user_is_capped_with_apiusage_exceeded(sandbox, contract):
    sandbox.set_profile(base="fast", flat_calls_per_hour=2)
    sandbox.add_api_user("apiuser-flat@apiconnector.com", "pw", scheme="flat")
    auth = ("apiuser-flat@apiconnector.com", "pw")
    calls = [requests.get(f"{sandbox.url}/v2/data-fields", auth=auth) for _ in range(3)]
    assert [c.status_code for c in calls] == [200, 200, 400]
    assert "X-RateLimit-Limit" not in calls[0].headers
    capped = contract.check(calls[2])
    assert capped.json()["message"].endswith("ERROR_APIUSAGE_EXCEEDED")
    sandbox.advance_clock(3601)
    assert requests.get(f"{sandbox.url}/v2/data-fields", auth=auth).status_code == 200


def test_calls_per_minute_by_tier_are_in_the_state(sandbox):
    for _ in range(3):
        sandbox.api.get(f"{sandbox.url}/v2/data-fields")
    sandbox.api.get(f"{sandbox.url}/contacts/v3/email/x@emailsim.io")
    per_minute = sandbox.state()["calls_per_minute"]
    assert sum(per_minute["read"].values()) == 3
    assert sum(per_minute["single"].values()) == 1
