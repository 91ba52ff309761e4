"""Operations DotDigital's specs define beyond what the client calls, answered as documented.

Each call is validated against the published document (`contract.check`).
"""

from __future__ import annotations

from typing import Any

import requests

EMAIL = "ann@emailsim.io"


def create(sandbox: Any, body: dict[str, Any]) -> requests.Response:
    return sandbox.api.post(f"{sandbox.url}/contacts/v3", json=body)


def contact_url(sandbox: Any, identifier: str, value: str) -> str:
    return f"{sandbox.url}/contacts/v3/{identifier}/{value}"


def new_list(sandbox: Any, contract: Any, name: str) -> int:
    made = contract.check(sandbox.api.post(f"{sandbox.url}/v2/address-books", json={"name": name}))
    list_id: int = made.json()["id"]
    return list_id


# -- POST /contacts/v3 ----------------------------------------------------------------------


def test_post_creates_a_contact_and_answers_201_with_it(sandbox, contract):
    body = {
        "identifiers": {"email": EMAIL},
        "dataFields": {"FIRSTNAME": "Ann"},
        "channelProperties": {"email": {"emailType": "html", "optInType": "single"}},
    }
    created = contract.check(create(sandbox, body))
    assert created.status_code == 201
    contact = created.json()
    assert contact["identifiers"] == {"email": EMAIL}
    assert contact["dataFields"]["FIRSTNAME"] == "Ann"
    fetched = contract.check(sandbox.api.get(contact_url(sandbox, "email", EMAIL)))
    assert fetched.json()["contactId"] == contact["contactId"]


def test_post_answers_409_when_an_identifier_is_already_in_use(sandbox, contract):
    contract.check(create(sandbox, {"identifiers": {"email": EMAIL}}))
    again = contract.check(
        create(sandbox, {"identifiers": {"email": EMAIL.upper(), "mobileNumber": "447700900123"}})
    )
    assert again.status_code == 409
    assert again.json()["errorCode"] == "contacts:idAlreadyExists"
    assert len(sandbox.state()["contacts"]) == 1


def test_post_without_identifiers_or_with_a_bad_email_is_a_400(sandbox, contract):
    missing = contract.check(create(sandbox, {"dataFields": {"FIRSTNAME": "Ann"}}), request=False)
    assert missing.status_code == 400
    assert missing.json()["errorCode"] == "contacts:noValidIdentifiers"
    bad = contract.check(create(sandbox, {"identifiers": {"email": "not-an-email"}}))
    assert bad.status_code == 400
    assert bad.json()["errorCode"] == "contacts:invalidId"
    assert sandbox.state()["contacts"] == []


# -- PUT /contacts/v3/{identifier}/{value} --------------------------------------------------


def test_put_replaces_the_whole_contact_clearing_what_the_body_leaves_out(sandbox, contract):
    kept, dropped = new_list(sandbox, contract, "Kept"), new_list(sandbox, contract, "Dropped")
    contract.check(
        create(
            sandbox,
            {
                "identifiers": {"email": EMAIL},
                "dataFields": {"FIRSTNAME": "Ann", "LASTNAME": "Lee"},
                "lists": [kept, dropped],
            },
        )
    )
    replaced = contract.check(
        sandbox.api.put(
            contact_url(sandbox, "email", EMAIL),
            json={
                "identifiers": {"email": EMAIL},
                "dataFields": {"LASTNAME": "Wu"},
                "lists": [kept],
            },
        )
    )
    assert replaced.status_code == 200
    contact = replaced.json()
    assert contact["dataFields"]["FIRSTNAME"] is None
    assert contact["dataFields"]["LASTNAME"] == "Wu"
    assert [item["id"] for item in contact["lists"]] == [kept]


def test_put_answers_404_for_an_unknown_contact_and_creates_nothing(sandbox, contract):
    missing = contract.check(
        sandbox.api.put(
            contact_url(sandbox, "email", EMAIL), json={"identifiers": {"email": EMAIL}}
        )
    )
    assert missing.status_code == 404
    assert missing.json()["errorCode"] == "contacts:contactNotFound"
    assert sandbox.state()["contacts"] == []


# -- GET /contacts/v3?include= --------------------------------------------------------------


def test_include_outside_its_enum_is_a_400_in_the_v3_error_shape(sandbox, contract):
    answer = contract.check(
        sandbox.api.get(f"{sandbox.url}/contacts/v3", params={"include": "lists|everything"}),
        request=False,
    )
    assert answer.status_code == 400
    body = answer.json()
    assert body["errorCode"] == "contacts:invalidParameter"
    assert body["details"][0]["item"] == "include"


def test_every_documented_include_is_accepted(sandbox, contract):
    contract.check(create(sandbox, {"identifiers": {"email": EMAIL}}))
    answer = contract.check(
        sandbox.api.get(
            f"{sandbox.url}/contacts/v3",
            params={"include": "channelProperties|lists|preferences|consentRecords"},
        )
    )
    assert answer.status_code == 200
    assert answer.json()["_items"][0]["lists"] == []


