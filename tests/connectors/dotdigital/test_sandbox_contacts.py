"""v3 contacts, v2 data fields and lists, as the sandbox serves them over HTTP."""

from __future__ import annotations

from typing import Any

import requests

EMAIL = "jane@emailsim.io"


def patch(sandbox: Any, email: str, body: dict[str, Any], **params: str) -> requests.Response:
    return sandbox.api.patch(f"{sandbox.url}/contacts/v3/email/{email}", json=body, params=params)


def test_patch_creates_then_updates_a_contact_with_v3_casing(sandbox, contract):
    body = {
        "identifiers": {"email": EMAIL},
        "dataFields": {"FIRSTNAME": "Jane"},
        "channelProperties": {"email": {"emailType": "html", "optInType": "single"}},
    }
    created = contract.check(patch(sandbox, EMAIL, body))
    assert created.status_code == 201
    contact = created.json()
    assert contact["identifiers"] == {"email": EMAIL}
    assert contact["status"] == "subscribed"
    assert contact["channelProperties"]["email"] == {
        "emailType": "Html",
        "optInType": "Single",
        "status": "subscribed",
    }
    updated = contract.check(patch(sandbox, EMAIL, {"dataFields": {"LASTNAME": "Doe"}}))
    assert updated.status_code == 200
    assert updated.json()["contactId"] == contact["contactId"]
    assert updated.json()["dataFields"]["FIRSTNAME"] == "Jane"
    assert updated.json()["dataFields"]["LASTNAME"] == "Doe"


def test_null_clears_a_data_field_and_merge_options_are_honoured(sandbox, contract):
    patch(sandbox, EMAIL, {"dataFields": {"FIRSTNAME": "Jane", "LASTNAME": "Doe"}})
    kept = contract.check(
        patch(
            sandbox,
            EMAIL,
            {"dataFields": {"FIRSTNAME": None}},
            **{"merge-option": "overwrite-if-not-empty"},
        )
    )
    assert kept.json()["dataFields"]["FIRSTNAME"] == "Jane"
    untouched = contract.check(
        patch(
            sandbox,
            EMAIL,
            {"dataFields": {"LASTNAME": "Other"}},
            **{"merge-option": "overwrite-if-empty"},
        )
    )
    assert untouched.json()["dataFields"]["LASTNAME"] == "Doe"
    cleared = contract.check(patch(sandbox, EMAIL, {"dataFields": {"FIRSTNAME": None}}))
    assert cleared.json()["dataFields"]["FIRSTNAME"] is None


def test_patch_naming_an_unknown_data_field_is_rejected(sandbox, contract):
    r = contract.check(patch(sandbox, EMAIL, {"dataFields": {"LOYALTY_TIER": "Gold"}}))
    assert r.status_code == 400
    assert r.json()["errorCode"] == "contacts:dataFieldNotFound"
    assert r.json()["details"][0]["item"] == "dataFields.LOYALTY_TIER"
    assert sandbox.state()["counts"]["contacts"] == 0


def test_patch_with_a_value_of_the_wrong_type_is_rejected(sandbox, contract):
    for name, kind in (("LTV", "Numeric"), ("REFUNDED", "Boolean"), ("LAST_ORDER", "Date")):
        r = sandbox.api.post(
            f"{sandbox.url}/v2/data-fields",
            json={"name": name, "type": kind, "visibility": "Private"},
        )
        assert contract.check(r).status_code == 201
    for fields in ({"LTV": "a lot"}, {"REFUNDED": "maybe"}, {"LAST_ORDER": "yesterday"}):
        r = contract.check(patch(sandbox, EMAIL, {"dataFields": fields}))
        assert r.status_code == 400, fields
        assert r.json()["errorCode"] == "contacts:invalidDataFieldValue"
    good = {"LTV": "12.50", "REFUNDED": True, "LAST_ORDER": "2024-05-01T10:00:00Z"}
    r = contract.check(patch(sandbox, EMAIL, {"dataFields": good}))
    assert r.status_code == 201
    assert r.json()["dataFields"]["LTV"] == 12.5


def test_invalid_email_in_the_path_is_a_v3_invalid_id(sandbox, contract):
    r = contract.check(patch(sandbox, "not-an-email", {"dataFields": {}}))
    assert r.status_code == 400
    assert r.json()["errorCode"] == "contacts:invalidId"


