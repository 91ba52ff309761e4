"""The realtime lane runs from the webhook to confirmation: a dispatch or a new order posted behind a
bulk backlog (customer updates, stock, status changes) is staged, planned, sent and confirmed
before any of the backlog, the bulk lane keeps moving beside a steady realtime stream, and an
entity's events keep their order across the lanes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from django.db import connection, transaction
from django.utils import timezone

from monitoring.models import Order, SourceEvent, StockLevel
from monitoring.pipeline import lanes, wake
from monitoring.pipeline.lane_rules import intake_lane
from monitoring.pipeline.staging import run as staging
from tests.monitoring.delivery_support import *  # noqa: F403
from tests.monitoring.delivery_support import ERP, WMS, Engine, event, iso
from tests.monitoring.test_delivery import dispatched, order_created

pytestmark = pytest.mark.django_db(transaction=True)

RECEIVED = SourceEvent.State.RECEIVED


def customer_update(i: int, *, at: datetime) -> dict[str, Any]:
    return event(
        ERP,
        "customer.upserted",
        f"customer:C{i}",
        f"customer:C{i}:{at.timestamp()}",
        {"customer_key": f"C{i}", "source_updated_at": iso(at), "first_name": f"Name{i}"},
        at=at,
        email=f"bulk{i}@example.com",
        customer_id=f"C{i}",
    )


def stock_snapshot(sku: str, saleable: int, *, at: datetime, n: int) -> dict[str, Any]:
    return event(
        WMS,
        "stock.changed",
        f"stock:{sku}:WH1",
        f"stock:{sku}:{n}",
        {
            "sku": sku,
            "location": {"key": "WH1"},
            "mode": "snapshot",
            "as_of": iso(at),
            "quantities": {"on_hand": saleable, "saleable": saleable},
        },
        at=at,
    )


def post_backlog(engine: Engine, size: int, at: datetime) -> None:
    for start in range(0, size, 100):
        engine.post("erp", [customer_update(i, at=at) for i in range(start, start + 100)])


def post_new_orders(engine: Engine, tag: str, count: int, at: datetime, suffix: str = "") -> None:
    """`count` orders of customers `<tag><n>@example.com` (new ones, unless posted before with
    another order `suffix`), staged on the realtime lane."""
    engine.post(
        "erp",
        [
            order_created(
                f"SO-{tag}{n}{suffix}",
                f"{tag.lower()}{n}@example.com",
                "9.00",
                at=at,
                customer=f"{tag}{n}",
            )
            for n in range(count)
        ],
    )
    lanes.stage_flow(engine.erp_flow.pk, "realtime")


def test_a_realtime_event_posted_behind_a_bulk_backlog_is_staged_planned_sent_and_confirmed_first(
    engine: Engine,
):
    now = datetime.now(UTC)
    post_backlog(engine, 600, now - timedelta(minutes=5))
    engine.post("erp", [order_created("SO-RT1", "first@example.com", "12.00", at=now)])
    order = SourceEvent.objects.get(event_type="order.created")
    assert order.lane == "realtime", "its lane is known from the webhook on"

    staged = lanes.stage_flow(engine.erp_flow.pk, "realtime")
    lanes.run_lane(engine.destination.pk, "realtime", time_budget=10.0, idle_sleep=0.02)

    order.refresh_from_db()
    assert staged == 1
    assert order.state == SourceEvent.State.DELIVERED
    assert order.staged_at and order.sent_at and order.delivered_at
    assert SourceEvent.objects.filter(lane="bulk", state=RECEIVED).count() == 600, (
        "the backlog is still waiting to be staged"
    )
    assert engine.records("first@example.com")["SO-RT1"]["GrandTotal"] == 12.0

    engine.pump()
    assert not SourceEvent.objects.filter(state=RECEIVED).exists()
    assert engine.contact("bulk599@example.com") is not None


def test_each_lane_is_woken_on_its_own_queue_from_the_webhook(
    engine: Engine, monkeypatch: Any
) -> None:
    sent: list[tuple[str, tuple[Any, ...], str]] = []
    monkeypatch.setattr(
        wake, "_apply", lambda name, args, **options: sent.append((name, args, options["queue"]))
    )
    now = datetime.now(UTC)
    StockLevel.objects.create(
        workspace=engine.workspace, sku="HAT-1/RED", location_key="WH1", saleable=4
    )
    engine.post("erp", [customer_update(1, at=now)])
    engine.post("erp", [order_created("SO-Q1", "q@example.com", "5.00", at=now)])
    engine.post("wms", [stock_snapshot("HAT-1/RED", 0, at=now, n=1)])
    flow, wms_flow = engine.erp_flow.pk, engine.wms_flow.pk
    assert (wake.STAGE_EVENTS, (flow, "bulk"), "bulk") in sent
    assert (wake.STAGE_EVENTS, (flow, "realtime"), "realtime") in sent
    assert (wake.STAGE_EVENTS, (wms_flow, "realtime"), "realtime") in sent, (
        "a snapshot taking a level out of stock is realtime from the webhook on"
    )


def lanes_by_id() -> dict[str, str]:
    return dict(SourceEvent.objects.values_list("source_event_id", "lane"))


def post_snapshots(
    engine: Engine, now: datetime, *snapshots: tuple[str, int, int, int]
) -> dict[str, str]:
    """POST stock snapshots (SKU, saleable, minutes ago, n) in one request; every event's lane."""
    engine.post(
        "wms",
        [
            stock_snapshot(sku, saleable, at=now - timedelta(minutes=ago), n=n)
            for sku, saleable, ago, n in snapshots
        ],
    )
    return lanes_by_id()


