"""Asynchronous contact and insight imports: statuses, per-record failures and the caps."""

from __future__ import annotations

from typing import Any

import requests


def contact_import(sandbox: Any, contacts: list[Any], **extra: Any) -> requests.Response:
    return sandbox.api.put(
        f"{sandbox.url}/contacts/v3/import", json={"contacts": contacts, **extra}
    )


def insight_import(
    sandbox: Any,
    records: list[dict[str, Any]],
    name: str = "Orders",
    scope: str = "contact",
    kind: str = "orders",
) -> requests.Response:
    return sandbox.api.put(
        f"{sandbox.url}/insightData/v3/import",
        json={
            "collectionName": name,
            "collectionScope": scope,
            "collectionType": kind,
            "records": records,
        },
    )


def by_email(email: str, **extra: Any) -> dict[str, Any]:
    return {"matchIdentifier": "email", "identifiers": {"email": email}, **extra}


def order(key: str, email: str, doc: dict[str, Any]) -> dict[str, Any]:
    return {"key": key, "contactIdentity": {"identifier": "email", "value": email}, "json": doc}


def status(sandbox: Any, contract: Any, kind: str, import_id: str) -> dict[str, Any]:
    service = "contacts" if kind == "contacts" else "insightData"
    r = contract.check(sandbox.api.get(f"{sandbox.url}/{service}/v3/import/{import_id}"))
    assert r.status_code == 200
    result: dict[str, Any] = r.json()
    return result


def test_contact_import_reports_per_record_failures(sandbox, contract):
    sandbox.plant(
        contacts=[{"email": "known@emailsim.io"}], data_fields=[{"name": "LTV", "type": "Numeric"}]
    )
    r = contract.check(
        contact_import(
            sandbox,
            [
                by_email("new@emailsim.io", dataFields={"LTV": 10}),
                by_email("known@emailsim.io", dataFields={"FIRSTNAME": "Kim"}),
                by_email("bad@emailsim@io.com"),
                by_email("typed@emailsim.io", dataFields={"LTV": "lots"}),
                by_email("unknown@emailsim.io", dataFields={"TIER": "Gold"}),
                by_email("new@emailsim.io"),
            ],
            mergeOption="overwrite",
        )
    )
    assert r.status_code == 202
    result = status(sandbox, contract, "contacts", r.json()["importId"])
    assert result["status"] == "Finished"
    assert result["summary"] == {
        "newContacts": 1,
        "updatedContacts": 1,
        "globallySuppressed": 0,
        "invalidEntries": 3,
        "duplicateIdentifiers": 1,
    }
    assert [c["identifiers"]["email"] for c in result["created"]] == ["new@emailsim.io"]
    assert [c["identifiers"]["email"] for c in result["updated"]] == ["known@emailsim.io"]
    codes = {f["identifiers"]["email"]: f["failures"][0]["failureCode"] for f in result["failures"]}
    assert codes == {
        "bad@emailsim@io.com": "invalidEmail",
        "typed@emailsim.io": "invalidDataFieldValue",
        "unknown@emailsim.io": "dataFieldNotFound",
        "new@emailsim.io": "duplicateIdentifier",
    }


def test_contact_import_skips_globally_suppressed_contacts(sandbox, contract):
    sandbox.plant(suppressions=[{"email": "bounced@emailsim.io", "reason": "HardBounced"}])
    r = contact_import(sandbox, [by_email("bounced@emailsim.io", dataFields={"FIRSTNAME": "B"})])
    result = status(sandbox, contract, "contacts", r.json()["importId"])
    assert result["summary"]["globallySuppressed"] == 1
    assert result["failures"][0]["failures"][0]["failureCode"] == "globallySuppressed"


def test_import_is_not_finished_until_its_time_then_applies(sandbox, contract):
    sandbox.set_profile(base="fast", import_base_s=600)
    import_id = contact_import(sandbox, [by_email("later@emailsim.io")]).json()["importId"]
    assert status(sandbox, contract, "contacts", import_id) == {
        "importId": import_id,
        "status": "NotFinished",
    }
    assert sandbox.api.get(f"{sandbox.url}/contacts/v3/email/later@emailsim.io").status_code == 404
    sandbox.advance_clock(601)
    assert status(sandbox, contract, "contacts", import_id)["status"] == "Finished"
    assert sandbox.api.get(f"{sandbox.url}/contacts/v3/email/later@emailsim.io").status_code == 200