def test_changing_email_to_one_already_taken_is_a_conflict(sandbox, contract):
    patch(sandbox, EMAIL, {})
    other = patch(sandbox, "john@emailsim.io", {}).json()["contactId"]
    r = sandbox.api.patch(
        f"{sandbox.url}/contacts/v3/contactId/{other}", json={"identifiers": {"email": EMAIL}}
    )
    assert contract.check(r).status_code == 409
    assert r.json()["errorCode"] == "contacts:idAlreadyExists"
    renamed = sandbox.api.patch(
        f"{sandbox.url}/contacts/v3/contactId/{other}",
        json={"identifiers": {"email": "johnny@emailsim.io"}},
    )
    assert contract.check(renamed).json()["identifiers"]["email"] == "johnny@emailsim.io"


def test_get_unknown_contact_is_contact_not_found(sandbox, contract):
    r = contract.check(sandbox.api.get(f"{sandbox.url}/contacts/v3/email/nobody@emailsim.io"))
    assert r.status_code == 404
    assert r.json()["errorCode"] == "contacts:contactNotFound"


def test_unsubscribed_contact_resubscribes_only_without_challenge(sandbox, contract):
    patch(sandbox, EMAIL, {"channelProperties": {"email": {"status": "unsubscribed"}}})
    challenged = contract.check(
        patch(
            sandbox,
            EMAIL,
            {
                "channelProperties": {
                    "email": {
                        "status": "subscribed",
                        "resubscribeOptions": {"resubscribeWithNoChallenge": False},
                    }
                }
            },
        )
    )
    assert challenged.json()["channelProperties"]["email"]["status"] == "pendingOptIn"
    state = sandbox.state()
    assert [s["email"] for s in state["suppressions"]] == [EMAIL]
    assert len(state["resubscribe_challenges"]) == 1
    resubscribed = contract.check(
        patch(
            sandbox,
            EMAIL,
            {
                "channelProperties": {
                    "email": {
                        "status": "subscribed",
                        "resubscribeOptions": {"resubscribeWithNoChallenge": True},
                    }
                }
            },
        )
    )
    assert resubscribed.json()["status"] == "subscribed"
    assert sandbox.state()["suppressions"] == []


def test_globally_suppressed_contact_is_left_alone(sandbox, contract):
    sandbox.plant(suppressions=[{"email": EMAIL, "reason": "HardBounced"}])
    r = contract.check(
        patch(
            sandbox,
            EMAIL,
            {
                "dataFields": {"FIRSTNAME": "Jane"},
                "channelProperties": {"email": {"status": "subscribed"}},
            },
        )
    )
    assert r.status_code == 200
    assert r.json()["status"] == "suppressed"
    assert r.json()["channelProperties"]["email"]["status"] == "hardBounced"
    assert r.json()["dataFields"]["FIRSTNAME"] is None


def test_double_opt_in_leaves_a_new_contact_pending(sandbox, contract):
    r = contract.check(
        patch(sandbox, EMAIL, {"channelProperties": {"email": {"optInType": "double"}}})
    )
    assert r.json()["status"] == "pendingOptIn"


def test_contacts_are_listed_by_marker_and_filtered_by_modified(sandbox, contract):
    sandbox.plant(
        contacts=[
            {"email": f"old{i}@emailsim.io", "updated": "2020-01-01T00:00:00Z"} for i in range(3)
        ]
    )
    for i in range(5):
        patch(sandbox, f"new{i}@emailsim.io", {"dataFields": {"FIRSTNAME": f"N{i}"}})
    seen: list[str] = []
    params: dict[str, Any] = {
        "~modified": "gte::2021-01-01T00:00:00Z",
        "limit": 2,
        "data-fields": "FIRSTNAME",
        "include": "channelProperties",
    }
    while True:
        page = contract.check(sandbox.api.get(f"{sandbox.url}/contacts/v3", params=params)).json()
        seen += [c["identifiers"]["email"] for c in page["_items"]]
        assert all(set(c["dataFields"]) == {"FIRSTNAME"} for c in page["_items"])
        if "next" not in page["_links"]:
            break
        params["marker"] = page["_links"]["next"]["marker"]
    assert seen == [f"new{i}@emailsim.io" for i in range(5)]


