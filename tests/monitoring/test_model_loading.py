"""The engine's rows read back without `Model.__init__` (`monitoring/models/loading.py`): the same
instances as Django's, fields not read deferred, and Django's own way whenever a receiver listens
for the signals it leaves out."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from django.db.models import Model
from django.db.models.signals import post_init, pre_init

from monitoring.models import Customer, Operation
from tests.factories import make_connection, make_workspace

pytestmark = pytest.mark.django_db


@pytest.fixture
def operation() -> Operation:
    workspace = make_workspace()
    customer = Customer.objects.create(
        workspace=workspace, email="jo@example.com", lifetime_value=Decimal("12.50")
    )
    return Operation.objects.create(
        workspace=workspace,
        destination=make_connection(workspace, "dotdigital"),
        key="contact:jo@example.com",
        kind=Operation.Kind.CONTACT,
        lane="realtime",
        record_key="jo@example.com",
        customer=customer,
        payload={"dataFields": {"LTV": "12.50"}},
        version=3,
    )


def fields(instance: Model) -> dict[str, Any]:
    return {k: v for k, v in vars(instance).items() if k != "_state"}


@contextmanager
def listening() -> Iterator[list[Model]]:
    """A `post_init` receiver, connected while the block runs: the instances it saw."""
    seen: list[Model] = []

    def receiver(sender: Any, instance: Model, **kwargs: Any) -> None:
        seen.append(instance)

    post_init.connect(receiver)
    try:
        yield seen
    finally:
        post_init.disconnect(receiver)


def test_a_row_read_back_is_the_instance_django_builds(operation: Operation, monkeypatch) -> None:
    with listening() as seen:
        built = Operation.objects.get(pk=operation.pk)
    assert seen == [built]  # while a receiver listens, Django's way: it saw the row
    inits: list[Model] = []
    init = Operation.__init__

    def counted(self: Operation, *args: Any, **kwargs: Any) -> None:
        inits.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(Operation, "__init__", counted)
    fast = Operation.objects.get(pk=operation.pk)
    assert inits == []  # built without `Model.__init__`
    assert fields(fast) == fields(built)
    assert fast._state.adding is False and fast._state.db == built._state.db == "default"
    assert fast == built and fast.payload == {"dataFields": {"LTV": "12.50"}}
    assert fast.customer.lifetime_value == Decimal("12.50")


def test_nothing_listens_for_model_signals_so_rows_load_the_fast_way() -> None:
    # Each receiver would send every model's rows through `Model.__init__` again.
    assert not pre_init.receivers and not post_init.receivers


def test_fields_not_read_are_deferred_and_read_when_first_used(operation: Operation) -> None:
    fast = Operation.objects.defer("payload").get(pk=operation.pk)
    assert fast.get_deferred_fields() == {"payload"}
    assert "payload" not in vars(fast)
    assert fast.payload == {"dataFields": {"LTV": "12.50"}}
    only = Operation.objects.only("kind").get(pk=operation.pk)
    assert set(vars(only)) == {"_state", "id", "kind"}
    assert only.version == 3


def test_a_row_read_back_saves_and_refreshes_as_any_instance(operation: Operation) -> None:
    fast = Operation.objects.select_related("customer").get(pk=operation.pk)
    assert fast.customer.email == "jo@example.com"  # read with it: no second query
    fast.version = 4
    fast.save(update_fields=["version"])
    Operation.objects.filter(pk=operation.pk).update(state=Operation.State.SENT)
    fast.refresh_from_db()
    assert (fast.version, fast.state) == (4, "sent")
    # A full save is an UPDATE of the row read, not an INSERT of a new one.
    fast.kind = Operation.Kind.CONSENT
    fast.save()
    assert Operation.objects.count() == 1
    assert Operation.objects.get().kind == "consent"
