"""The contract helper itself: its allow-list names real faults, and it still catches mistakes."""

from __future__ import annotations

import json

import pytest
import requests


def test_every_allow_listed_fault_is_still_in_the_published_specs(contract):
    def raw(name: str) -> dict:
        return json.loads((contract.spec_dir / name).read_text())

    insight = raw("dotdigital-insight-data-service.json")["components"]["schemas"]
    assert "Finished" not in insight["inline_response_200"]["properties"]["status"]["enum"]
    assert insight["inline_response_200_3"]["properties"]["schema"]["type"] == "object"
    put = raw("dotdigital-insight-data-service.json")["paths"][
        "/insightData/v3/account/{collectionName}/{recordId}"
    ]["put"]
    assert put["requestBody"]["content"]["application/json"]["schema"]["type"] == "string"
    contacts = raw("dotdigital-contacts-service.json")["components"]["schemas"]
    assert contacts["contactIdObject"]["properties"]["contactId"]["type"] == "integer"
    assert contacts["identifiers"]["additionalProperties"]["type"] == "string"
    email = contacts["channelProperties_channelProperties_email"]
    assert (
        email["additionalProperties"] is False and "resubscribeOptions" not in email["properties"]
    )
    fields = raw("Dotdigital-dotdigital-contact-data-fields-2.0.0-resolved-1.yaml")["paths"]
    post = fields["/v2/data-fields"]["post"]["requestBody"]["content"]["application/json"]
    assert post["schema"]["properties"]["defaultValue"]["type"] == "string"
    undeclared = raw("dotdigital-contacts-service.json")["paths"][
        "/contacts/v3/{identifier}/{value}"
    ]
    assert "429" not in undeclared["patch"]["responses"]
    v2 = raw("dotdigital-v2-api-swagger.json")["paths"]["/v2/address-books/{id}"]["delete"]
    assert list(v2["responses"]) == ["200"]
    assert "application/octet-stream" in v2["responses"]["200"]["content"]
    lists = raw("Dotdigital-dotdigital-lists-address-books-2.0.0-resolved.yaml")["paths"]
    assert list(lists["/v2/address-books/{id}"]["delete"]["responses"]) == ["204"]
    assert len(contract.faults) == 8


def fake(status: int, body: object, method: str, url: str, auth, **request) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()
    response.headers["Content-Type"] = "application/json"
    response.request = requests.Request(method, url, auth=auth, **request).prepare()
    return response


def test_the_contract_still_catches_wrong_responses_and_requests(sandbox, contract):
    url = f"{sandbox.url}/contacts/v3/import"
    body = {"contacts": [{"matchIdentifier": "email", "identifiers": {"email": "a@emailsim.io"}}]}
    contract.check(fake(202, {"importId": "x"}, "PUT", url, sandbox.auth, json=body))
    with pytest.raises(contract.Error, match="not of type 'string'"):
        contract.check(fake(202, {"importId": 5}, "PUT", url, sandbox.auth, json=body))
    with pytest.raises(contract.Error, match="should be non-empty"):
        contract.check(
            fake(202, {"importId": "x"}, "PUT", url, sandbox.auth, json={"contacts": []})
        )
    status_url = f"{sandbox.url}/insightData/v3/import/x"
    with pytest.raises(contract.Error, match="is not one of"):
        contract.check(
            fake(200, {"importId": "x", "status": "Done"}, "GET", status_url, sandbox.auth)
        )
    with pytest.raises(contract.Error, match="required property"):
        contract.check(
            fake(
                429,
                {"message": "slow down"},
                "PATCH",
                f"{sandbox.url}/contacts/v3/email/a@emailsim.io",
                sandbox.auth,
                json={},
            )
        )