def test_a_zero_stock_snapshot_of_a_level_already_out_of_stock_comes_on_the_bulk_lane(
    engine: Engine,
):
    """A stock refresh names every SKU; its zeros for levels already at zero change nothing a
    customer sees and stay out of the dispatches' way. A zero that takes a level out of stock
    is realtime from the webhook on."""
    now = datetime.now(UTC)
    engine.post("wms", [stock_snapshot("HAT-1/RED", 5, at=now - timedelta(minutes=4), n=1)])
    lanes.stage_flow(engine.wms_flow.pk, "bulk")
    engine.post("wms", [stock_snapshot("HAT-1/RED", 0, at=now - timedelta(minutes=3), n=2)])
    assert lanes_by_id()["demo-wms:stock:HAT-1/RED:2"] == "realtime", "5 in stock, then none"
    assert lanes.stage_flow(engine.wms_flow.pk, "realtime") == 1

    lanes_now = post_snapshots(engine, now, ("HAT-1/RED", 0, 2, 3), ("NEW-SKU", 0, 2, 4))
    assert lanes_now["demo-wms:stock:HAT-1/RED:3"] == "bulk", "out of stock already"
    assert lanes_now["demo-wms:stock:NEW-SKU:4"] == "bulk", "never known: none in stock"
    assert lanes.stage_flow(engine.wms_flow.pk, "realtime") == 0
    assert lanes.stage_flow(engine.wms_flow.pk, "bulk") == 2
    assert StockLevel.objects.get(sku="HAT-1/RED").saleable == 0
    assert lanes_by_id()["demo-wms:stock:HAT-1/RED:3"] == "bulk", "staging finds no crossing"


def test_a_zero_snapshot_behind_a_restock_waiting_to_be_staged_stays_on_the_realtime_lane(
    engine: Engine,
):
    """Out of stock as stored, but a restock waits to be staged (posted before, or earlier in
    the same request): the zero takes the level out of stock again, in realtime."""
    now = datetime.now(UTC)
    engine.post("wms", [stock_snapshot("HAT-1/RED", 0, at=now - timedelta(minutes=5), n=1)])
    engine.post("wms", [stock_snapshot("CAP-2", 0, at=now - timedelta(minutes=5), n=2)])
    for lane in ("realtime", "bulk"):
        lanes.stage_flow(engine.wms_flow.pk, lane)
    assert set(StockLevel.objects.values_list("saleable", flat=True)) == {0}

    engine.post("wms", [stock_delta("HAT-1/RED", 6, at=now - timedelta(minutes=4), n=3)])
    engine.post("wms", [stock_snapshot("HAT-1/RED", 0, at=now - timedelta(minutes=3), n=4)])
    lanes_now = post_snapshots(engine, now, ("CAP-2", 2, 3, 5), ("CAP-2", 0, 2, 6))
    assert lanes_now["demo-wms:stock:HAT-1/RED:4"] == "realtime", "a delta of 6 waits before it"
    assert lanes_now["demo-wms:stock:CAP-2:6"] == "realtime", "a restock earlier in its request"


def test_the_intake_lane_follows_the_event_type_and_never_puts_a_backfill_on_the_realtime_lane():
    assert intake_lane("shipment.dispatched", {}, backfill=False) == "realtime"
    assert intake_lane("shipment.dispatched", {}, backfill=True) == "bulk"
    assert intake_lane("order.status_changed", {}, backfill=False) == "bulk"
    zero = {"mode": "snapshot", "quantities": {"on_hand": 3, "saleable": 0}}
    assert intake_lane("stock.changed", zero, backfill=False) == "realtime"
    some = {"mode": "snapshot", "quantities": {"on_hand": 3, "saleable": 2}}
    assert intake_lane("stock.changed", some, backfill=False) == "bulk"
    assert intake_lane("stock.changed", {"mode": "delta"}, backfill=False) == "bulk"


