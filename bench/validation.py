"""The webhook's schema check, timed: the fast check (fastjsonschema's compiled predicate) and the
whole of `validate_event`, against jsonschema's own `is_valid`, on the same events in one run.

    .venv/bin/python bench/validation.py [--events 20000] [--rounds 3]

The events are the engine bench's mix (`eventgen`, 20,000 customers) and `bench/ingest.py`'s
mixed load. Each is timed by CPU (`time.process_time`) over every event, in turn, `--rounds`
times; it prints microseconds an event per round. jsonschema's `is_valid` is the baseline (timed
on a tenth of the events: it is the slow one). At c72eb8b the script also timed the hand-written
predicate that fastjsonschema replaced.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def per_event_us(check: Callable[[Any], bool], events: list[dict[str, Any]]) -> float:
    started = time.process_time()
    for event in events:
        if not check(event):
            raise SystemExit(f"{check.__name__} found a valid event invalid: {event}")
    return (time.process_time() - started) / len(events) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events of each load")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import django

    django.setup()
    from bench.ingest import make_mixed_events
    from eventgen import Generator
    from monitoring.pipeline import event_schema

    validators = event_schema._validators()
    event_schema._fast_checks()  # compiled once per process (about 0.3 s): not timed

    def jsonschema_is_valid(event: dict[str, Any]) -> bool:
        return bool(validators[event["event_type"]].is_valid(event))

    ways: dict[str, Callable[[Any], bool]] = {
        "fast check (fastjsonschema)": event_schema._is_valid,
        "validate_event (as ingest runs it)": lambda e: not event_schema.validate_event(e),
    }

    loads = {
        "engine mix": Generator(seed=11, customers=20_000, live=True).events(args.events),
        "ingest mix": make_mixed_events(args.events, "validation"),
    }
    print(f"cores: {os.cpu_count()}; load average {os.getloadavg()[0]:.2f}")
    for load, events in loads.items():
        print(f"{load}: {len(events)} events")
        for round_ in range(1, args.rounds + 1):
            figures = {name: per_event_us(check, events) for name, check in ways.items()}
            baseline = per_event_us(jsonschema_is_valid, events[: len(events) // 10])
            shown = "; ".join(f"{name} {us:.1f}" for name, us in figures.items())
            print(f"  round {round_}: {shown}; jsonschema is_valid {baseline:.1f} µs/event")


if __name__ == "__main__":
    main()