def test_list_and_segment_filters_are_integers_and_exclusive(sandbox, contract):
    url = f"{sandbox.url}/contacts/v3"
    both = contract.check(sandbox.api.get(url, params={"~listId": 1, "~segmentId": 2}))
    assert both.status_code == 400
    assert both.json()["errorCode"] == "contacts:invalidFilter"
    bad = contract.check(sandbox.api.get(url, params={"~segmentId": "false"}), request=False)
    assert bad.status_code == 400
    contract.check(create(sandbox, {"identifiers": {"email": EMAIL}}))
    segment = contract.check(sandbox.api.get(url, params={"~segmentId": 7}))
    assert segment.json()["_items"] == []


# -- insight collections --------------------------------------------------------------------


def make_collection(sandbox: Any, contract: Any, name: str, scope: str) -> None:
    made = sandbox.api.post(
        f"{sandbox.url}/insightData/v3/collections/{name}",
        params={"collectionScope": scope, "collectionType": "orders"},
    )
    assert contract.check(made).status_code == 201


def test_get_account_lists_only_account_scoped_collections(sandbox, contract):
    make_collection(sandbox, contract, "Catalog_Main", "account")
    make_collection(sandbox, contract, "Orders", "contact")
    put = sandbox.api.put(
        f"{sandbox.url}/insightData/v3/account/Catalog_Main/sku-1", json={"price": 5}
    )
    assert contract.check(put).status_code == 201
    listed = contract.check(sandbox.api.get(f"{sandbox.url}/insightData/v3/account"))
    assert listed.json() == [
        {
            "collectionName": "Catalog_Main",
            "collectionType": "orders",
            "collectionScope": "account",
            "recordCount": 1,
        }
    ]


def test_delete_collection_answers_202_with_a_job_that_reports_finished(sandbox, contract):
    make_collection(sandbox, contract, "Catalog_Main", "account")
    sandbox.api.put(f"{sandbox.url}/insightData/v3/account/Catalog_Main/sku-1", json={"a": 1})
    deleted = contract.check(
        sandbox.api.delete(f"{sandbox.url}/insightData/v3/collections/Catalog_Main")
    )
    assert deleted.status_code == 202
    job = contract.check(
        sandbox.api.get(f"{sandbox.url}/insightData/v3/async/{deleted.json()['jobId']}")
    )
    assert job.json()["status"] == "Finished"
    assert contract.check(sandbox.api.get(f"{sandbox.url}/insightData/v3/account")).json() == []
    gone = contract.check(
        sandbox.api.get(f"{sandbox.url}/insightData/v3/account/Catalog_Main/sku-1")
    )
    assert gone.status_code == 404
    again = contract.check(
        sandbox.api.delete(f"{sandbox.url}/insightData/v3/collections/Catalog_Main")
    )
    assert again.status_code == 404
    assert again.json()["errorCode"] == "insightData:collectionNotFound"


def test_an_unknown_async_job_is_a_404(sandbox, contract):
    missing = contract.check(sandbox.api.get(f"{sandbox.url}/insightData/v3/async/nope"))
    assert missing.status_code == 404
    assert missing.json()["errorCode"] == "insightData:asyncJobNotFound"


# -- DELETE /v2/address-books/{id} ----------------------------------------------------------


def test_delete_address_book_answers_204_and_takes_its_members_with_it(sandbox, contract):
    list_id = new_list(sandbox, contract, "Newsletter")
    contract.check(create(sandbox, {"identifiers": {"email": EMAIL}, "lists": [list_id]}))
    deleted = contract.check(sandbox.api.delete(f"{sandbox.url}/v2/address-books/{list_id}"))
    assert deleted.status_code == 204
    assert deleted.content == b""
    gone = contract.check(sandbox.api.get(f"{sandbox.url}/v2/address-books/{list_id}"))
    assert gone.status_code == 404
    contact = contract.check(sandbox.api.get(contact_url(sandbox, "email", EMAIL))).json()
    assert contact["lists"] == []
    again = contract.check(sandbox.api.delete(f"{sandbox.url}/v2/address-books/{list_id}"))
    assert again.status_code == 404


def test_the_reserved_test_list_cannot_be_deleted(sandbox, contract):
    refused = contract.check(sandbox.api.delete(f"{sandbox.url}/v2/address-books/1"))
    assert refused.status_code == 400
    assert "ERROR_ADDRESSBOOK_NOTWRITABLE" in refused.json()["message"]


def test_an_id_beyond_int32_is_not_found_not_a_server_error(sandbox, contract):
    url = f"{sandbox.url}/v2/address-books/57506716369431214732368362275927490560/contacts/1"
    answer = sandbox.api.delete(url)
    assert answer.status_code == 404
    assert "message" in answer.json()