def test_the_bulk_lane_keeps_moving_beside_a_steady_realtime_stream(engine: Engine):
    """One worker staging both lanes takes the realtime events first and fills the batch with
    bulk ones; the bulk lane's own stager never looks at realtime events at all."""
    now = datetime.now(UTC)
    post_backlog(engine, 500, now - timedelta(minutes=5))
    bulk_left = []
    for round_ in range(4):
        engine.post(
            "erp",
            [
                order_created(f"SO-S{round_}-{i}", f"s{round_}{i}@example.com", "3.00", at=now)
                for i in range(60)
            ],
        )
        staging.run_staging(flow_id=engine.erp_flow.pk, batch_size=100, time_budget=0.0)
        assert not SourceEvent.objects.filter(lane="realtime", state=RECEIVED).exists()
        bulk_left.append(SourceEvent.objects.filter(lane="bulk", state=RECEIVED).count())
    assert bulk_left == [460, 420, 380, 340]

    engine.post(
        "erp", [order_created("SO-S9", "s9@example.com", "3.00", at=now)]
    )  # a realtime event waiting
    staging.run_staging(flow_id=engine.erp_flow.pk, lane="bulk", batch_size=100, time_budget=0.0)
    assert SourceEvent.objects.filter(lane="bulk", state=RECEIVED).count() == 240


def stock_delta(sku: str, change: int, *, at: datetime, n: int) -> dict[str, Any]:
    delta = stock_snapshot(sku, change, at=at, n=n)
    delta["data"]["mode"] = "delta"
    return delta


def test_a_realtime_event_brings_along_the_waiting_bulk_events_of_its_entity(engine: Engine):
    """An order's update waiting in the bulk lane is staged with its realtime event, in source
    order, not after it."""
    now = datetime.now(UTC)
    update = order_created("SO-B1", "b@example.com", "9.00", at=now - timedelta(minutes=2))
    update["event_type"] = "order.updated"  # on the bulk lane
    update["event_id"] += "-update"
    update["source_event_id"] += "-update"
    update["data"]["revision"] = iso(now - timedelta(minutes=2))
    engine.post("erp", [update])
    created = order_created("SO-B1", "b@example.com", "9.00", at=now - timedelta(minutes=1))
    created["data"]["revision"] = iso(now - timedelta(minutes=1))
    engine.post("erp", [created])
    engine.post("erp", [order_created("SO-B2", "c@example.com", "4.00", at=now)])  # not its entity
    staging.run_staging(flow_id=engine.erp_flow.pk, lane="realtime", batch_size=1, time_budget=0.0)
    states = dict(SourceEvent.objects.values_list("source_event_id", "state"))
    assert states["demo-erp:order:SO-B1:created-update"] == SourceEvent.State.READY, "brought along"
    assert states["demo-erp:order:SO-B1:created"] == SourceEvent.State.READY
    assert states["demo-erp:order:SO-B2:created"] == RECEIVED


def test_a_stock_snapshot_with_nothing_saleable_leaves_the_levels_bulk_events_in_their_lane(
    engine: Engine,
):
    """A stock refresh's deltas stay on the bulk lane: a level comes out the same whichever order
    its events are staged in, so the realtime lane stages the snapshot alone, and the bulk lane
    later drops what it superseded and applies what came after it."""
    now = datetime.now(UTC)
    engine.post("wms", [stock_snapshot("HAT-1/RED", 5, at=now - timedelta(minutes=3), n=1)])
    engine.post("wms", [stock_snapshot("HAT-1/RED", 0, at=now - timedelta(minutes=2), n=2)])
    engine.post("wms", [stock_delta("HAT-1/RED", 3, at=now - timedelta(minutes=1), n=3)])
    assert lanes.stage_flow(engine.wms_flow.pk, "realtime") == 1, "the snapshot alone"
    assert StockLevel.objects.get(sku="HAT-1/RED").saleable == 0
    assert SourceEvent.objects.filter(lane="bulk", state=RECEIVED).count() == 2

    assert lanes.stage_flow(engine.wms_flow.pk, "bulk") == 2
    assert StockLevel.objects.get(sku="HAT-1/RED").saleable == 3, "0, then 3 more"
    states = dict(SourceEvent.objects.values_list("source_event_id", "state"))
    assert states["demo-wms:stock:HAT-1/RED:1"] == SourceEvent.State.SKIPPED  # superseded
    assert states["demo-wms:stock:HAT-1/RED:3"] == SourceEvent.State.READY


def test_a_dispatch_staged_before_its_bulk_order_update_waits_for_the_order(engine: Engine):
    now = datetime.now(UTC)
    update = order_created("SO-D1", "d@example.com", "9.00", at=now - timedelta(minutes=1))
    update["event_type"] = "order.updated"  # on the bulk lane
    update["data"]["revision"] = iso(now - timedelta(minutes=1))
    engine.post("erp", [update])
    engine.post("wms", [dispatched("SO-D1", at=now)])
    lanes.stage_flow(engine.wms_flow.pk, "realtime")
    dispatch = SourceEvent.objects.get(event_type="shipment.dispatched")
    assert dispatch.state == SourceEvent.State.HELD
    assert dispatch.hold == SourceEvent.Hold.ORPHAN
    engine.pump()
    dispatch.refresh_from_db()
    assert dispatch.state == SourceEvent.State.DELIVERED


