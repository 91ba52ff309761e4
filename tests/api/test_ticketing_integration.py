"""The API driven the way a ticketing integration (Jira, Zendesk, Linear) drives it, against the
real engine and the DotDigital sandbox: list the team's open groups, assign one, comment, retry,
see the retried events delivered in the sandbox, resolve what is left; the group's history names
the key at each step."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from exceptions_inbox.models import Activity, ExceptionGroup
from monitoring.models import SkuAlias, SourceEvent
from tests.api.support import KeyClient, make_key
from tests.exceptions_inbox.engine_support import (
    CUSTOMERS,
    load_catalogue,
    money,
    order,
    orders_in_sandbox,
)
from tests.factories import make_member
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import Engine

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def hooks() -> Iterator[None]:
    """The engine's own hooks."""
    yield


def two_unknown_skus(number: str, email: str, at: datetime) -> dict[str, Any]:
    """An order of the unknown SKU and of a second one nobody has mapped yet."""
    doc = order(number, email, at=at)
    line = dict(doc["data"]["lines"][0], line_key=f"{number}-2", sku="ZZ-9", sku_raw="ZZ-9")
    doc["data"]["lines"].append(line)
    for name in ("subtotal", "grand_total"):
        doc["data"]["totals"][name] = money("40.00")
    return doc


def test_a_ticketing_integration_assigns_comments_retries_and_resolves_through_the_api(
    engine: Engine,
):
    load_catalogue(engine)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    engine.post(
        "erp",
        [
            order("NW1", CUSTOMERS[0], at=start),
            order("NW2", CUSTOMERS[1], at=start + timedelta(minutes=1)),
            two_unknown_skus("NW3", CUSTOMERS[2], start + timedelta(minutes=2)),
        ],
    )
    engine.pump()
    ops_person = make_member(engine.workspace, "ops-person", teams=["ops"])
    row, key = make_key(engine.workspace, team="ops", name="Zendesk")
    api = KeyClient(key)
    base = f"/api/v1/w/{engine.workspace.slug}/exceptions"

    # The team's open groups: the flow's unknown-SKU group is there, with its three blocked orders.
    listed = api.get(base, {"tab": "team", "kind": "sku_mapping_gap"}).json()["items"]
    [group] = listed
    assert (group["state"], group["open_count"], group["team"]) == ("open", 3, "ops")
    url = f"{base}/{group['id']}"

    answer = api.post_json(f"{url}/assign", {"assignee": "ops-person"})
    assert answer.status_code == 200, answer.content
    assert answer.json()["group"]["assignee"] == "ops-person"
    answer = api.post_json(f"{url}/comment", {"note": "Ticket SUP-481 opened."})
    assert answer.status_code == 200

    # Someone maps the SKU on the configuration pages; the ticket's owner retries.
    SkuAlias.objects.create(workspace=engine.workspace, alias_key="ab-12/red", sku="AB-12-RED")
    answer = api.post_json(f"{url}/retry", {"note": "Alias added, see SUP-481."})
    assert answer.status_code == 200, answer.content
    engine.pump()

    delivered = {doc["OrderNumber"] for doc in orders_in_sandbox(engine).values()}
    assert delivered == {"NW1", "NW2"}
    orders = SourceEvent.objects.filter(event_type="order.created")
    assert orders.get(order_ref="NW3").state == SourceEvent.State.FAILED

    # NW3 still waits (its second SKU): the group is open with it, and the ticket closes it.
    state = api.get(url).json()
    assert (state["state"], state["open_count"]) == ("open", 1), state
    answer = api.post_json(f"{url}/resolve", {"note": "SUP-481 closed: NW3 re-keyed by hand."})
    assert answer.status_code == 200, answer.content
    assert answer.json()["group"]["state"] == "resolved"
    # Asking again changes nothing, and says why.
    again = api.post_json(f"{url}/resolve", {})
    assert again.status_code == 409
    assert again.json() == {
        "error": "not_applied",
        "detail": "Cannot resolve: it is resolved.",
        "errors": None,
    }

    history = api.get(url).json()["history"]
    by_key = [(h["kind"], h["note"]) for h in history if h["actor"] == "Zendesk"]
    assert by_key == [
        (Activity.Kind.ASSIGNED, ""),
        (Activity.Kind.COMMENTED, "Ticket SUP-481 opened."),
        (Activity.Kind.RETRIED, "Alias added, see SUP-481."),
        (Activity.Kind.RESOLVED, "SUP-481 closed: NW3 re-keyed by hand."),
    ]
    assert ExceptionGroup.objects.get(pk=group["id"]).assignee == ops_person
    row.refresh_from_db()
    assert row.last_used_at is not None
