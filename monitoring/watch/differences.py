"""A reconciliation difference as a comparison finds it, and when a value in Syncdesk and one in
DotDigital or the source are the same. Both comparisons (`reconcile_dotdigital`,
`reconcile_source`) produce `Found`s; `save_found` stores them as the run's rows (with the
progress they belong to, so a resumed run neither loses nor repeats one), and `reconcile` opens
their occurrences once the run has finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from monitoring.models import ReconciliationDifference, ReconciliationRun
from monitoring.pipeline.normalise import parse_time

Diff = ReconciliationDifference.Kind
# The contact fields compared, and who owns a difference in each (money → finance).
FIELDS: dict[str, str] = {
    "LTV": "finance",
    "ORDER_COUNT": "marketing",
    "LAST_ORDER_DATE": "marketing",
}


@dataclass
class Found:
    kind: str
    subject: str
    team: str
    email: str = ""
    order_number: str = ""
    field: str = ""
    engine: Any = None
    dotdigital: Any = None
    source: Any = None
    events: list[dict[str, Any]] | None = None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def save_found(run: ReconciliationRun, found: list[Found]) -> None:
    """The run's difference rows for these findings."""
    ReconciliationDifference.objects.bulk_create(
        ReconciliationDifference(
            run=run,
            kind=f.kind,
            subject=f.subject[:300],
            email=f.email,
            order_number=f.order_number,
            field=f.field,
            engine_value=_text(f.engine),
            dotdigital_value=_text(f.dotdigital),
            source_value=_text(f.source),
            source_events=f.events or [],
            team_slug=f.team,
        )
        for f in found
    )


def same(engine: Any, remote: Any, field_type: str) -> bool:
    """Equal as DotDigital would show them: numbers to the cent, dates to the second (or the day
    when either side is a date only), everything else as text."""
    if engine is None or engine == "":
        return remote is None or remote == ""
    if remote is None or remote == "":
        return False
    if field_type == "numeric":
        try:
            return Decimal(str(engine)).quantize(Decimal("0.01")) == Decimal(str(remote)).quantize(
                Decimal("0.01")
            )
        except InvalidOperation:
            return str(engine) == str(remote)
    if field_type == "date":
        a, b = parse_time(engine), parse_time(remote)
        if a is None or b is None:
            return str(engine)[:10] == str(remote)[:10]
        if len(str(engine)) <= 10 or len(str(remote)) <= 10:
            return a.date() == b.date()
        return abs((a - b).total_seconds()) < 1
    return str(engine) == str(remote)
