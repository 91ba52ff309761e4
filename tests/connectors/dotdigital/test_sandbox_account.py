"""Authentication, region discovery and account-level failures."""

from __future__ import annotations

import requests

DENIED = {"message": "Authorization has been denied for this request."}


def test_bad_credentials_get_dotdigitals_v2_401(sandbox, contract):
    for auth in (("apiuser-test@apiconnector.com", "wrong"), ("nobody@apiconnector.com", "x")):
        r = requests.get(f"{sandbox.url}/v2/data-fields", auth=auth)
        assert r.status_code == 401
        assert r.json() == DENIED
        contract.check(r)
    bare = requests.get(f"{sandbox.url}/contacts/v3/email/x@emailsim.io")
    assert bare.status_code == 401
    assert bare.headers["WWW-Authenticate"].startswith("Basic")


def test_account_info_names_the_sandbox_as_the_region_endpoint(sandbox, contract):
    r = contract.check(sandbox.api.get(f"{sandbox.url}/v2/account-info"))
    props = {p["name"]: p["value"] for p in r.json()["properties"]}
    assert props["ApiEndpoint"] == sandbox.url


def test_api_users_can_be_added_at_run_time(sandbox):
    sandbox.add_api_user("apiuser-2@apiconnector.com", "s3cret")
    r = requests.get(f"{sandbox.url}/v2/data-fields", auth=("apiuser-2@apiconnector.com", "s3cret"))
    assert r.status_code == 200
    assert sandbox.calls()[-1]["api_user"] == "apiuser-2@apiconnector.com"


def test_a_password_change_turns_every_call_into_401(sandbox, contract):
    sandbox.account(failure="password_changed")
    r = contract.check(sandbox.api.get(f"{sandbox.url}/v2/data-fields"))
    assert r.status_code == 401 and r.json() == DENIED
    sandbox.account(failure=None)
    assert sandbox.api.get(f"{sandbox.url}/v2/data-fields").status_code == 200


def test_a_feature_not_active_can_be_limited_to_one_api(sandbox, contract):
    sandbox.account(failure="feature_not_active", match="/insightData")
    r = contract.check(sandbox.api.get(f"{sandbox.url}/insightData/v3/collections"))
    assert r.status_code == 403
    assert r.json()["description"].endswith("ERROR_FEATURENOTACTIVE")
    assert sandbox.api.get(f"{sandbox.url}/v2/data-fields").status_code == 200


def test_wrong_region_is_403_access_denied_but_discovery_still_answers(sandbox, contract):
    sandbox.account(failure="wrong_region", api_endpoint="https://r2-api.dotdigital.com")
    denied = contract.check(sandbox.api.get(f"{sandbox.url}/v2/data-fields"))
    assert denied.status_code == 403
    assert denied.json() == {"message": "Access is denied."}
    info = contract.check(sandbox.api.get(f"{sandbox.url}/v2/account-info")).json()
    props = {p["name"]: p["value"] for p in info["properties"]}
    assert props["ApiEndpoint"] == "https://r2-api.dotdigital.com"


def test_control_surface_needs_no_dotdigital_auth_and_unknown_paths_404(sandbox):
    assert requests.get(f"{sandbox.url}/_sandbox/health").json()["ok"] is True
    r = sandbox.api.get(f"{sandbox.url}/v2/no-such-thing")
    assert r.status_code == 404
    assert "message" in r.json()
    wrong_method = sandbox.api.post(f"{sandbox.url}/contacts/v3/import", json={})
    assert wrong_method.status_code == 405
    assert wrong_method.json()["errorCode"] == "server:methodNotAllowed"
