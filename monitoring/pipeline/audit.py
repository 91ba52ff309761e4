"""Nothing is lost: every accepted event is delivered, held (with a reason and a deadline),
skipped (with a reason), failed pointing at an open inbox occurrence, staged and ready to deliver,
or still in progress. `audit()` counts them and lists any event that is none of these."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Q

from exceptions_inbox.models import Occurrence
from monitoring.models import SourceEvent

State = SourceEvent.State
CATEGORIES = ("delivered", "held", "skipped", "failed", "ready to deliver", "in progress")


@dataclass
class AuditReport:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    held_reasons: dict[str, int] = field(default_factory=dict)
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    failed_kinds: dict[str, int] = field(default_factory=dict)
    outside: list[tuple[int, str]] = field(default_factory=list)  # (event id, why)

    @property
    def total(self) -> int:
        return sum(self.counts.values()) + len(self.outside)

    def in_progress(self, *, ready_in_progress: bool) -> int:
        return self.counts["in progress"] + (
            self.counts["ready to deliver"] if ready_in_progress else 0
        )


def _short(reason: str) -> str:
    return (reason.split("(")[0].split(":")[0].strip() or "—")[:80]


def audit(workspace_id: int | None = None) -> AuditReport:
    report = AuditReport()
    events = SourceEvent.objects.all()
    if workspace_id is not None:
        events = events.filter(workspace_id=workspace_id)
    open_keys = set(
        Occurrence.objects.filter(state=Occurrence.State.OPEN, event_key__startswith="event:")
        .filter(Q(workspace_id=workspace_id) if workspace_id is not None else Q())
        .values_list("event_key", flat=True)
    )
    rows = events.values_list(
        "pk", "state", "reason", "hold", "hold_deadline", "failed_kind"
    ).iterator(chunk_size=5000)
    for pk, state, reason, hold, deadline, failed_kind in rows:
        if state == State.DELIVERED:
            report.counts["delivered"] += 1
        elif state == State.HELD:
            if not reason or deadline is None:
                report.outside.append((pk, "held without a reason or a deadline"))
                continue
            report.counts["held"] += 1
            label = f"{hold or 'retry'}: {_short(reason)}"
            report.held_reasons[label] = report.held_reasons.get(label, 0) + 1
        elif state == State.SKIPPED:
            if not reason:
                report.outside.append((pk, "skipped without a reason"))
                continue
            report.counts["skipped"] += 1
            label = _short(reason)
            report.skipped_reasons[label] = report.skipped_reasons.get(label, 0) + 1
        elif state == State.FAILED:
            if f"event:{pk}" not in open_keys:
                report.outside.append((pk, "failed with no open occurrence in the inbox"))
                continue
            report.counts["failed"] += 1
            report.failed_kinds[failed_kind] = report.failed_kinds.get(failed_kind, 0) + 1
        elif state == State.READY:
            report.counts["ready to deliver"] += 1
        elif state == State.RECEIVED:
            report.counts["in progress"] += 1
        else:  # a state this audit does not know
            report.outside.append((pk, f"in state {state!r}"))
    return report
