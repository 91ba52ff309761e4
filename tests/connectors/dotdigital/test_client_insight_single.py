"""Single insight record writes (the realtime lane's path), over real HTTP against the sandbox:
what delivery relies on when it sends one order or one stock record by itself."""

from __future__ import annotations

import pytest

from connectors.dotdigital import errors
from connectors.dotdigital.types import ContactWrite, InsightWrite


def test_a_contact_scoped_record_of_a_contact_dotdigital_does_not_know_is_contact_not_found(
    client,
):
    client.upsert_contact(ContactWrite(email="known@example.com"))
    client.create_collection("Orders", type="orders")
    with pytest.raises(errors.NotFound) as caught:
        client.put_insight_record(
            "Orders", InsightWrite("7001", {"total": 5}, contact_email="new@example.com")
        )
    # Delivery retries this one (the contact is still being written), so the code must say so.
    assert "contactnotfound" in caught.value.code.lower()
    assert client.put_insight_record(
        "Orders", InsightWrite("7001", {"total": 5}, contact_email="known@example.com")
    )


def test_a_record_for_a_collection_that_does_not_exist_yet_is_collection_not_found(client):
    with pytest.raises(errors.NotFound) as caught:
        client.put_insight_record("Stock", InsightWrite("SKU-9", {"Saleable": 3}))
    assert "collectionnotfound" in caught.value.code.lower()


def test_an_account_record_is_written_and_read_back_by_its_key(client):
    client.create_collection("Stock", scope="account", type="custom")
    assert client.put_insight_record("Stock", InsightWrite("SKU-9", {"Saleable": 3})) is True
    assert client.put_insight_record("Stock", InsightWrite("SKU-9", {"Saleable": 0})) is False
    page = client.list_insight_records("Stock")
    assert [(r.key, r.json["Saleable"]) for r in page.items] == [("SKU-9", 0)]
