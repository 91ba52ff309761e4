"""Source customer ids met for the first time are inserted together at the end of a staging
batch (the fast path). One that another worker mapped meanwhile must not give the person a
second identity: the batch is undone and staged again on the safe path."""

from __future__ import annotations

from typing import Any

from django.db import connection

from monitoring.models import Customer, CustomerKey, Order, SourceEvent
from monitoring.pipeline.staging import batch as staging
from tests.monitoring.engine import stage


def known_buyer(source: Any, number: str, email: str, customer_id: str) -> dict[str, Any]:
    event: dict[str, Any] = source.order(number, email=email)
    event["identity"] = {"email": email, "source_customer_id": customer_id, "quality": "email"}
    return event


def test_new_source_customer_ids_of_a_batch_map_to_their_customers(erp):
    for i in range(3):
        erp.post(known_buyer(erp, f"SO-K{i}", f"k{i}@example.com", f"K-{i}"))
    stage()
    keys = dict(CustomerKey.objects.values_list("source_customer_id", "customer__email"))
    assert keys == {f"K-{i}": f"k{i}@example.com" for i in range(3)}
    assert set(SourceEvent.objects.values_list("state", flat=True)) == {"ready"}


def test_a_source_customer_id_taken_meanwhile_keeps_one_identity(erp, monkeypatch: Any):
    other = Customer.objects.create(workspace=erp.workspace, email="other@example.com")
    real_insert = staging.StateCache._insert_keys
    raced: list[bool] = []

    def insert_after_a_rival(cache: Any) -> None:
        if not raced:  # another worker maps K-9 to its own customer first
            raced.append(True)
            CustomerKey.objects.create(
                workspace=erp.workspace,
                source_system=erp.system,
                source_customer_id="K-9",
                customer=other,
            )
        real_insert(cache)

    monkeypatch.setattr(staging.StateCache, "_insert_keys", insert_after_a_rival)
    erp.post(known_buyer(erp, "SO-K9", "kim@example.com", "K-9"))
    stage()

    assert raced == [True] or connection.vendor != "postgresql"
    key = CustomerKey.objects.get(source_customer_id="K-9")
    assert Order.objects.get(order_number="SO-K9").customer_id == key.customer_id
    assert SourceEvent.objects.get().state == "ready"
