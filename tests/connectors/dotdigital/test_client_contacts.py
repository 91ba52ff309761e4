"""The client's single-record calls, reads, lists, data fields, suppressions and programs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from connectors.dotdigital import errors
from connectors.dotdigital.client import DotDigitalClient
from connectors.dotdigital.types import ContactWrite, Outcome
from tests.connectors.conftest import check_exchange
from tests.factories import make_connection


def sent_body(exchanges, method, path_part):
    for response in exchanges:
        request = response.request
        if request.method == method and path_part in request.url:
            return json.loads(request.body)
    raise AssertionError(f"no {method} {path_part} was sent")


def test_it_discovers_the_region_endpoint_and_caches_it_on_the_connection(sandbox, contract, world):
    conn = make_connection(
        world.workspace,
        credentials={"api_user": sandbox.auth[0], "password": sandbox.auth[1]},
        options={"discovery_url": sandbox.url},
    )
    client = DotDigitalClient.for_connection(conn)
    assert client.endpoint is None
    client.list_data_fields()
    conn.refresh_from_db()
    assert conn.options["api_endpoint"] == sandbox.url
    assert conn.options["account_id"] == "1"
    assert [c["path"] for c in sandbox.calls()] == ["/v2/account-info", "/v2/data-fields"]
    again = DotDigitalClient.for_connection(conn)
    assert again.endpoint == sandbox.url
    assert again.account_key == "dotdigital:1"


def test_an_endpoint_outside_dotdigital_is_refused(sandbox, make_client):
    with pytest.raises(errors.ConnectionProblem):
        make_client(endpoint="https://evil.example.com")


def test_upsert_creates_then_updates_and_never_resubscribes_without_challenge(client, exchanges):
    sandbox_contact = ContactWrite(
        email="Jane@Example.com", data_fields={"FIRSTNAME": "Jane"}, email_status="subscribed"
    )
    first = client.upsert_contact(sandbox_contact)
    assert first.created and first.outcome is Outcome.WRITTEN
    assert first.contact.email == "jane@example.com"
    second = client.upsert_contact(
        ContactWrite(email="jane@example.com", data_fields={"LASTNAME": "Doe"})
    )
    assert not second.created
    assert second.contact.contact_id == first.contact.contact_id
    assert second.contact.data_fields["FIRSTNAME"] == "Jane"
    assert second.contact.data_fields["LASTNAME"] == "Doe"
    body = sent_body(exchanges, "PATCH", "/contacts/v3/email/")
    assert body["channelProperties"]["email"]["resubscribeOptions"] == {
        "resubscribeWithNoChallenge": False
    }


def test_a_suppressed_contact_is_a_result_not_an_error(client, sandbox):
    sandbox.plant(contacts=[{"email": "bounced@example.com", "status": "hardBounced"}])
    result = client.upsert_contact(
        ContactWrite(email="bounced@example.com", data_fields={"FIRSTNAME": "B"})
    )
    assert result.outcome is Outcome.SUPPRESSED and result.skipped
    assert "FIRSTNAME" not in {k for k, v in result.contact.data_fields.items() if v}


def test_an_unsubscribed_contact_is_reported_as_such_and_only_challenged_to_resubscribe(
    client, sandbox
):
    sandbox.plant(contacts=[{"email": "gone@example.com", "status": "unsubscribed"}])
    written = client.upsert_contact(
        ContactWrite(email="gone@example.com", data_fields={"FIRSTNAME": "G"})
    )
    assert written.outcome is Outcome.UNSUBSCRIBED and not written.skipped
    challenged = client.upsert_contact(
        ContactWrite(email="gone@example.com", email_status="subscribed")
    )
    assert challenged.outcome is Outcome.PENDING_OPT_IN
    assert challenged.contact.email_status != "subscribed"
    assert len(sandbox.state()["resubscribe_challenges"]) == 1


def test_a_value_that_does_not_fit_its_data_field_is_a_record_error(client, sandbox):
    sandbox.plant(data_fields=[{"name": "LTV", "type": "Numeric"}])
    with pytest.raises(errors.DataFieldError) as caught:
        client.upsert_contact(ContactWrite(email="x@example.com", data_fields={"LTV": "lots"}))
    assert caught.value.permanent and caught.value.status == 400
    assert caught.value.code == "contacts:invalidDataFieldValue"
    assert "LTV" in caught.value.text


def test_an_invalid_email_is_a_validation_record_error(client):
    with pytest.raises(errors.ValidationFailed) as caught:
        client.upsert_contact(ContactWrite(email="not-an-email@"))
    assert caught.value.code == "contacts:invalidId"
    assert isinstance(caught.value, errors.RecordError)


def test_reading_one_contact_and_a_missing_one(client):
    client.upsert_contact(ContactWrite(email="read@example.com"))
    found = client.get_contact("email", "read@example.com")
    assert found is not None and found.email == "read@example.com"
    assert client.get_contact("email", "nobody@example.com") is None


def test_contacts_are_paged_by_marker_from_a_modified_date(client, sandbox):
    sandbox.plant(
        contacts=[
            {"email": f"p{i}@example.com", "updated": "2020-01-01T00:00:00Z"} for i in range(2)
        ]
        + [{"email": f"n{i}@example.com"} for i in range(5)]
    )
    since = datetime.now(UTC) - timedelta(days=1)
    first = client.list_contacts(modified_since=since, limit=2)
    assert len(first.items) == 2 and first.next_marker
    every = list(client.iter_contacts(modified_since=since, limit=2))
    assert sorted(c.email for c in every) == [f"n{i}@example.com" for i in range(5)]


def test_data_fields_are_listed_and_created_once(client):
    created = client.create_data_field("LOYALTY_TIER", "String")
    assert created.name == "LOYALTY_TIER" and created.type == "String"
    again = client.create_data_field("LOYALTY_TIER", "String")
    assert again.name == "LOYALTY_TIER"
    assert "LOYALTY_TIER" in {f.name for f in client.list_data_fields()}


def test_list_membership_is_added_and_removed(client, sandbox):
    book = client.create_address_book("Dispatched today")
    assert book.id in {b.id for b in client.list_address_books()}
    added = client.add_to_list(book.id, ContactWrite(email="member@example.com"))
    assert book.id in added.contact.lists
    client.remove_from_list(book.id, added.contact.contact_id)
    assert book.id not in client.get_contact("email", "member@example.com").lists


def test_suppressions_since_a_date_are_paged_with_select_and_skip(client, sandbox):
    sandbox.plant(
        suppressions=[
            {
                "email": f"s{i}@example.com",
                "reason": "Unsubscribed",
                "dateRemoved": f"2024-01-0{i + 1}T10:00:00Z",
            }
            for i in range(5)
        ]
    )
    since = datetime(2024, 1, 2, tzinfo=UTC)
    got = list(client.suppressions_since(since, select=2))
    assert [s.email for s in got] == [f"s{i}@example.com" for i in range(1, 5)]
    assert all(s.reason == "Unsubscribed" and s.date_removed >= since for s in got)
    skips = [c for c in sandbox.calls() if "suppressed-since" in c["path"]]
    assert len(skips) == 3


def test_unsubscribe_answers_the_suppression(client):
    client.upsert_contact(ContactWrite(email="leaving@example.com"))
    result = client.unsubscribe("leaving@example.com")
    assert result.email == "leaving@example.com" and result.reason == "Unsubscribed"


def test_programs_are_listed_and_contacts_enrolled(client, sandbox):
    sandbox.plant(programs=[{"id": 7, "name": "Review request", "status": "Active"}])
    contact = client.upsert_contact(ContactWrite(email="buyer@example.com")).contact
    assert [(p.id, p.status) for p in client.list_programs()] == [(7, "Active")]
    enrolment = client.enrol(7, [contact.contact_id])
    assert enrolment.program_id == 7 and enrolment.contacts == (contact.contact_id,)


def test_the_contract_check_catches_a_request_that_breaks_the_spec(sandbox, contract):
    bad = sandbox.api.patch(
        f"{sandbox.url}/contacts/v3/email/jane@example.com",
        params={"merge-option": "overwriteIfNotEmpty"},  # the import body's spelling
        json={"identifiers": {"email": "jane@example.com"}},
    )
    with pytest.raises(AssertionError, match="merge-option"):
        check_exchange(contract, bad)
