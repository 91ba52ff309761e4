"""POST /hooks/<token>/ answers by design.md's table, and stores what it says it stores."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from django.db import OperationalError, connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from exceptions_inbox.models import Occurrence
from monitoring.models import SourceEvent, WebhookRequest


def test_it_answers_404_to_an_unknown_token_and_stores_nothing(client, erp):
    response = client.post("/hooks/not-a-token/", data="{}", content_type="application/json")
    assert response.status_code == 404
    assert not WebhookRequest.objects.exists()
    assert not SourceEvent.objects.exists()


def test_it_rate_limits_unknown_tokens_per_client_address(client, erp):
    answers = [
        client.post("/hooks/guess/", data="{}", content_type="application/json").status_code
        for _ in range(31)
    ]
    assert answers[:30] == [404] * 30
    assert answers[30] == 429
    # Another address is not limited by the first one's guesses.
    other = client.post(
        "/hooks/guess/", data="{}", content_type="application/json", REMOTE_ADDR="10.0.0.9"
    )
    assert other.status_code == 404


def test_it_answers_405_to_get(client, erp):
    assert client.get(erp.url).status_code == 405


def test_it_accepts_valid_events_with_a_result_each_and_stores_the_body_whole(erp):
    events = [erp.order("1001"), erp.order("1002")]
    body = json.dumps({"events": events}).encode()
    response = erp.post(body)
    assert response.status_code == 202
    answer = response.json()
    assert answer["accepted"] == 2
    assert [r["status"] for r in answer["results"]] == ["accepted", "accepted"]
    stored = WebhookRequest.objects.get(pk=answer["request_id"])
    assert bytes(stored.body) == body
    rows = SourceEvent.objects.order_by("pk")
    assert [r.source_event_id for r in rows] == [e["source_event_id"] for e in events]
    assert [r["event_id"] for r in answer["results"]] == [r.pk for r in rows]
    assert all(r.state == SourceEvent.State.RECEIVED and r.request == stored for r in rows)
    assert rows[0].envelope == events[0]


def test_an_event_without_a_data_signal_is_stored_in_one_transaction_and_never_read_back(erp):
    with CaptureQueriesContext(connection) as queries:
        assert erp.post(erp.order("1")).status_code == 202
    statements = [q["sql"].upper() for q in queries.captured_queries]
    assert [s for s in statements if "SIGNAL" in s] == []  # no read of the events for warnings
    # The view's transaction (a savepoint inside the test's own) and no other.
    assert sum(s.startswith("SAVEPOINT") for s in statements) <= 1


def test_the_query_string_is_stored_with_the_request_in_the_same_insert(erp):
    with CaptureQueriesContext(connection) as queries:
        response = Client().post(
            erp.url + "?callback=despatched",
            data=json.dumps(erp.order("1")),
            content_type="application/json",
        )
    assert response.status_code == 202
    stored = WebhookRequest.objects.get(pk=response.json()["request_id"])
    assert stored.headers[":query"] == "callback=despatched"
    touching = [q["sql"] for q in queries.captured_queries if "webhookrequest" in q["sql"]]
    assert [sql.split()[0] for sql in touching] == ["INSERT", "UPDATE"]  # then the counts


def test_it_accepts_a_single_event_and_a_bare_list(erp):
    assert erp.post(erp.order("1")).json()["accepted"] == 1
    assert erp.post([erp.order("2"), erp.order("3")]).json()["accepted"] == 2


def test_it_reports_field_errors_per_event_and_still_accepts_the_valid_ones(erp):
    bad = erp.order("1002")
    del bad["data"]["currency"]
    bad["data"]["totals"]["grand_total"]["amount"] = 12.5  # a float, not a decimal string
    response = erp.post({"events": [erp.order("1001"), bad]})
    assert response.status_code == 202
    results = response.json()["results"]
    assert results[0]["status"] == "accepted"
    assert results[1]["status"] == "invalid"
    paths = {e["path"] for e in results[1]["errors"]}
    assert {"data.currency", "data.totals.grand_total.amount"} <= paths
    assert SourceEvent.objects.count() == 1
    occurrence = Occurrence.objects.get(group__kind="malformed_payload")
    assert occurrence.event_key == f"webhook:{response.json()['request_id']}"


def test_it_answers_400_when_nothing_in_the_body_is_valid_and_opens_malformed_payload(erp):
    response = erp.post(b"{not json", content_type="application/json")
    assert response.status_code == 400
    stored = WebhookRequest.objects.get()
    assert bytes(stored.body) == b"{not json"
    assert stored.status_code == 400
    occurrence = Occurrence.objects.get(group__kind="malformed_payload")
    assert occurrence.detail["request_id"] == stored.pk
    assert not SourceEvent.objects.exists()


def test_it_answers_400_to_the_wrong_content_type_and_keeps_the_body(erp):
    body = json.dumps(erp.order("1001"))
    response = erp.post(body, content_type="text/plain")
    assert response.status_code == 400
    assert "Content-Type" in response.json()["errors"][0]["errors"][0]["message"]
    stored = WebhookRequest.objects.get()
    assert bytes(stored.body) == body.encode()
    occurrence = Occurrence.objects.get(group__kind="malformed_payload")
    assert occurrence.detail["request_id"] == stored.pk  # the exception names the stored body
    assert not SourceEvent.objects.exists()


def test_it_answers_400_when_every_event_is_invalid(erp):
    response = erp.post({"events": [{"event_type": "order.created"}]})
    assert response.status_code == 400
    assert response.json()["results"][0]["status"] == "invalid"


def test_it_answers_413_over_the_size_limit_keeping_headers_and_the_first_part(erp, settings):
    settings.SYNCDESK_WEBHOOK_MAX_BYTES = 1000
    body = json.dumps({"events": [erp.order(str(n)) for n in range(20)]})
    response = erp.post(body, HTTP_X_SOURCE_SYSTEM="mintsoft")
    assert response.status_code == 413
    stored = WebhookRequest.objects.get()
    assert stored.truncated and stored.size == len(body)
    assert bytes(stored.body) == body.encode()[: len(bytes(stored.body))]
    assert stored.headers["X-Source-System"] == "mintsoft"
    assert Occurrence.objects.filter(group__kind="malformed_payload").exists()
    assert not SourceEvent.objects.exists()


def test_it_never_stores_credentials_from_the_headers(erp):
    erp.post(erp.order("1"), HTTP_AUTHORIZATION="Bearer secret")
    assert "Authorization" not in WebhookRequest.objects.get().headers


def test_it_answers_duplicate_for_an_event_it_already_has(erp):
    event = erp.order("1001")
    first = erp.post(event).json()
    again = erp.post(event).json()
    assert again["results"][0]["status"] == "duplicate"
    assert again["results"][0]["event_id"] == first["results"][0]["event_id"]
    assert SourceEvent.objects.count() == 1


def test_it_answers_503_not_500_when_the_database_fails(erp):
    with mock.patch(
        "monitoring.pipeline.ingest.WebhookRequest.objects.create",
        side_effect=OperationalError("database is locked"),
    ):
        response = erp.post(erp.order("1"))
    assert response.status_code == 503
    assert response["Retry-After"]


@pytest.mark.django_db(transaction=True)
def test_it_answers_202_only_once_the_events_are_committed(world, erp):
    from django.db import connection
    from django.http import JsonResponse

    in_transaction = []

    def answer(*args, **kwargs):
        in_transaction.append(connection.in_atomic_block)
        return JsonResponse(*args, **kwargs)

    with mock.patch("monitoring.webhooks.JsonResponse", side_effect=answer):
        response = erp.post(erp.order("1"))
    assert response.status_code == 202
    assert in_transaction == [False]
    assert SourceEvent.objects.count() == 1


def test_events_for_no_flow_are_kept_as_skipped_with_the_reason(erp):
    erp.flow.event_types = ["order.created"]
    erp.flow.save()
    response = erp.post(erp.product("SKU-1"))
    assert response.json()["accepted"] == 1
    event = SourceEvent.objects.get()
    assert event.state == SourceEvent.State.SKIPPED
    assert "No active flow" in event.reason