def test_unknown_import_id_is_import_not_found(sandbox, contract):
    r = contract.check(sandbox.api.get(f"{sandbox.url}/contacts/v3/import/nope"))
    assert r.status_code == 404
    assert r.json()["errorCode"] == "contacts:importNotFound"


def test_at_most_25_contact_imports_are_active(sandbox, contract):
    sandbox.set_profile(base="fast", import_base_s=600)
    for i in range(25):
        assert contact_import(sandbox, [by_email(f"c{i}@emailsim.io")]).status_code == 202
    refused = contract.check(contact_import(sandbox, [by_email("one-too-many@emailsim.io")]))
    assert refused.status_code == 429
    assert refused.json()["errorCode"] == "contacts:tooManyActiveImports"
    assert sandbox.state()["peak_imports_in_flight"]["contacts"] == 25
    sandbox.advance_clock(601)
    assert contact_import(sandbox, [by_email("next@emailsim.io")]).status_code == 202


def test_empty_or_shapeless_import_is_bad_json(sandbox, contract):
    r = contract.check(
        sandbox.api.put(f"{sandbox.url}/contacts/v3/import", json={"contacts": {}}), request=False
    )
    assert r.status_code == 400
    assert r.json()["errorCode"] == "contacts:badJson"


def test_import_over_the_size_limit_is_refused(sandbox, contract):
    sandbox.set_profile(base="fast", max_body_bytes=2048)
    r = contact_import(sandbox, [by_email(f"c{i}@emailsim.io") for i in range(100)])
    assert contract.check(r).status_code == 413
    assert r.json()["errorCode"] == "contacts:requestTooLarge"
    assert sandbox.state()["counts"]["imports"] == 0


def test_insight_import_rejects_unknown_contacts_per_record_and_answers_202(sandbox, contract):
    sandbox.plant(contacts=[{"email": "joe@emailsim.io"}])
    r = contract.check(
        insight_import(
            sandbox,
            [
                order("1", "joe@emailsim.io", {"total": 10.5, "placed": "2024-01-01T10:00:00Z"}),
                order("2", "ghost@emailsim.io", {"total": 3}),
            ],
        )
    )
    assert r.status_code == 202
    result = status(sandbox, contract, "insight", r.json()["importId"])
    assert result["status"] == "Finished"
    assert result["summary"] == {"totalRecords": 2, "totalImported": 1, "totalRejected": 1}
    assert result["failures"][0]["failureReason"] == "ContactEmailDoesNotExist"
    assert result["failures"][0]["key"] == "2"


def test_insight_schema_locks_on_first_write(sandbox, contract):
    sandbox.plant(contacts=[{"email": "joe@emailsim.io"}])
    first = insight_import(
        sandbox, [order("1", "joe@emailsim.io", {"total": 10, "lines": [{"sku": "A"}]})]
    )
    status(sandbox, contract, "insight", first.json()["importId"])
    second = insight_import(
        sandbox,
        [
            order("2", "joe@emailsim.io", {"total": "ten"}),
            order("3", "joe@emailsim.io", {"total": 3, "lines": {"sku": "B"}}),
            order("4", "joe@emailsim.io", {"total": 4, "note": "objects are extendable"}),
            order("5", "joe@emailsim.io", {"grid": [[1, 2]]}),
        ],
    )
    result = status(sandbox, contract, "insight", second.json()["importId"])
    reasons = {f["key"]: f["failureReason"] for f in result["failures"]}
    assert reasons == {
        "2": "JsonValueIncompatibleWithSchema",
        "3": "JsonValueIncompatibleWithSchema",
        "5": "JsonContainsNestedArray",
    }
    assert "of type Numeric already exists" in result["failures"][0]["details"][0]
    schema = contract.check(
        sandbox.api.get(f"{sandbox.url}/insightData/v3/collections/Orders/schema")
    ).json()["schema"]
    assert [(f["name"], f["type"], f["mode"]) for f in schema] == [
        ("total", "FLOAT", "NULLABLE"),
        ("lines", "RECORD", "REPEATED"),
        ("note", "STRING", "NULLABLE"),
    ]


