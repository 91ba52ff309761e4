"""Bulk imports: split bodies, per-record failures by key, schema locks, the 25 / 5 caps."""

from __future__ import annotations

import pytest

from connectors.budget import Lane
from connectors.dotdigital import errors
from connectors.dotdigital.types import (
    ContactWrite,
    FailureKind,
    ImportKind,
    ImportState,
    InsightWrite,
)


def finish(client, handles, sandbox):
    sandbox.control("POST", "settle")
    return [client.wait_for_import(h, interval=0.05, timeout=30) for h in handles]


def test_a_contact_import_is_split_to_the_body_limit_and_every_record_lands(
    make_client, client, sandbox
):
    small = make_client(max_body_bytes=4000)
    contacts = [
        ContactWrite(email=f"bulk{i}@example.com", data_fields={"FIRSTNAME": f"N{i}"})
        for i in range(100)
    ]
    handles = small.import_contacts(contacts)
    assert len(handles) > 1
    assert all(h.body_bytes <= 4000 for h in handles)
    assert [k for h in handles for k in h.keys] == [c.key for c in contacts]
    statuses = finish(small, handles, sandbox)
    assert all(s.state is ImportState.FINISHED and not s.failures for s in statuses)
    assert sum(len(s.contact_ids) for s in statuses) == 100
    assert sandbox.state()["counts"]["contacts"] == 100


def test_a_count_limit_splits_too(make_client, sandbox):
    client = make_client(max_records=30)
    handles = client.import_contacts([ContactWrite(email=f"c{i}@example.com") for i in range(70)])
    assert [len(h.keys) for h in handles] == [30, 30, 10]


def test_per_record_failures_come_back_keyed_by_the_records_key(client, sandbox):
    sandbox.plant(
        data_fields=[{"name": "LTV", "type": "Numeric"}],
        contacts=[{"email": "bounced@example.com", "status": "hardBounced"}],
    )
    (handle,) = client.import_contacts(
        [
            ContactWrite(email="Good@Example.com", data_fields={"LTV": 12}),
            ContactWrite(email="bad@@example", data_fields={}),
            ContactWrite(email="typed@example.com", data_fields={"LTV": "lots"}),
            ContactWrite(email="bounced@example.com", data_fields={"LTV": 1}),
        ]
    )
    (status,) = finish(client, [handle], sandbox)
    assert status.state is ImportState.FINISHED
    assert set(status.failures) == {"bad@@example", "typed@example.com", "bounced@example.com"}
    assert status.failures["bad@@example"].kind is FailureKind.RECORD
    assert status.failures["typed@example.com"].code == "invalidDataFieldValue"
    assert status.failures["bounced@example.com"].kind is FailureKind.SUPPRESSED
    assert "good@example.com" in status.contact_ids


def test_insight_records_whose_type_breaks_the_locked_schema_fail_as_records(client, sandbox):
    client.import_contacts([ContactWrite(email="buyer@example.com")])
    sandbox.control("POST", "settle")
    first = client.import_insight(
        "Orders",
        [InsightWrite("1001", {"total": 10.5, "sku": "AB-12"}, "buyer@example.com")],
        collection_type="orders",
    )
    assert finish(client, first, sandbox)[0].failures == {}
    schema = client.get_collection_schema("Orders")
    assert schema is not None
    assert {f.name: f.type for f in schema.fields}["total"] in ("NUMERIC", "FLOAT", "DOUBLE")
    second = client.import_insight(
        "Orders",
        [
            InsightWrite("1002", {"total": "ten pounds", "sku": "AB-13"}, "buyer@example.com"),
            InsightWrite("1003", {"total": 3, "sku": "AB-14"}, "stranger@example.com"),
            InsightWrite("1004", {"total": 4, "sku": "AB-15"}, "buyer@example.com"),
        ],
        collection_type="orders",
    )
    (status,) = finish(client, second, sandbox)
    assert status.failures["1002"].code == "JsonValueIncompatibleWithSchema"
    assert status.failures["1002"].kind is FailureKind.RECORD
    assert status.failures["1003"].kind is FailureKind.TRANSIENT
    assert "1004" not in status.failures
    records = client.list_insight_records("Orders", contact=("email", "buyer@example.com"))
    assert sorted(r.key for r in records.items) == ["1001", "1004"]


def test_account_scoped_records_are_read_back_by_page(client, sandbox):
    handles = client.import_insight(
        "Catalog_Main",
        [InsightWrite(f"SKU-{i}", {"name": f"Hat {i}", "price": i}) for i in range(5)],
        scope="account",
        collection_type="catalog",
    )
    finish(client, handles, sandbox)
    page = client.list_insight_records("Catalog_Main", limit=3)
    assert len(page.items) == 3 and page.next_marker
    rest = client.list_insight_records("Catalog_Main", limit=3, marker=page.next_marker)
    assert [r.key for r in page.items + rest.items] == [f"SKU-{i}" for i in range(5)]
    assert client.get_collection_schema("Nothing_here") is None


