"""The DotDigital client deletes a contact (an erasure request), against the sandbox over
HTTP; the exchange is checked against the published spec like every other."""

from __future__ import annotations

from connectors.dotdigital.types import ContactWrite


def test_delete_contact_removes_the_contact_and_says_so(client):
    client.upsert_contact(ContactWrite(email="jo@example.com", data_fields={"FIRSTNAME": "Jo"}))
    assert client.get_contact("email", "jo@example.com") is not None
    assert client.delete_contact("email", "jo@example.com") is True
    assert client.get_contact("email", "jo@example.com") is None


def test_delete_contact_of_nobody_answers_false(client):
    assert client.delete_contact("email", "nobody@example.com") is False