def test_at_most_5_insight_imports_run_at_once(sandbox, contract):
    sandbox.set_profile(base="fast", import_base_s=600)
    catalog = [{"key": "sku-1", "json": {"name": "Hat"}}]
    for _ in range(5):
        assert insight_import(sandbox, catalog, "Catalog", "account", "catalog").status_code == 202
    refused = contract.check(insight_import(sandbox, catalog, "Catalog", "account", "catalog"))
    assert refused.status_code == 429
    assert refused.json()["errorCode"] == "insightData:tooManyActiveImports"
    in_flight = status(
        sandbox,
        contract,
        "insight",
        sandbox.calls(path="/insightData/v3/import")[0]["import"]["id"],
    )
    assert in_flight["status"] == "Processing"
    assert sandbox.state()["peak_imports_in_flight"]["insight"] == 5


def test_imports_are_named_in_the_call_log(sandbox, contract):
    r = contact_import(sandbox, [by_email("a@emailsim.io"), by_email("b@emailsim.io")])
    (call,) = sandbox.calls(path="/contacts/v3/import")
    assert call["import"] == {"id": r.json()["importId"], "kind": "contacts", "records": 2}
    assert call["tier"] == "import" and call["status"] == 202


def test_insight_import_with_a_bad_collection_name_is_invalid_id(sandbox, contract):
    r = insight_import(sandbox, [{"key": "1", "json": {}}], name="my orders", scope="account")
    assert contract.check(r, request=False).status_code == 400
    assert r.json()["errorCode"] == "insightData:invalidId"


def test_import_matching_on_contact_id_changes_the_email_of_the_same_contact(sandbox, contract):
    contact_id = sandbox.plant(contacts=[{"email": "old@emailsim.io"}])["ids"]["contacts"][0]
    r = contract.check(
        contact_import(
            sandbox,
            [
                {
                    "matchIdentifier": "contactId",
                    "identifiers": {"contactId": contact_id, "email": "new@emailsim.io"},
                },
                {"matchIdentifier": "contactId", "identifiers": {"contactId": 999999}},
            ],
            mergeOption="overwriteIfNotEmpty",
        )
    )
    result = status(sandbox, contract, "contacts", r.json()["importId"])
    assert result["updated"] == [
        {"contactId": contact_id, "identifiers": {"email": "new@emailsim.io"}}
    ]
    assert result["failures"][0]["failures"][0]["failureCode"] == "invalidContactId"


def test_import_honours_resubscribe_without_challenge_false(sandbox, contract):
    sandbox.plant(suppressions=[{"email": "out@emailsim.io", "reason": "Unsubscribed"}])
    email = {"status": "subscribed", "resubscribeOptions": {"resubscribeWithNoChallenge": False}}
    r = contact_import(sandbox, [by_email("out@emailsim.io", channelProperties={"email": email})])
    assert contract.check(r).status_code == 202
    status(sandbox, contract, "contacts", r.json()["importId"])
    contact = sandbox.api.get(f"{sandbox.url}/contacts/v3/email/out@emailsim.io").json()
    assert contact["channelProperties"]["email"]["status"] == "pendingOptIn"
    assert [s["email"] for s in sandbox.state()["suppressions"]] == ["out@emailsim.io"]


def test_a_malformed_record_fails_alone(sandbox, contract):
    r = contact_import(
        sandbox,
        [
            by_email("odd@emailsim.io", channelProperties={"email": "subscribed"}),
            by_email("fine@emailsim.io"),
            "not even an object",
        ],
    )
    assert contract.check(r, request=False).status_code == 202
    result = status(sandbox, contract, "contacts", r.json()["importId"])
    assert result["summary"]["newContacts"] == 1
    assert result["failures"][0]["failures"][0]["failureCode"] == "apiSchemaViolation"
    assert result["failures"][1]["failures"][0]["failureCode"] == "noValidIdentifiers"