def test_bad_modified_filter_is_invalid_filter(sandbox, contract):
    r = sandbox.api.get(f"{sandbox.url}/contacts/v3", params={"~modified": "yesterday"})
    assert r.status_code == 400
    assert contract.check(r, request=False).json()["errorCode"] == "contacts:invalidFilter"


def test_list_membership_follows_the_contact_and_can_be_removed(sandbox, contract):
    book = contract.check(
        sandbox.api.post(f"{sandbox.url}/v2/address-books", json={"name": "Dispatched today"})
    ).json()
    assert book["contacts"] == 0
    contact = contract.check(patch(sandbox, EMAIL, {"lists": [book["id"]]})).json()
    assert contact["lists"] == [
        {"id": book["id"], "name": "Dispatched today", "status": "subscribed"}
    ]
    books = contract.check(sandbox.api.get(f"{sandbox.url}/v2/address-books")).json()
    assert {
        "id": book["id"],
        "name": "Dispatched today",
        "visibility": "Private",
        "contacts": 1,
    } in books
    r = sandbox.api.delete(
        f"{sandbox.url}/v2/address-books/{book['id']}/contacts/{contact['contactId']}"
    )
    assert contract.check(r).status_code == 204
    again = contract.check(sandbox.api.get(f"{sandbox.url}/contacts/v3/email/{EMAIL}")).json()
    assert again["lists"] == []


def test_unknown_list_in_a_patch_is_rejected(sandbox, contract):
    r = contract.check(patch(sandbox, EMAIL, {"lists": [999]}))
    assert r.status_code == 400
    assert r.json()["errorCode"] == "contacts:invalidAddressBookIds"


def test_duplicate_list_name_is_a_v2_error(sandbox, contract):
    sandbox.api.post(f"{sandbox.url}/v2/address-books", json={"name": "VIP"})
    r = contract.check(sandbox.api.post(f"{sandbox.url}/v2/address-books", json={"name": "VIP"}))
    assert r.status_code == 400
    assert r.json()["message"].endswith("ERROR_ADDRESSBOOK_DUPLICATE")


def test_data_fields_are_listed_created_and_deleted(sandbox, contract):
    r = contract.check(
        sandbox.api.post(
            f"{sandbox.url}/v2/data-fields",
            json={"name": "LTV", "type": "Numeric", "visibility": "Private", "defaultValue": None},
        )
    )
    assert r.json() == {
        "name": "LTV",
        "type": "Numeric",
        "visibility": "Private",
        "defaultValue": None,
    }
    names = [
        f["name"] for f in contract.check(sandbox.api.get(f"{sandbox.url}/v2/data-fields")).json()
    ]
    assert "LTV" in names and "FIRSTNAME" in names
    dup = contract.check(
        sandbox.api.post(f"{sandbox.url}/v2/data-fields", json={"name": "LTV", "type": "String"})
    )
    assert dup.status_code == 400
    assert dup.json() == {"message": "Field already exists. ERROR_NON_UNIQUE_DATAFIELD"}
    gone = contract.check(sandbox.api.delete(f"{sandbox.url}/v2/data-fields/LTV"))
    assert gone.json() == {"result": True, "dependencies": None}
    reserved = contract.check(
        sandbox.api.delete(f"{sandbox.url}/v2/data-fields/FIRSTNAME"), request=False
    )
    assert reserved.json()["result"] is False


def test_contact_can_be_deleted(sandbox, contract):
    patch(sandbox, EMAIL, {})
    assert (
        contract.check(sandbox.api.delete(f"{sandbox.url}/contacts/v3/email/{EMAIL}")).status_code
        == 200
    )
    assert sandbox.api.get(f"{sandbox.url}/contacts/v3/email/{EMAIL}").status_code == 404


def test_consent_records_are_kept_and_returned_with_their_creation_time(sandbox, contract):
    consent = {
        "text": "Yes please",
        "dateTimeConsented": "2024-01-26T21:29:00Z",
        "url": "https://shop.example/signup",
        "ipAddress": "129.168.0.2",
        "userAgent": "Mozilla/5.0",
    }
    r = contract.check(patch(sandbox, EMAIL, {"consentRecords": [consent]}))
    (kept,) = r.json()["consentRecords"]
    assert kept.items() >= consent.items() and kept["dateTimeCreated"].endswith("Z")
    incomplete = contract.check(
        patch(sandbox, EMAIL, {"consentRecords": [{"text": "Yes"}]}), request=False
    )
    assert incomplete.status_code == 400
