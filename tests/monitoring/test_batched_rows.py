"""Staging's, planning's and the webhook's batched writes (`monitoring/pipeline/rows.py`): on
PostgreSQL one statement of arrays per batch, the arrays bound on the server in binary.

- What goes in comes back as written, whatever a text literal would have had to escape.
- New rows take the sequence's ids, set on the instances, or keep the ids they hold.
- The statements pass through Django's cursor: its execute wrappers (staging's fast path notices
  its writes by one) and its query log see them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from monitoring.models import Customer, CustomerKey
from monitoring.pipeline import rows
from tests.factories import make_workspace

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="arrays are PostgreSQL's"),
]

AWKWARD = ['quote " and \\ backslash', "{braces, commas}", "NULL", "", "ünïcödé 🛒", "a'b"]


def customers(n: int) -> list[Customer]:
    workspace = make_workspace()
    return [Customer(workspace=workspace, email=f"c{i}@example.com") for i in range(n)]


def test_new_rows_take_the_sequences_ids_set_on_their_instances() -> None:
    new = customers(3)
    rows.create_rows(new)
    assert all(c.pk for c in new)
    assert not any(c._state.adding for c in new)
    stored = dict(Customer.objects.filter(pk__in=[c.pk for c in new]).values_list("pk", "email"))
    assert stored == {c.pk: c.email for c in new}


def test_new_rows_that_hold_their_ids_keep_them() -> None:
    new = customers(2)
    start = Customer.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    for i, c in enumerate(new):
        c.pk = start + 1000 + i
    rows.create_rows(new)
    assert set(
        Customer.objects.filter(pk__in=[c.pk for c in new]).values_list("pk", flat=True)
    ) == {
        start + 1000,
        start + 1001,
    }


def test_rows_skipped_as_conflicts_are_not_written_twice() -> None:
    [customer] = customers(1)
    customer.save()
    key = {"workspace": customer.workspace, "source_system": "shop", "source_customer_id": "42"}
    rows.create_rows([CustomerKey(customer=customer, **key)], ignore_conflicts=True)
    rows.create_rows([CustomerKey(customer=customer, **key)], ignore_conflicts=True)
    assert CustomerKey.objects.filter(**key).count() == 1


def test_a_batch_reads_back_as_written_whatever_a_text_literal_would_escape() -> None:
    batch = customers(len(AWKWARD))
    rows.create_rows(batch)
    when = datetime(2026, 12, 7, 1, 2, 3, 456789, tzinfo=UTC)
    for i, (customer, text) in enumerate(zip(batch, AWKWARD, strict=True)):
        customer.first_name = text
        customer.previous_emails = [text, {"nested": text}]
        customer.lifetime_value = Decimal("1234.5678") * i
        customer.last_order_at = when if i % 2 else None
        customer.refunded = bool(i % 2)
    rows.bulk_set(
        batch, ["first_name", "previous_emails", "lifetime_value", "last_order_at", "refunded"]
    )
    for customer in batch:
        stored = Customer.objects.get(pk=customer.pk)
        assert (
            stored.first_name,
            stored.previous_emails,
            stored.lifetime_value,
            stored.last_order_at,
            stored.refunded,
        ) == (
            customer.first_name,
            customer.previous_emails,
            customer.lifetime_value,
            customer.last_order_at,
            customer.refunded,
        )


def test_the_arrays_are_bound_as_parameters_not_written_into_the_statement() -> None:
    batch = customers(2)
    rows.create_rows(batch)
    batch[0].first_name = "Marker-In-The-Values"
    with CaptureQueriesContext(connection) as queries:
        rows.bulk_set(batch, ["first_name"])
    [update] = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert "Marker-In-The-Values" not in update
    assert "$1" in update


def test_batched_statements_pass_through_djangos_execute_wrappers() -> None:
    seen: list[str] = []

    def wrapper(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        seen.append(sql)
        return execute(sql, params, many, context)

    batch = customers(2)
    with connection.execute_wrapper(wrapper):
        rows.create_rows(batch)
        rows.bulk_set(batch, ["first_name"])
    assert [sql.split()[0] for sql in seen] == ["INSERT", "UPDATE"]


def test_rows_given_as_tuples_go_in_with_the_other_fields_at_their_defaults() -> None:
    [customer] = customers(1)
    customer.save()
    names = ("workspace_id", "customer_id", "source_customer_id")
    rows.insert_values(
        CustomerKey, names, [(customer.workspace_id, customer.pk, s) for s in ("A-1", AWKWARD[0])]
    )
    stored = CustomerKey.objects.filter(customer=customer).order_by("source_customer_id")
    assert [(k.source_system, k.source_customer_id) for k in stored] == [
        ("", "A-1"),
        ("", AWKWARD[0]),
    ]


def test_rows_given_as_tuples_skip_conflicts_when_asked() -> None:
    [customer] = customers(1)
    customer.save()
    names = ("workspace_id", "customer_id", "source_system", "source_customer_id")
    row = (customer.workspace_id, customer.pk, "shop", "A-1")
    rows.insert_values(CustomerKey, names, [row])
    rows.insert_values(CustomerKey, names, [row, (*row[:3], "A-2")], ignore_conflicts=True)
    assert CustomerKey.objects.filter(customer=customer).count() == 2