def slow_imports(sandbox):
    sandbox.set_profile(base="fast", import_base_s=600)


def test_no_more_than_25_contact_imports_are_in_flight(make_client, sandbox):
    slow_imports(sandbox)
    client = make_client(lane=Lane.REALTIME)
    handles = [
        client.import_contacts([ContactWrite(email=f"i{n}@example.com")])[0] for n in range(25)
    ]
    with pytest.raises(errors.TooManyImports) as caught:
        client.import_contacts([ContactWrite(email="one-more@example.com")])
    assert caught.value.retry_after and not caught.value.permanent
    state = sandbox.state()
    assert state["peak_imports_in_flight"]["contacts"] == 25
    assert len([c for c in sandbox.calls() if c["path"] == "/contacts/v3/import"]) == 25
    # A client that does not share the budget (another account key) meets DotDigital's own cap.
    stranger = make_client(lane=Lane.REALTIME)
    with pytest.raises(errors.TooManyImports) as dotdigital_says:
        stranger.import_contacts([ContactWrite(email="two-more@example.com")])
    assert dotdigital_says.value.status == 429
    assert dotdigital_says.value.code == "contacts:tooManyActiveImports"
    assert stranger.import_caps[ImportKind.CONTACTS].in_use() == 0
    assert len(handles) == 25


def test_no_more_than_5_insight_imports_are_in_flight_and_a_finished_one_frees_its_slot(
    make_client, sandbox
):
    slow_imports(sandbox)
    client = make_client(lane=Lane.REALTIME)
    records = [InsightWrite("k", {"v": 1})]
    handles = [client.import_insight(f"Coll_{n}", records, scope="account")[0] for n in range(5)]
    with pytest.raises(errors.TooManyImports):
        client.import_insight("Coll_6", records, scope="account")
    assert sandbox.state()["peak_imports_in_flight"]["insight"] == 5
    cap = client.import_caps[ImportKind.INSIGHT]
    assert cap.in_use() == 5
    assert client.poll_import(handles[0]).state is ImportState.PENDING
    assert cap.in_use() == 5
    sandbox.advance_clock(601)
    assert client.poll_import(handles[0]).state is ImportState.FINISHED
    assert cap.in_use() == 4
    assert client.import_insight("Coll_6", records, scope="account")


def test_the_bulk_lane_leaves_import_slots_free_for_the_realtime_lane(make_client, sandbox):
    slow_imports(sandbox)
    bulk = make_client(account_key="shared", lane=Lane.BULK)
    realtime = make_client(account_key="shared", lane=Lane.REALTIME)
    records = [InsightWrite("k", {"v": 1})]
    for n in range(3):
        bulk.import_insight(f"Backfill_{n}", records, scope="account")
    with pytest.raises(errors.TooManyImports) as caught:
        bulk.import_insight("Backfill_3", records, scope="account")
    assert "open to the bulk lane" in str(caught.value)
    assert caught.value.retry_after == 5.0
    # A dispatch's records still go: the last two slots are the realtime lane's.
    for n in range(2):
        assert realtime.import_insight(f"Orders_{n}", records, scope="account")
    with pytest.raises(errors.TooManyImports) as caught:
        realtime.import_insight("Orders_2", records, scope="account")
    assert caught.value.retry_after == 1.0  # a small realtime import finishes in about a second
    assert sandbox.state()["peak_imports_in_flight"]["insight"] == 5


def test_a_single_insight_record_is_put_and_replaced_then_a_schema_break_is_a_record_error(
    client, sandbox
):
    client.upsert_contact(ContactWrite(email="one@example.com"))
    assert client.create_collection("Orders", type="orders") is True
    assert client.create_collection("Orders", type="orders") is False
    client.create_collection("Catalog_X", scope="account", type="catalog")
    record = InsightWrite("5001", {"total": 10, "status": "paid"}, "one@example.com")
    assert client.put_insight_record("Orders", record) is True
    assert client.put_insight_record("Orders", record) is False
    with pytest.raises(errors.SchemaMismatch) as caught:
        client.put_insight_record(
            "Orders", InsightWrite("5002", {"total": "ten"}, "one@example.com")
        )
    assert caught.value.status == 400 and caught.value.code == "insightData:validationFailed"
    assert client.put_insight_record("Catalog_X", InsightWrite("SKU-1", {"name": "Hat"}))
