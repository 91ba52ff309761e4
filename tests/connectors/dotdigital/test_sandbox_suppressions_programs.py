"""The suppressions feed, unsubscribes, and program enrolments with their hourly allowance."""

from __future__ import annotations


def test_suppressed_since_pages_with_select_and_skip(sandbox, contract):
    sandbox.plant(
        suppressions=[
            {
                "email": "old@emailsim.io",
                "reason": "Unsubscribed",
                "dateRemoved": "2020-01-01T00:00:00Z",
            },
            {
                "email": "a@emailsim.io",
                "reason": "Unsubscribed",
                "dateRemoved": "2024-01-01T00:00:00Z",
            },
            {
                "email": "b@emailsim.io",
                "reason": "HardBounced",
                "dateRemoved": "2024-01-02T00:00:00Z",
            },
            {
                "email": "c@emailsim.io",
                "reason": "IspComplained",
                "dateRemoved": "2024-01-03T00:00:00Z",
            },
        ]
    )
    url = f"{sandbox.url}/v2/contacts/suppressed-since/2023-06-01"
    first = contract.check(sandbox.api.get(url, params={"select": 2, "skip": 0})).json()
    rest = contract.check(sandbox.api.get(url, params={"select": 2, "skip": 2})).json()
    assert [s["suppressedContact"]["email"] for s in first + rest] == [
        "a@emailsim.io",
        "b@emailsim.io",
        "c@emailsim.io",
    ]
    assert [s["reason"] for s in first + rest] == ["Unsubscribed", "HardBounced", "IspComplained"]
    assert first[0]["dateRemoved"] == "2024-01-01T00:00:00.000Z"


def test_unsubscribe_suppresses_and_feeds_the_suppressions_list(sandbox, contract):
    sandbox.api.patch(f"{sandbox.url}/contacts/v3/email/jo@emailsim.io", json={})
    r = contract.check(
        sandbox.api.post(f"{sandbox.url}/v2/contacts/unsubscribe", json={"email": "jo@emailsim.io"})
    )
    assert r.json()["reason"] == "Unsubscribed"
    assert r.json()["suppressedContact"]["status"] == "Unsubscribed"
    contact = sandbox.api.get(f"{sandbox.url}/contacts/v3/email/jo@emailsim.io").json()
    assert contact["status"] == "unsubscribed"
    feed = sandbox.api.get(f"{sandbox.url}/v2/contacts/suppressed-since/2000-01-01").json()
    assert [s["suppressedContact"]["email"] for s in feed] == ["jo@emailsim.io"]


def test_programs_are_listed(sandbox, contract):
    sandbox.plant(
        programs=[
            {"id": 11, "name": "Post-purchase", "status": "Active"},
            {"id": 12, "name": "Old welcome", "status": "Deactivated"},
        ]
    )
    programs = contract.check(sandbox.api.get(f"{sandbox.url}/v2/programs")).json()
    assert [(p["id"], p["status"]) for p in programs] == [(11, "Active"), (12, "Deactivated")]


def test_enrolments_are_logged_per_program_and_contact(sandbox, contract):
    ids = sandbox.plant(
        programs=[{"id": 11, "name": "Review", "status": "Active"}],
        contacts=[{"email": "a@emailsim.io"}, {"email": "b@emailsim.io"}],
    )["ids"]
    a, b = ids["contacts"]
    for contacts in ([a, b], [a]):
        r = contract.check(
            sandbox.api.post(
                f"{sandbox.url}/v2/programs/enrolments",
                json={"programId": 11, "contacts": contacts},
            )
        )
        assert r.status_code == 201
        assert r.json()["status"] == "Processing"
    enrolment = contract.check(
        sandbox.api.get(f"{sandbox.url}/v2/programs/enrolments/{r.json()['id']}")
    ).json()
    assert enrolment["contacts"] == [a]
    counts = sandbox.control("GET", "enrolments")["counts"]
    assert counts == [
        {"programId": 11, "contactId": a, "count": 2},
        {"programId": 11, "contactId": b, "count": 1},
    ]


def test_inactive_program_refuses_enrolment(sandbox, contract):
    ids = sandbox.plant(
        programs=[{"id": 12, "name": "Old", "status": "Deactivated"}],
        contacts=[{"email": "a@emailsim.io"}],
    )["ids"]
    r = contract.check(
        sandbox.api.post(
            f"{sandbox.url}/v2/programs/enrolments",
            json={"programId": 12, "contacts": ids["contacts"]},
        )
    )
    assert r.status_code == 422
    assert r.json() == {"message": "Error: ERROR_PROGRAM_NOT_ACTIVE"}
    missing = contract.check(
        sandbox.api.post(
            f"{sandbox.url}/v2/programs/enrolments", json={"programId": 99, "contacts": [1]}
        )
    )
    assert missing.status_code == 404


def test_only_20_enrolment_calls_an_hour(sandbox, contract):
    ids = sandbox.plant(
        programs=[{"id": 11, "name": "Review", "status": "Active"}],
        contacts=[{"email": "a@emailsim.io"}],
    )["ids"]
    body = {"programId": 11, "contacts": ids["contacts"]}
    url = f"{sandbox.url}/v2/programs/enrolments"
    assert {sandbox.api.post(url, json=body).status_code for _ in range(20)} == {201}
    refused = contract.check(sandbox.api.post(url, json=body))
    assert refused.status_code == 400
    assert refused.json()["message"].endswith("ERROR_ENROLMENT_ALLOWANCE_EXCEEDED")
    sandbox.advance_clock(3601)
    assert sandbox.api.post(url, json=body).status_code == 201
