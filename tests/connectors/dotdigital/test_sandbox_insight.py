"""Single-record insight data: upserts and reads for account and contact scope, collections."""

from __future__ import annotations

EMAIL = "joe@emailsim.io"


def test_collections_are_created_listed_and_idempotent(sandbox, contract):
    url = f"{sandbox.url}/insightData/v3/collections/Catalog"
    params = {"collectionScope": "account", "collectionType": "catalog"}
    assert contract.check(sandbox.api.post(url, params=params)).status_code == 201
    assert contract.check(sandbox.api.post(url, params=params)).status_code == 200
    listed = contract.check(sandbox.api.get(f"{sandbox.url}/insightData/v3/collections")).json()
    assert listed == [
        {
            "collectionName": "Catalog",
            "collectionType": "catalog",
            "collectionScope": "account",
            "recordCount": 0,
        }
    ]


def test_account_record_upsert_and_read(sandbox, contract):
    sandbox.plant(collections=[{"name": "Catalog", "scope": "account", "type": "catalog"}])
    url = f"{sandbox.url}/insightData/v3/account/Catalog/sku-1"
    assert contract.check(sandbox.api.put(url, json={"name": "Hat", "price": 5})).status_code == 201
    assert contract.check(sandbox.api.put(url, json={"name": "Hat", "price": 6})).status_code == 204
    record = contract.check(sandbox.api.get(url)).json()
    assert record["key"] == "sku-1" and record["json"] == {"name": "Hat", "price": 6}
    page = contract.check(sandbox.api.get(f"{sandbox.url}/insightData/v3/account/Catalog")).json()
    assert [r["key"] for r in page["_items"]] == ["sku-1"]


def test_contact_record_upsert_read_and_delete(sandbox, contract):
    sandbox.plant(
        contacts=[{"email": EMAIL}],
        collections=[{"name": "Orders", "scope": "contact", "type": "orders"}],
    )
    url = f"{sandbox.url}/insightData/v3/contacts/email/{EMAIL}/Orders/100"
    assert contract.check(sandbox.api.put(url, json={"total": 12.5})).status_code == 201
    record = contract.check(sandbox.api.get(url)).json()
    assert record["json"] == {"total": 12.5} and isinstance(record["ownerContactId"], int)
    listed = contract.check(
        sandbox.api.get(f"{sandbox.url}/insightData/v3/contacts/email/{EMAIL}/Orders")
    ).json()
    assert [r["key"] for r in listed["_items"]] == ["100"]
    assert contract.check(sandbox.api.delete(url)).status_code == 204
    missing = contract.check(sandbox.api.get(url))
    assert missing.status_code == 404
    assert missing.json()["errorCode"] == "insightData:recordNotFound"


def test_single_record_for_an_unknown_contact_is_contact_not_found(sandbox, contract):
    sandbox.plant(collections=[{"name": "Orders", "scope": "contact", "type": "orders"}])
    r = sandbox.api.put(
        f"{sandbox.url}/insightData/v3/contacts/email/ghost@emailsim.io/Orders/1", json={"total": 1}
    )
    assert contract.check(r).status_code == 404
    assert r.json()["errorCode"] == "insightData:contactNotFound"


def test_single_record_into_a_missing_collection_is_collection_not_found(sandbox, contract):
    r = sandbox.api.put(f"{sandbox.url}/insightData/v3/account/Nowhere/1", json={"a": 1})
    assert contract.check(r).status_code == 404
    assert r.json()["errorCode"] == "insightData:collectionNotFound"


def test_single_record_breaking_the_locked_schema_is_rejected(sandbox, contract):
    sandbox.plant(
        collections=[{"name": "Catalog", "scope": "account"}],
        records=[{"collection": "Catalog", "key": "1", "json": {"price": 5}}],
    )
    r = sandbox.api.put(f"{sandbox.url}/insightData/v3/account/Catalog/2", json={"price": "5"})
    assert contract.check(r).status_code == 400
    assert r.json()["details"] == [{"item": "2", "description": "JsonValueIncompatibleWithSchema"}]
    assert "ERROR_TRANSACTIONAL_DATA_VALIDATION_FAILED" in r.json()["description"]


def test_insight_records_page_by_marker(sandbox, contract):
    sandbox.plant(
        collections=[{"name": "Catalog", "scope": "account"}],
        records=[{"collection": "Catalog", "key": f"k{i}", "json": {"n": i}} for i in range(5)],
    )
    keys, params = [], {"limit": 2}
    while True:
        page = contract.check(
            sandbox.api.get(f"{sandbox.url}/insightData/v3/account/Catalog", params=params)
        ).json()
        keys += [r["key"] for r in page["_items"]]
        if "next" not in page["_links"]:
            break
        params["marker"] = page["_links"]["next"]["marker"]
    assert keys == [f"k{i}" for i in range(5)]
