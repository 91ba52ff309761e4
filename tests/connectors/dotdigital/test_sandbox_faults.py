"""Fault injection set at run time: latency, 5xx, 429 storms, hangs, dropped connections."""

from __future__ import annotations

import pytest
import requests

FIELDS = "/v2/data-fields"


def get(sandbox, path=FIELDS, **kwargs):
    return sandbox.api.get(f"{sandbox.url}{path}", **kwargs)


def test_added_latency_outlasts_a_short_client_timeout(sandbox):
    sandbox.faults(latency_ms=1500)
    with pytest.raises(requests.exceptions.ReadTimeout):
        get(sandbox, timeout=0.3)
    sandbox.faults()
    assert get(sandbox, timeout=5).status_code == 200


def test_server_errors_at_a_rate_carry_dotdigital_envelopes(sandbox, contract):
    sandbox.faults(error_rate=1.0, error_status=503)
    v2 = contract.check(get(sandbox))
    assert v2.status_code == 503
    assert v2.json()["message"].endswith("ERROR_SYSTEM_SERVICETEMPORARILYUNAVAILABLE")
    v3 = contract.check(get(sandbox, "/contacts/v3/email/x@emailsim.io"))
    assert v3.json()["errorCode"] == "server:serviceUnavailable"


def test_error_burst_fails_the_next_n_calls_only(sandbox):
    sandbox.faults(error_burst=2, error_status=500)
    assert [get(sandbox).status_code for _ in range(4)] == [500, 500, 200, 200]
    assert sandbox.control("GET", "faults")["injected"] == {"error": 2}


def test_a_429_storm_looks_like_an_exhausted_bucket(sandbox, contract):
    sandbox.faults(rate_limit_burst=3)
    storm = [get(sandbox) for _ in range(4)]
    assert [r.status_code for r in storm] == [429, 429, 429, 200]
    assert storm[0].headers["X-RateLimit-Remaining"] == "0"
    assert storm[0].headers["X-RateLimit-Scope"] == "readCallRate"
    contract.check(storm[0])


def test_a_hang_outlasts_the_callers_timeout_but_the_write_still_lands(sandbox):
    sandbox.faults(hang_burst=1, hang_seconds=2)
    with pytest.raises(requests.exceptions.ReadTimeout):
        sandbox.api.patch(f"{sandbox.url}/contacts/v3/email/slow@emailsim.io", json={}, timeout=0.3)
    assert get(sandbox, "/contacts/v3/email/slow@emailsim.io").status_code == 200


def test_a_dropped_connection_closes_without_an_answer(sandbox):
    sandbox.faults(drop_burst=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{sandbox.url}{FIELDS}", auth=sandbox.auth, timeout=5)
    assert get(sandbox).status_code == 200
    assert sandbox.calls()[0]["note"] == {"fault": "drop"}


def test_drop_after_processing_applies_the_write(sandbox):
    sandbox.faults(drop_burst=1, drop_after_processing=True)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.patch(
            f"{sandbox.url}/contacts/v3/email/applied@emailsim.io",
            json={},
            auth=sandbox.auth,
            timeout=5,
        )
    assert get(sandbox, "/contacts/v3/email/applied@emailsim.io").status_code == 200


def test_faults_are_reproducible_with_a_seed(sandbox):
    def run() -> list[int]:
        sandbox.faults(seed=7, error_rate=0.5)
        return [get(sandbox).status_code for _ in range(20)]

    first = run()
    assert 200 in first and 503 in first
    assert run() == first


def test_faults_can_target_one_path_and_method(sandbox):
    sandbox.faults(error_rate=1.0, match="/contacts/v3/import", methods=["PUT"])
    assert get(sandbox).status_code == 200
    body = {"contacts": [{"matchIdentifier": "email", "identifiers": {"email": "a@emailsim.io"}}]}
    assert sandbox.api.put(f"{sandbox.url}/contacts/v3/import", json=body).status_code == 503


def test_an_internal_error_answers_json_500_and_logs_the_traceback(sandbox, contract):
    sandbox.faults(crash_burst=1)
    r = get(sandbox, "/contacts/v3/email/x@emailsim.io")
    assert r.status_code == 500
    assert contract.check(r).json()["errorCode"] == "server:internalError"
    assert "Traceback" not in r.text
    assert "injected sandbox crash" in sandbox.log()