@pytest.fixture
def another_session() -> Iterator[psycopg.Connection[Any]]:
    """A second connection to the test database: another worker's transaction."""
    settings = connection.settings_dict
    other = psycopg.connect(
        dbname=settings["NAME"],
        host=settings["HOST"] or None,
        port=settings["PORT"] or None,
        user=settings["USER"] or None,
    )
    try:
        yield other
    finally:
        other.close()  # its locks go with it, whatever the test found


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite has one writer at a time")
def test_a_realtime_batch_sets_aside_what_waits_for_rows_a_bulk_batch_holds_and_stages_the_rest(
    engine: Engine, another_session: psycopg.Connection[Any]
):
    now = datetime.now(UTC)
    engine.post(
        "erp",
        [
            order_created("SO-BUSY", "busy@example.com", "10.00", at=now, customer="C1"),
            order_created("SO-FREE", "free@example.com", "10.00", at=now, customer="C2"),
        ],
    )
    lanes.stage_flow(engine.erp_flow.pk, "realtime")
    busy = Order.objects.get(order_number="SO-BUSY")
    bulk_batch = another_session  # a bulk batch staging the order's status changes
    bulk_batch.execute("SELECT 1 FROM monitoring_order WHERE id = %s FOR UPDATE", [busy.pk])

    engine.post("wms", [dispatched("SO-BUSY", at=now), dispatched("SO-FREE", at=now)])
    with connection.cursor() as cursor:  # a batch that waits gives up in the end, not never
        cursor.execute("SET lock_timeout = '3s'")
    staging.run_staging(flow_id=engine.wms_flow.pk, lane="realtime")
    with connection.cursor() as cursor:
        cursor.execute("RESET lock_timeout")

    waiting = SourceEvent.objects.get(event_type="shipment.dispatched", order_ref="SO-BUSY")
    staged = SourceEvent.objects.get(event_type="shipment.dispatched", order_ref="SO-FREE")
    assert staged.state == SourceEvent.State.READY, "the batch went past the held row"
    assert waiting.state == RECEIVED and waiting.reason == ""
    assert waiting.attempts == 0, "set aside untried, not a failed attempt"
    assert not waiting.lease_owner
    assert waiting.next_attempt_at <= timezone.now() + timedelta(seconds=1), "due again at once"

    bulk_batch.rollback()  # the bulk batch ends: the row is free
    time.sleep(staging.YIELD_RETRY_SECONDS)
    lanes.stage_flow(engine.wms_flow.pk, "realtime")
    waiting.refresh_from_db()
    assert waiting.state == SourceEvent.State.READY
    assert waiting.order_id == busy.pk


