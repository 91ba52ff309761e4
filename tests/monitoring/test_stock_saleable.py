"""Saleable stock is never guessed: stock snapshots and deltas posted to a WMS flow's public
webhook, DotDigital's Stock collection read back through its API.

A snapshot's own saleable wins; without it saleable is derived from on-hand less allocated and
quarantined (flagged derived); from on-hand alone it is unknown, the Stock record is left as
DotDigital has it (Saleable and InStock, so a back-in-stock program sees no change) and the flow
gets one source warning saying what to configure.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest

from exceptions_inbox.models import ExceptionGroup, Occurrence
from monitoring.models import SourceEvent, StockLevel
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import WMS, Engine, event, iso

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 5, 27, 9, 0, tzinfo=UTC)
_ids = count(1)


def stock(
    sku: str, at: datetime, *, location: str = "WH1", mode: str = "snapshot", **quantities: int
) -> dict[str, Any]:
    return event(
        WMS,
        "stock.changed",
        f"stock:{sku}:{location}",
        f"stock-{sku}-{location}-{next(_ids)}",
        {
            "sku": sku,
            "location": {"key": location, "name": location},
            "quantities": quantities,
            "as_of": iso(at),
            "mode": mode,
        },
        at=at,
    )


def send(engine: Engine, *events: dict[str, Any]) -> list[SourceEvent]:
    """Post the events (one request each, in order) and run the engine until it settles."""
    for one in events:
        answer = engine.post("wms", [one])
        assert [r["status"] for r in answer["results"]] == ["accepted"], answer
        engine.pump()
    return [SourceEvent.objects.get(source_event_id=one["source_event_id"]) for one in events]


def stock_records(engine: Engine) -> dict[str, dict[str, Any]]:
    """The account's Stock collection as DotDigital's API returns it (none before a write)."""
    sandbox = engine.sandbox
    response = sandbox.api.get(f"{sandbox.url}/insightData/v3/account/Stock")
    if response.status_code == 404:
        return {}
    assert response.status_code == 200, response.text
    return {item["key"]: item["json"] for item in response.json()["_items"]}


def warnings() -> list[Occurrence]:
    return list(Occurrence.objects.filter(group__kind="source_warning"))


def test_an_on_hand_only_snapshot_leaves_saleable_and_in_stock_untouched_and_warns_the_flow_once(
    engine: Engine,
):
    send(engine, stock("TEE", T0, on_hand=6, saleable=4))
    known = stock_records(engine)["TEE"]
    assert (known["Saleable"], known["InStock"], known["SaleableDerived"]) == (4, True, False)

    (on_hand_only,) = send(engine, stock("TEE", T0 + timedelta(hours=1), on_hand=0))

    # DotDigital keeps its last record whole: not Saleable 0 / InStock false.
    assert stock_records(engine)["TEE"] == known
    level = StockLevel.objects.get(sku="TEE")
    assert (level.on_hand, level.saleable) == (0, None)
    assert on_hand_only.state == SourceEvent.State.SKIPPED
    assert "saleable stock is unknown" in on_hand_only.reason
    assert on_hand_only.lane == SourceEvent.Lane.BULK  # 4 → unknown is no way out of stock
    (warning,) = warnings()
    assert warning.group.flow_key == engine.wms_flow.key
    assert warning.group.state == ExceptionGroup.State.OPEN
    assert "no saleable figure" in warning.message
    assert "quantities.saleable" in warning.message and "quarantined" in warning.message
    assert warning.detail["sku"] == "TEE"

    # A second such snapshot (another SKU, another request) does not open a second warning.
    send(engine, stock("MUG", T0 + timedelta(hours=2), location="WH2", on_hand=3))
    assert "MUG" not in stock_records(engine)
    (again,) = warnings()
    assert again.pk == warning.pk and again.times_seen == 2
    assert ExceptionGroup.objects.filter(kind="source_warning").count() == 1
    assert ExceptionGroup.objects.get(kind="source_warning").open_count == 1


def test_on_hand_with_quarantined_or_allocated_derives_saleable_and_flags_it(engine: Engine):
    send(
        engine,
        stock("TEE", T0, on_hand=5, quarantined=5),
        stock("MUG", T0, on_hand=9, allocated=2, quarantined=3),
        stock("CAP", T0, on_hand=2, allocated=4),  # oversold: none to sell, not fewer than none
    )

    records = stock_records(engine)
    assert {
        sku: (r["Saleable"], r["InStock"], r["SaleableDerived"]) for sku, r in records.items()
    } == {
        "TEE": (0, False, True),
        "MUG": (4, True, True),
        "CAP": (0, False, True),
    }
    assert StockLevel.objects.get(sku="TEE").derived == ["saleable"]
    assert warnings() == []


def test_an_explicit_saleable_wins_over_the_figures_it_could_be_derived_from(engine: Engine):
    send(engine, stock("TEE", T0, on_hand=10, allocated=2, quarantined=3, saleable=7))

    record = stock_records(engine)["TEE"]
    assert (record["Saleable"], record["InStock"], record["SaleableDerived"]) == (7, True, False)
    assert StockLevel.objects.get(sku="TEE").derived == []
    assert warnings() == []


def test_a_source_flagged_derived_saleable_is_sent_and_flagged(engine: Engine):
    flagged = stock("TEE", T0, on_hand=6, allocated=1, saleable=5)
    flagged["data"]["derived"] = ["saleable"]
    send(engine, flagged)

    record = stock_records(engine)["TEE"]
    assert (record["Saleable"], record["SaleableDerived"]) == (5, True)


def test_stock_deltas_against_an_unknown_saleable_do_not_invent_one(engine: Engine):
    # No snapshot yet: a delta moves nothing known.
    (early,) = send(engine, stock("TEE", T0, mode="delta", on_hand=3, saleable=3))
    assert "TEE" not in stock_records(engine)
    assert StockLevel.objects.get(sku="TEE").saleable is None
    assert early.state == SourceEvent.State.SKIPPED

    # Against an on-hand-only snapshot: on-hand moves, saleable stays unknown.
    send(engine, stock("TEE", T0 + timedelta(hours=1), on_hand=8))
    send(engine, stock("TEE", T0 + timedelta(hours=2), mode="delta", on_hand=-1, saleable=-1))
    level = StockLevel.objects.get(sku="TEE")
    assert (level.on_hand, level.saleable) == (7, None)
    assert "TEE" not in stock_records(engine)

    # Once the snapshot is known, later deltas move it; a derived saleable follows on-hand.
    send(engine, stock("TEE", T0 + timedelta(hours=3), on_hand=8, saleable=6))
    send(engine, stock("TEE", T0 + timedelta(hours=4), mode="delta", on_hand=-1, saleable=-1))
    assert stock_records(engine)["TEE"]["Saleable"] == 5
    send(engine, stock("MUG", T0, on_hand=5, allocated=1))
    send(engine, stock("MUG", T0 + timedelta(hours=1), mode="delta", on_hand=-2))
    assert (
        stock_records(engine)["MUG"]["Saleable"],
        StockLevel.objects.get(sku="MUG").saleable,
    ) == (
        2,
        2,
    )


def test_a_location_of_unknown_saleable_leaves_the_skus_total_as_dotdigital_has_it(
    engine: Engine,
):
    send(engine, stock("TEE", T0, location="WH1", saleable=3, on_hand=3))
    assert stock_records(engine)["TEE"]["Saleable"] == 3

    # WH2's saleable is unknown: the total is too (3 would claim WH2 holds none).
    send(engine, stock("TEE", T0, location="WH2", on_hand=4))
    send(engine, stock("TEE", T0 + timedelta(hours=1), location="WH1", saleable=1, on_hand=1))
    assert stock_records(engine)["TEE"]["Saleable"] == 3

    send(engine, stock("TEE", T0 + timedelta(hours=1), location="WH2", saleable=2, on_hand=4))
    record = stock_records(engine)["TEE"]
    assert (record["Saleable"], record["InStock"]) == (3, True)


def test_in_stock_never_turns_from_an_unknown_saleable(engine: Engine):
    """A back-in-stock program reads InStock, and stock going in or out of stock goes on the
    realtime lane: an unknown spell is neither a way out of stock nor back in, measured from
    the last known figure."""
    hours = iter(range(100))

    def snapshot(**quantities: int) -> SourceEvent:
        (staged,) = send(engine, stock("TEE", T0 + timedelta(hours=next(hours)), **quantities))
        return staged

    assert snapshot(on_hand=5, saleable=5).lane == SourceEvent.Lane.REALTIME
    assert stock_records(engine)["TEE"]["InStock"] is True

    assert snapshot(on_hand=5).lane == SourceEvent.Lane.BULK
    assert stock_records(engine)["TEE"]["InStock"] is True  # not written as sold out
    assert snapshot(on_hand=5, saleable=5).lane == SourceEvent.Lane.BULK  # never left stock

    assert snapshot(on_hand=0, saleable=0).lane == SourceEvent.Lane.REALTIME
    assert snapshot(on_hand=12).lane == SourceEvent.Lane.BULK
    assert stock_records(engine)["TEE"]["InStock"] is False
    assert snapshot(on_hand=12, saleable=0).lane == SourceEvent.Lane.BULK  # never came back

    assert snapshot(on_hand=12, saleable=9).lane == SourceEvent.Lane.REALTIME
    record = stock_records(engine)["TEE"]
    assert (record["Saleable"], record["InStock"]) == (9, True)
