"""A demo recording is replayed now: `ReplayClock` moves the times a recording holds to the
present, in their order, each written back in its own form."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from connectors.sources.brightpearl.demo import _clock as brightpearl_clock
from connectors.sources.mintsoft.demo import _clock as mintsoft_clock
from connectors.sources.replay import (
    ANCHOR_ENV,
    MAX_GAP,
    REPLAY_LEAD,
    ReplayClock,
    newest,
    replay_anchor,
    revealed,
)
from connectors.sources.values import parse_dotnet, parse_iso
from monitoring.demo import demo_systems

ANCHOR = datetime(2026, 7, 1, 12, 0, 0, tzinfo=UTC)  # London is on BST: 13:00 local
LONDON = ZoneInfo("Europe/London")


def instant(text: str) -> datetime:
    """What an adapter reads: .NET's epoch ms, ISO 8601 with its offset, or London's wall time."""
    moment = parse_dotnet(text) or parse_iso(text)
    assert moment is not None, text
    return moment if moment.tzinfo else moment.replace(tzinfo=LONDON)


RECORDED = {
    "order": {"placedOn": "2020-03-31T15:02:44.000-06:00", "updatedOn": "2020-03-31T15:02:45.500-06:00"},
    "credit": {"createdOn": "2020-04-02T09:00:00.000-06:00"},
    "webhook": {"raisedOn": "2025-11-04T16:41:39.000Z"},
    "warehouse": [
        {"LastUpdated": "2026-02-04T18:37:43.6210991", "Value": "2026-02-04 18:37:44"},
        {"OrderDate": "/Date(1770648068996+0000)/"},
    ],
    "not times": ["2020-03-31", "SO-2020-03-31", "15:02:44", 20200331, None],
}  # fmt: skip


def test_the_newest_time_lands_at_the_anchor_and_the_rest_just_before_it_in_order():
    clock = ReplayClock([RECORDED], anchor=ANCHOR, naive_zone=LONDON)
    shifted = clock.shift(RECORDED)

    pairs = [
        (RECORDED["order"]["placedOn"], shifted["order"]["placedOn"]),
        (RECORDED["order"]["updatedOn"], shifted["order"]["updatedOn"]),
        (RECORDED["credit"]["createdOn"], shifted["credit"]["createdOn"]),
        (RECORDED["webhook"]["raisedOn"], shifted["webhook"]["raisedOn"]),
        (RECORDED["warehouse"][0]["LastUpdated"], shifted["warehouse"][0]["LastUpdated"]),
        (RECORDED["warehouse"][0]["Value"], shifted["warehouse"][0]["Value"]),
        (RECORDED["warehouse"][1]["OrderDate"], shifted["warehouse"][1]["OrderDate"]),
    ]
    before = sorted(pairs, key=lambda pair: instant(pair[0]))
    after = sorted(pairs, key=lambda pair: instant(pair[1]))
    assert before == after  # the same order
    moved = [instant(new) for _, new in before]
    assert all(a < b for a, b in zip(moved, moved[1:], strict=False))  # none merged
    assert ANCHOR - timedelta(seconds=1) < moved[-1] <= ANCHOR
    assert moved[0] >= ANCHOR - len(moved) * (MAX_GAP + timedelta(seconds=1))
    # Moments close together keep their spacing: the order's placed and updated 1.5 s apart,
    # the warehouse's two times 0.3789009 s apart (to the microsecond Python keeps).
    placed, updated = (instant(shifted["order"][k]) for k in ("placedOn", "updatedOn"))
    assert updated - placed == timedelta(seconds=1.5)
    assert instant(shifted["warehouse"][0]["Value"]) - instant(
        shifted["warehouse"][0]["LastUpdated"]
    ) == timedelta(microseconds=378901)
    assert shifted["not times"] == RECORDED["not times"]


def test_each_time_is_written_back_in_its_own_form():
    shifted = ReplayClock([RECORDED], anchor=ANCHOR, naive_zone=LONDON).shift(RECORDED)

    raised = shifted["webhook"]["raisedOn"]
    assert raised.startswith("2026-07-01T11:") and raised.endswith(".000Z")
    placed = shifted["order"]["placedOn"]
    assert placed.startswith("2026-07-01T05:") and placed.endswith(".000-06:00")
    # Mintsoft's wall time without an offset is London's (BST in July), its seven digits kept.
    last_updated = shifted["warehouse"][0]["LastUpdated"]
    assert last_updated.startswith("2026-07-01T12:59:") and last_updated.endswith(".6210991")
    assert len(shifted["warehouse"][0]["Value"]) == len("2026-02-04 18:37:44")
    # The newest, .NET's epoch milliseconds with the zone it names.
    order_date = shifted["warehouse"][1]["OrderDate"]
    assert order_date.startswith("/Date(") and order_date.endswith("+0000)/")
    assert ANCHOR - timedelta(seconds=1) < instant(order_date) <= ANCHOR


def test_one_clock_maps_a_recordings_webhooks_and_its_api_alike():
    """The replay and the recorded API are two processes: each builds the clock from the whole
    recording, so a time in a webhook and the same time in a record stay equal."""
    webhook = {"raisedOn": "2020-03-31T21:57:21.000Z"}
    record = {"updatedOn": "2020-03-31T15:57:21.000-06:00", "createdOn": "2019-01-01T00:00:00Z"}
    clock = ReplayClock([webhook, record], anchor=ANCHOR)
    replayed = json.loads(clock.shift_json(json.dumps(webhook).encode()))
    served = clock.shift(record)
    assert instant(replayed["raisedOn"]) == instant(served["updatedOn"]) == ANCHOR
    assert instant(served["createdOn"]) < ANCHOR


def test_the_anchor_is_the_one_run_demo_sets_else_now(monkeypatch):
    monkeypatch.setenv(ANCHOR_ENV, "2026-07-01T12:00:00.750Z")
    assert replay_anchor() == ANCHOR
    monkeypatch.setenv(ANCHOR_ENV, "yesterday")
    with pytest.raises(ValueError, match=ANCHOR_ENV):
        replay_anchor()
    monkeypatch.delenv(ANCHOR_ENV)
    assert abs(replay_anchor() - datetime.now(UTC)) < timedelta(seconds=2)


def test_a_recorded_api_serves_a_record_once_its_moment_has_come():
    served = {
        "data": [
            {"id": 1, "updatedAt": "2026-07-01T11:59:50Z"},
            {"id": 2, "createdAt": "2026-07-01T11:59:50Z", "updatedAt": "2026-07-01T12:00:05Z"},
            {"id": 3, "lines": [{"sku": "A"}], "dispatched": "/Date(1782907210000)/"},
        ],
        "statuses": ["open", "closed"],
        "asOf": "2026-07-01T12:00:30Z",
    }
    now = ANCHOR  # 12:00:00; record 2 was changed at 12:00:05, record 3 at 12:00:10
    assert revealed(served, now)["data"] == [served["data"][0]]
    later = revealed(served, ANCHOR + timedelta(seconds=10))
    assert [r["id"] for r in later["data"]] == [1, 2, 3] and later["statuses"] == ["open", "closed"]
    assert newest(served["data"][1]) == ANCHOR + timedelta(seconds=5)


def test_every_recording_plays_within_the_replays_lead_each_request_when_its_moment_comes(
    monkeypatch,
):
    monkeypatch.setenv(ANCHOR_ENV, "2026-07-01T12:00:00Z")
    for system in demo_systems():
        for recorded in system.requests():
            at = recorded.at or replay_anchor()
            assert replay_anchor() - REPLAY_LEAD <= at <= replay_anchor(), (system.key, at)
    # The recordings moved by a clock: their records' moments too, the oldest included.
    for clock in (brightpearl_clock(None), mintsoft_clock(None)):
        oldest = min(moment + offset for moment, offset in clock.offsets.items())
        assert replay_anchor() - oldest <= REPLAY_LEAD
