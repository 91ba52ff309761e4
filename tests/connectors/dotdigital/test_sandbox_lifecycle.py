"""The sandbox as a process: restart keeps state, reset wipes it, bad input never crashes it."""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor

import requests


def test_state_survives_a_kill_and_restart_mid_import(sandbox, contract):
    sandbox.set_profile(base="fast", import_base_s=600)
    sandbox.api.patch(f"{sandbox.url}/contacts/v3/email/kept@emailsim.io", json={})
    body = {
        "contacts": [{"matchIdentifier": "email", "identifiers": {"email": "queued@emailsim.io"}}]
    }
    import_id = sandbox.api.put(f"{sandbox.url}/contacts/v3/import", json=body).json()["importId"]
    sandbox.restart()
    try:
        assert (
            sandbox.api.get(f"{sandbox.url}/contacts/v3/email/kept@emailsim.io").status_code == 200
        )
        # The restart brings back the start profile (fast): the import is due from its stored time.
        sandbox.advance_clock(601)
        status = contract.check(sandbox.api.get(f"{sandbox.url}/contacts/v3/import/{import_id}"))
        assert status.json()["status"] == "Finished"
        assert status.json()["created"][0]["identifiers"] == {"email": "queued@emailsim.io"}
    finally:
        sandbox.reset()


def test_reset_wipes_the_account_back_to_its_starting_state(sandbox):
    sandbox.api.patch(f"{sandbox.url}/contacts/v3/email/gone@emailsim.io", json={})
    sandbox.faults(error_rate=1.0)
    sandbox.reset()
    state = sandbox.state()
    assert state["counts"]["contacts"] == 0
    assert state["faults"]["config"] == {}
    assert {f["name"] for f in state["data_fields"]} >= {"FIRSTNAME", "LASTNAME"}
    assert [lst["name"] for lst in state["lists"]] == ["Test"]


def test_malformed_json_gets_dotdigitals_bad_request_never_a_stack_trace(sandbox, contract):
    log_start = len(sandbox.log())
    v3 = sandbox.api.patch(
        f"{sandbox.url}/contacts/v3/email/x@emailsim.io",
        data=b'{"a": ',
        headers={"Content-Type": "application/json"},
    )
    assert v3.status_code == 400
    assert v3.json()["errorCode"] == "server:badRequest"
    assert v3.json()["details"][0]["item"].startswith("line 1, position")
    contract.check(v3, request=False)
    v2 = sandbox.api.post(
        f"{sandbox.url}/v2/address-books",
        data=b"[oops",
        headers={"Content-Type": "application/json"},
    )
    assert v2.status_code == 400
    assert v2.json()["message"].endswith("ERROR_MALFORMED_REQUEST")
    insight = sandbox.api.put(
        f"{sandbox.url}/insightData/v3/import",
        data=b"nope",
        headers={"Content-Type": "application/json"},
    )
    assert insight.status_code == 400 and "Traceback" not in insight.text
    assert "Traceback" not in sandbox.log()[log_start:]


def test_state_page_and_json_show_the_account(sandbox):
    sandbox.api.patch(
        f"{sandbox.url}/contacts/v3/email/shown@emailsim.io",
        json={"dataFields": {"FIRSTNAME": "Shown"}},
    )
    state = sandbox.state()
    assert state["contacts"][0]["identifiers"]["email"] == "shown@emailsim.io"
    assert set(state) >= {
        "contacts",
        "data_fields",
        "lists",
        "collections",
        "imports",
        "suppressions",
        "enrolments",
        "calls_per_minute",
        "peak_imports_in_flight",
    }
    page = requests.get(f"{sandbox.url}/_sandbox/")
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "shown@emailsim.io" in page.text


def test_the_call_log_can_be_read_incrementally(sandbox):
    sandbox.api.get(f"{sandbox.url}/v2/data-fields")
    first = sandbox.calls()
    sandbox.api.get(f"{sandbox.url}/v2/address-books")
    later = sandbox.calls(after_id=first[-1]["id"])
    assert [(c["method"], c["path"], c["status"]) for c in later] == [
        ("GET", "/v2/address-books", 200)
    ]
    assert later[0]["time"].endswith("Z")


def test_concurrent_writes_are_all_applied(sandbox):
    def write(i: int) -> int:
        return requests.patch(
            f"{sandbox.url}/contacts/v3/email/c{i}@emailsim.io",
            json={},
            auth=sandbox.auth,
            timeout=30,
        ).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(write, range(64)))
    assert statuses == [201] * 64
    assert sandbox.state()["counts"]["contacts"] == 64


def test_a_profile_file_is_loaded_and_printed_at_start(start_sandbox, tmp_path):
    profile = tmp_path / "tight.json"
    profile.write_text(
        json.dumps({"base": "realistic", "latency_ms": 0, "tier_limits": {"single": 2}})
    )
    process = start_sandbox(profile=str(profile))
    assert '"name": "tight"' in process.log()
    active = process.control("GET", "profile")
    assert active["import_base_s"] == 1.0 and active["tier_limits"]["import"] == 120
    url = f"{process.url}/contacts/v3/email/x@emailsim.io"
    assert [process.api.get(url).status_code for _ in range(3)] == [404, 404, 429]


def test_the_realistic_profile_matches_the_documented_numbers(sandbox):
    realistic = sandbox.set_profile(name="realistic")
    assert realistic["latency_ms"] == 50
    assert realistic["import_base_s"] == 1.0 and realistic["import_per_record_ms"] == 0.05
    assert realistic["tier_limits"] == {"single": 600, "import": 120, "status": 1200, "read": 300}
    assert (realistic["max_contact_imports"], realistic["max_insight_imports"]) == (25, 5)


def test_the_management_command_runs_the_same_server(start_sandbox):
    process = start_sandbox(command=[sys.executable, "manage.py", "run_dotdigital_sandbox"])
    assert process.api.get(f"{process.url}/v2/data-fields").status_code == 200