def test_the_realtime_lane_sends_an_import_of_a_kind_a_second_at_most_with_all_that_came_meanwhile(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    """With the single-call tier spent, a burst of new orders goes in one contact import; orders
    that come within the spacing wait and go together in the next, rather than in one import per
    claim until DotDigital's import calls run out. The next import does not wait for the last to
    finish."""
    from monitoring.models import DeliveryBatch, Operation
    from monitoring.pipeline import deliver

    monkeypatch.setattr(deliver, "single_capacity", lambda client: 0)  # the single tier is spent
    monkeypatch.setattr(lanes, "send_realtime_now", lambda destination_id: 0)
    monkeypatch.setattr(deliver, "REALTIME_IMPORT_SPACING", 60.0)  # no race with the clock
    now = datetime.now(UTC)

    def orders(first: int, count: int) -> None:
        engine.post(
            "erp",
            [
                order_created(f"SO-B{n}", f"b{n}@example.com", "9.00", at=now, customer=f"B{n}")
                for n in range(first, first + count)
            ],
        )
        lanes.stage_flow(engine.erp_flow.pk, "realtime")

    contact_imports = DeliveryBatch.objects.filter(lane="realtime", kind="contacts")
    orders(0, 10)
    assert deliver.send_due(engine.destination, "realtime") > 0
    assert contact_imports.count() == 1
    for start in (10, 20):  # two more claims' worth within the spacing
        orders(start, 10)
        deliver.send_due(engine.destination, "realtime")
    assert contact_imports.count() == 1, "the new contacts wait for the next import"

    contact_imports.update(submitted_at=timezone.now() - timedelta(seconds=61))
    assert deliver.send_due(engine.destination, "realtime") > 0
    first, second = contact_imports.order_by("pk")
    assert first.state == DeliveryBatch.State.SUBMITTED, "the first is still in flight"
    waited = Operation.objects.filter(
        kind="contact", record_key__in=[f"b{n}@example.com" for n in range(10, 30)]
    )
    assert set(waited.values_list("batch", flat=True)) == {second.pk}

    monkeypatch.undo()
    engine.pump()
    assert set(SourceEvent.objects.values_list("state", flat=True)) == {"delivered"}


def test_contacts_waiting_for_the_next_import_still_go_as_single_calls_while_the_tier_has_room(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    from monitoring.models import DeliveryBatch, Operation
    from monitoring.pipeline import deliver

    monkeypatch.setattr(lanes, "send_realtime_now", lambda destination_id: 0)
    monkeypatch.setattr(deliver, "REALTIME_IMPORT_SPACING", 60.0)  # no race with the clock
    now = datetime.now(UTC)
    post_new_orders(engine, "S", 30, now)
    assert deliver.send_due(engine.destination, "realtime") > 0
    # More than a claim's single calls: the first SINGLE_MAX singly, new contacts first; the
    # rest in one import.
    contacts = Operation.objects.filter(lane="realtime", kind="contact")
    assert contacts.filter(via="single").count() == deliver.SINGLE_MAX
    assert DeliveryBatch.objects.filter(lane="realtime", kind="contacts").count() == 1

    # What is due besides (the singly written contacts' list additions and orders' records)
    # goes singly or in the first import of its kind, until nothing is due.
    while deliver.send_due(engine.destination, "realtime"):
        pass

    engine.post(
        "erp",
        [order_created("SO-S99", "s99@example.com", "9.00", at=now, customer="S99")],
    )
    lanes.stage_flow(engine.erp_flow.pk, "realtime")
    assert deliver.send_due(engine.destination, "realtime") > 0
    late = Operation.objects.get(lane="realtime", kind="contact", record_key="s99@example.com")
    assert (late.state, late.via) == ("delivered", "single"), "not held for the next import"
    assert DeliveryBatch.objects.filter(lane="realtime", kind="contacts").count() == 1

    # More than the single tier's room waiting: none go singly (a few of many would spend the
    # room and save no import); they wait for the next import, together.
    post_new_orders(engine, "M", deliver.SINGLE_MAX + 1, now)
    assert deliver.send_due(engine.destination, "realtime") == 0
    waiting = Operation.objects.filter(kind="contact", record_key__startswith="m")
    assert set(waiting.values_list("state", "via")) == {("pending", "")}


def test_a_few_records_of_a_collection_take_the_single_calls_an_import_of_their_own_would_cost(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    """DotDigital's import tier paces the realtime lane's rounds: two stock records sent singly
    save an import call, where two of thirty new contacts sent singly save none."""
    from monitoring.models import DeliveryBatch, Operation
    from monitoring.pipeline import deliver

    made: list[Any] = []
    each_call = deliver.each_call

    def counted(client: Any, call: Any, items: list[Any], *args: Any, **kwargs: Any) -> Any:
        made.extend(items)
        return each_call(client, call, items, *args, **kwargs)

    now = datetime.now(UTC)
    # The Stock collection exists in DotDigital (an import creates it: no single call can).
    engine.post("wms", [stock_snapshot("BAG-3", 4, at=now - timedelta(minutes=2), n=9)])
    engine.pump()
    monkeypatch.setattr(deliver, "each_call", counted)
    # The single tier has room for three calls at this moment.
    monkeypatch.setattr(deliver, "single_capacity", lambda client: max(0, 3 - len(made)))
    monkeypatch.setattr(lanes, "send_realtime_now", lambda destination_id: 0)
    engine.post(
        "erp",
        [
            order_created(f"SO-F{n}", f"f{n}@example.com", "9.00", at=now, customer=f"F{n}")
            for n in range(30)
        ],
    )
    for n, sku in enumerate(("HAT-1", "CAP-2")):  # in stock a minute ago (staged)
        engine.post("wms", [stock_snapshot(sku, 4, at=now - timedelta(minutes=1), n=2 * n)])
    lanes.stage_flow(engine.wms_flow.pk, "bulk")
    for n, sku in enumerate(("HAT-1", "CAP-2")):  # sold out now
        engine.post("wms", [stock_snapshot(sku, 0, at=now, n=2 * n + 1)])
    lanes.stage_flow(engine.erp_flow.pk, "realtime")
    lanes.stage_flow(engine.wms_flow.pk, "realtime")

    assert deliver.send_due(engine.destination, "realtime") > 0
    stock = Operation.objects.filter(collection="Stock", record_key__in=("HAT-1", "CAP-2"))
    assert stock.count() == 2
    assert set(stock.values_list("via", "state")) == {("single", "delivered")}
    assert DeliveryBatch.objects.filter(collection="Stock").count() == 1, "BAG-3's, before"
    contacts = Operation.objects.filter(lane="realtime", kind="contact")
    assert contacts.filter(via="single").count() == 1, "the room left after the stock records"
    assert DeliveryBatch.objects.filter(lane="realtime", kind="contacts").count() == 1

    engine.pump()
    assert set(SourceEvent.objects.values_list("state", flat=True)) == {"delivered"}


def test_of_more_writes_than_the_single_tiers_room_only_new_contacts_go_singly(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    """Known contacts' writes and order records beyond the room ride their imports whole: a few
    of them sent singly would save no import and deliver no event sooner."""
    from monitoring.models import Customer, DeliveryBatch, Operation
    from monitoring.pipeline import deliver

    monkeypatch.setattr(lanes, "send_realtime_now", lambda destination_id: 0)
    now = datetime.now(UTC)
    count = deliver.SINGLE_MAX + 5

    post_new_orders(engine, "K", count, now - timedelta(minutes=5), suffix="a")
    engine.pump()
    assert not Customer.objects.filter(dotdigital_contact_id="").exists(), "DotDigital knows them"
    batches = DeliveryBatch.objects.count()

    post_new_orders(engine, "K", count, now, suffix="b")
    claimed = timezone.now()
    assert deliver.send_due(engine.destination, "realtime") > 0
    this_claim = Operation.objects.filter(lane="realtime", sent_at__gte=claimed)
    assert this_claim.filter(kind="contact").count() == count
    assert this_claim.filter(kind="insight").count() == count
    assert not this_claim.filter(via="single").exists()
    assert DeliveryBatch.objects.count() - batches == 2, "one contact import, one Orders import"
    engine.pump()
    assert set(SourceEvent.objects.values_list("state", flat=True)) == {"delivered"}


def test_the_realtime_lanes_imports_are_seen_finished_while_its_runner_is_busy_sending(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    """A confirmer thread polls beside the runner's loop (PostgreSQL): an import is seen finished
    when DotDigital has it, not once the loop is done with its claim."""
    import time

    from django.db import connection

    from monitoring.models import DeliveryBatch
    from monitoring.pipeline import deliver

    if connection.vendor != "postgresql":
        pytest.skip("the confirmer thread needs a connection of its own: PostgreSQL")
    monkeypatch.setattr(deliver, "single_capacity", lambda client: 0)  # writes go in imports
    monkeypatch.setattr(lanes, "send_realtime_now", lambda destination_id: 0)
    finished_while_busy: list[int] = []
    send_due = lanes.send_due

    def busy_sending(destination: Any, lane: str, client: Any = None) -> int:
        sent = send_due(destination, lane, client)
        if sent and not finished_while_busy:
            time.sleep(1.0)  # the rest of a big claim
            finished = DeliveryBatch.objects.filter(state=DeliveryBatch.State.FINISHED)
            finished_while_busy.append(finished.count())
        return sent

    monkeypatch.setattr(lanes, "send_due", busy_sending)
    now = datetime.now(UTC)
    post_new_orders(engine, "Q", 5, now)
    counts = lanes.run_lane(engine.destination.pk, "realtime", time_budget=10.0, idle_sleep=0.02)

    assert finished_while_busy == [1], "the first import finished while the loop was busy"
    assert counts["confirmed"] >= 2
    assert set(SourceEvent.objects.values_list("state", flat=True)) == {"delivered"}


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite has one writer at a time")
def test_an_entity_set_aside_never_holds_up_its_lane_and_no_later_bulk_batch_takes_it_first(
    engine: Engine, another_session: psycopg.Connection[Any]
):
    """A hot SKU's stock refresh: an out-of-stock snapshot meets a bulk batch holding the level.
    However long it has waited, it is set aside and the rest of the realtime lane staged at once
    (no worker waits in the lock's queue); later bulk batches leave the level to it, so it goes
    as soon as the batch holding the level commits, and the refresh's later delta after it."""
    import threading

    from django.db import connections

    now = datetime.now(UTC)
    engine.post("wms", [stock_snapshot("HOT-1", 5, at=now - timedelta(minutes=3), n=1)])
    engine.post("wms", [stock_snapshot("COLD-1", 2, at=now - timedelta(minutes=3), n=0)])
    lanes.stage_flow(engine.wms_flow.pk, "bulk")
    level = StockLevel.objects.get(sku="HOT-1")
    bulk_batch = another_session  # a bulk batch staging the refresh's deltas
    bulk_batch.execute("SELECT 1 FROM monitoring_stocklevel WHERE id = %s FOR UPDATE", [level.pk])
    engine.post("wms", [stock_snapshot("HOT-1", 0, at=now - timedelta(minutes=2), n=2)])
    engine.post("wms", [stock_delta("HOT-1", 3, at=now - timedelta(minutes=1), n=3)])
    engine.post("wms", [stock_snapshot("COLD-1", 0, at=now - timedelta(minutes=1), n=4)])
    long_ago = timezone.now() - timedelta(seconds=30)
    SourceEvent.objects.filter(lane="realtime").update(received_at=long_ago)

    def stage() -> None:
        try:
            staging.run_staging(flow_id=engine.wms_flow.pk, lane="realtime")
        finally:
            connections.close_all()

    stager = threading.Thread(target=stage)
    stager.start()
    stager.join(timeout=15.0)  # two events and a 30 ms lock timeout: well under a second
    try:
        assert not stager.is_alive(), "no worker waits in the lock's queue"
        states = dict(SourceEvent.objects.values_list("source_event_id", "state"))
        assert states["demo-wms:stock:COLD-1:4"] == SourceEvent.State.READY
        assert states["demo-wms:stock:HOT-1:2"] == RECEIVED, "set aside"

        bulk_batch.rollback()  # the batch holding the level commits
        assert staging.run_staging(flow_id=engine.wms_flow.pk, lane="bulk") == 0
        assert SourceEvent.objects.get(source_event_id="demo-wms:stock:HOT-1:3").state == RECEIVED
    finally:
        bulk_batch.rollback()
        stager.join(timeout=30)

    time.sleep(staging.YIELD_RETRY_SECONDS)
    assert lanes.stage_flow(engine.wms_flow.pk, "realtime") == 1
    assert StockLevel.objects.get(sku="HOT-1").saleable == 0
    assert lanes.stage_flow(engine.wms_flow.pk, "bulk") == 1
    assert StockLevel.objects.get(sku="HOT-1").saleable == 3, "0, then 3 more"


def test_a_realtime_write_waiting_for_a_bulk_import_of_its_record_has_the_import_polled_by_its_lane(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    """A new order of a contact whose record is in a bulk import in flight (one write per key at
    a time) waits for that import: the realtime lane polls it, on its own cadence and alone, and
    wakes itself to send the newer state as soon as the import is seen finished."""
    from monitoring.models import DeliveryBatch, Operation
    from monitoring.pipeline import confirm, deliver
    from monitoring.pipeline.destination import client_for

    monkeypatch.setattr(lanes, "send_realtime_now", lambda destination_id: 0)
    now = datetime.now(UTC)
    engine.post("erp", [customer_update(i, at=now - timedelta(minutes=1)) for i in range(30)])
    lanes.stage_flow(engine.erp_flow.pk, "bulk")
    assert deliver.send_due(engine.destination, "bulk") > 0
    in_flight = DeliveryBatch.objects.get(lane="bulk", kind="contacts")
    assert not in_flight.awaited
    DeliveryBatch.objects.update(next_attempt_at=timezone.now() + timedelta(seconds=30))

    engine.post("erp", [order_created("AW1", "bulk0@example.com", "5.00", at=now, customer="C0")])
    lanes.stage_flow(engine.erp_flow.pk, "realtime")
    contact = Operation.objects.get(kind="contact", record_key="bulk0@example.com")
    assert (contact.state, contact.lane, contact.batch_id) == ("sent", "realtime", in_flight.pk)
    in_flight.refresh_from_db()
    assert in_flight.awaited, "the realtime write waits for it"
    assert in_flight.next_attempt_at <= timezone.now(), "polled now, not in 30 s"

    woken: list[tuple[int, str]] = []
    monkeypatch.setattr(confirm, "wake_delivery", lambda *args: woken.append(args))
    engine.sandbox.api.post(f"{engine.sandbox.url}/_sandbox/settle")
    bulk = client_for(engine.destination, "bulk")
    assert confirm.run_confirmation(bulk, engine.destination.pk, "bulk") == 0, "realtime's now"
    client = client_for(engine.destination, "realtime")
    assert confirm.run_confirmation(client, engine.destination.pk, "realtime") == 1
    contact.refresh_from_db()
    assert (contact.state, contact.batch_id) == ("pending", None), "due again, at once"
    assert woken == [(engine.destination.pk, "realtime")]
    engine.pump()
    assert engine.contact("bulk0@example.com") is not None
    assert set(SourceEvent.objects.values_list("state", flat=True)) == {"delivered"}


def test_the_staging_task_plans_its_batch_under_the_claim_that_staged_it(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    """Staging hands its READY events to planning still leased to its claim: no second claim
    (one lease update an event fewer), and the claim's attempt counted once."""
    from monitoring.pipeline import plan

    monkeypatch.setattr(lanes, "send_realtime_now", lambda destination_id: 0)
    claims: list[int] = []
    claim = plan.claim_ids
    monkeypatch.setattr(plan, "claim_ids", lambda *a, **k: claims.append(1) or claim(*a, **k))
    now = datetime.now(UTC)
    engine.post(
        "erp", [order_created(f"SO-H{n}", f"h{n}@example.com", "5.00", at=now) for n in range(3)]
    )
    assert lanes.stage_flow(engine.erp_flow.pk, "realtime") == 3
    events = SourceEvent.objects.filter(event_type="order.created")
    assert {(e.state, e.in_outbox, e.lease_owner, e.attempts) for e in events} == {
        ("ready", True, "outbox", 1)
    }
    assert claims == [], "planning claimed nothing of its own"


def test_an_idle_realtime_runner_looks_with_one_query_a_round_and_sends_what_comes_due(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    """A runner lingering for a realtime stream's next events asks one cheap question a round (is
    a write due?) rather than claiming (a dozen statements with its budget, import and singles
    checks), and sends an order planned meanwhile at its next look."""
    from statistics import median
    from types import SimpleNamespace

    from django.test.utils import CaptureQueriesContext

    if connection.vendor != "postgresql":
        pytest.skip("the lane's imports are polled by a confirmer thread on PostgreSQL only")
    monkeypatch.setattr(lanes, "send_realtime_now", lambda destination_id: 0)  # the runner sends
    statements_at_each_round: list[int] = []
    queries = CaptureQueriesContext(connection)

    def idle_round(seconds: float) -> None:
        statements_at_each_round.append(len(queries.captured_queries))
        if len(statements_at_each_round) == 10:  # an order arrives while the runner idles
            post_new_orders(engine, "I", 1, datetime.now(UTC))
        time.sleep(seconds)

    monkeypatch.setattr(lanes, "time", SimpleNamespace(monotonic=time.monotonic, sleep=idle_round))
    with queries:
        lanes.run_lane(
            engine.destination.pk, "realtime", time_budget=4.0, linger=4.0, idle_sleep=0.02
        )

    assert set(SourceEvent.objects.values_list("state", flat=True)) == {"delivered"}
    at = statements_at_each_round
    per_round = [b - a for a, b in zip(at, at[1:], strict=False)]
    assert len(per_round) >= 30
    assert median(per_round) <= 2, per_round


def test_a_realtime_event_left_unstaged_for_a_minute_no_longer_holds_its_entitys_bulk_events(
    engine: Engine,
):
    """The bulk lane leaves an entity to a realtime event waiting a moment, not to one that
    something else keeps from being staged."""
    now = datetime.now(UTC)
    engine.post("wms", [stock_snapshot("SLOW-1", 4, at=now - timedelta(minutes=3), n=0)])
    lanes.stage_flow(engine.wms_flow.pk, "bulk")
    engine.post("wms", [stock_snapshot("SLOW-1", 0, at=now - timedelta(minutes=2), n=1)])
    engine.post("wms", [stock_delta("SLOW-1", 3, at=now - timedelta(minutes=1), n=2)])
    waiting = SourceEvent.objects.filter(source_event_id="demo-wms:stock:SLOW-1:1")
    assert waiting.get().lane == "realtime", "4 in stock, then none"
    assert staging.run_staging(flow_id=engine.wms_flow.pk, lane="bulk") == 0, "left to it"

    waiting.update(next_attempt_at=timezone.now() - timedelta(minutes=2))
    assert staging.run_staging(flow_id=engine.wms_flow.pk, lane="bulk") == 1
    assert waiting.get().state == RECEIVED


def rows_read_by(action: Any) -> int:
    """Rows of the event table PostgreSQL read (sequentially or fetched through an index) while
    `action` ran, from this transaction's statistics."""
    query = (
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)"
        " FROM pg_stat_xact_user_tables WHERE relname = 'monitoring_sourceevent'"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(query)
        before = cursor.fetchone()[0]
        action()
        cursor.execute(query)
        return int(cursor.fetchone()[0]) - before


def delivered_history(count: int) -> None:
    """`count` delivered events of 500 entities, copies of the first event: months of history."""
    columns = [
        f.column for f in SourceEvent._meta.concrete_fields if f.column not in ("id", "state")
    ]
    made = {
        "source_event_id": "source_event_id || '-h' || g",
        "entity_key": "entity_key || '-h' || (g %% 500)",
    }
    picks = ", ".join(made.get(c, c) for c in columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO monitoring_sourceevent ({', '.join(columns)}, state)"  # noqa: S608
            f" SELECT {picks}, 'delivered' FROM monitoring_sourceevent, generate_series(1, %s) g"
            " WHERE id = (SELECT min(id) FROM monitoring_sourceevent)",
            [count],
        )


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's planner and statistics")
def test_a_bulk_claim_reads_the_realtime_lanes_waiting_entities_once_not_for_each_row_it_claims(
    engine: Engine,
):
    """PostgreSQL plans from statistics taken when almost nothing waited (a quiet evening), and a
    backlog then arrives within seconds: the claim's work stays in proportion to the rows it
    claims and the realtime events waiting, whatever the plan makes of the rest."""
    now = datetime.now(UTC)
    post_new_orders(engine, "Q", 5, now - timedelta(minutes=10))
    engine.pump()
    delivered_history(20_000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE monitoring_sourceevent")
    post_backlog(engine, 1500, now - timedelta(minutes=5))
    engine.post(
        "erp",
        [order_created(f"SO-W{n}", f"w{n}@example.com", "5.00", at=now) for n in range(20)],
    )
    read = rows_read_by(
        lambda: staging.claim_due(engine.erp_flow.pk, "bulk", owner="test", limit=100)
    )
    assert SourceEvent.objects.filter(lease_owner="test").count() == 100
    assert read < 1_000, f"{read} rows read: about the 100 claimed and the 20 waiting"


def test_a_realtime_event_whose_wake_up_found_its_lane_taken_is_staged_at_once_after(
    engine: Engine, monkeypatch: Any
):
    """The worker at the lane made its last claim just before the event committed, and the
    event's own wake-up found the lane taken: letting go, the worker wakes the lane at once, not
    in a second. A bulk lane whose due events it did not claim is looked at in a second."""
    woken: list[tuple[str, float]] = []
    now = datetime.now(UTC)
    engine.post("erp", [order_created("SO-L1", "l@example.com", "5.00", at=now)])
    post_backlog(engine, 100, now)
    monkeypatch.setattr(
        wake, "stage_now", lambda flow_id, *, lane, countdown=0: woken.append((lane, countdown))
    )
    monkeypatch.setattr(lanes, "run_staging", lambda **kwargs: 0)  # claimed before the commits

    assert lanes.stage_flow(engine.erp_flow.pk, "realtime") == 0
    assert woken == [("realtime", 0)]
    assert lanes.stage_flow(engine.erp_flow.pk, "bulk") == 0
    assert woken[1:] == [("bulk", 1)]
