"""Programs (automations), as design.md says: DotDigital allows 20 enrolment calls an hour across
all programs, takes contact ids and has no un-enrol.

- Syncdesk enrols through **list membership**: "Dispatched today" (left the next day, and at once
  when the order is refunded) and "Recent buyers (30 days)" (an exclusion list for promotions),
  written by the planner as list operations; `expire_memberships` takes contacts off a list when
  their time on it is up.
- Where a **direct enrolment** is configured (`DirectEnrolment`), contacts are batched per program
  under our own cap of `ENROLMENT_CALLS_PER_HOUR` (below DotDigital's 20), and each (program,
  contact) is sent at most once: the rows are marked `sending` and committed before the call, and
  a call that may have been applied (timeout, dropped connection, 5xx) leaves them `unknown`,
  never retried blindly.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

from django.db import transaction
from django.utils import timezone

from connectors.budget import Lane
from connectors.dotdigital import errors
from connectors.dotdigital.client import DotDigitalClient
from connectors.models import Connection
from exceptions_inbox.kinds import register_hooks as register
from exceptions_inbox.models import Occurrence
from exceptions_inbox.recording import clear_occurrences, record_occurrence
from monitoring.models import Customer, ListMembership, Operation, ProgramEnrolment
from monitoring.pipeline import wake
from monitoring.pipeline.hooks import event_ids

log = logging.getLogger(__name__)

STAGE = "enrol"
UNKNOWN_KIND = "enrolment_unknown"

ENROLMENT_CALLS_PER_HOUR = 18
CONTACTS_PER_ENROLMENT = 25  # the mirrored programs spec caps `contacts` at 25 per call
PE = ProgramEnrolment.State


def expire_memberships(destination_id: int | None = None) -> int:
    """Queue removals for list members whose time is up. Returns how many it queued."""
    now = timezone.now()
    qs = ListMembership.objects.filter(member=True, expires_at__lte=now)
    if destination_id is not None:
        qs = qs.filter(destination_id=destination_id)
    rows = list(qs[:5000])
    if not rows:
        return 0
    ops = [
        Operation(
            workspace_id=m.workspace_id,
            destination_id=m.destination_id,
            key=f"list:{m.list_name}:{m.email}",
            kind=Operation.Kind.LIST_REMOVE,
            lane=Lane.BULK.value,
            record_key=m.email,
            contact_key=m.email,
            customer_id=m.customer_id,
            payload={"email": m.email, "list": m.list_name, "expires_at": None},
            version=1,
            next_attempt_at=now,
        )
        for m in rows
    ]
    with transaction.atomic():
        # An open write of the same membership (a renewed add) decides instead.
        Operation.objects.bulk_create(ops, ignore_conflicts=True)
        ListMembership.objects.filter(pk__in=[m.pk for m in rows]).update(expires_at=None)
    return len(ops)


def expire_and_wake() -> int:
    """`expire_memberships` everywhere, then wake the bulk lane of each destination with list
    removals pending. Returns how many removals it queued."""
    queued = expire_memberships()
    if queued:
        for destination_id in set(
            Operation.objects.filter(kind="list_remove", state="pending").values_list(
                "destination_id", flat=True
            )
        ):
            wake.deliver_now(destination_id, "bulk")
    return queued


def enrol_all() -> int:
    """`enrol_programs` for every active connection with pending enrolments; one that fails is
    logged and tried again on the next run. Returns how many contacts it enrolled."""
    total = 0
    destinations = set(
        ProgramEnrolment.objects.filter(state="pending").values_list("destination_id", flat=True)
    )
    for conn in Connection.objects.filter(pk__in=destinations, status=Connection.Status.ACTIVE):
        try:
            total += enrol_programs(conn)
        except errors.DotDigitalError as exc:
            log.warning("enrolling for %s failed: %s", conn, exc)
    return total


def enrol_programs(destination: Connection, client: DotDigitalClient | None = None) -> int:
    """Send pending direct enrolments within the hourly cap. Returns how many contacts enrolled."""
    client = client or DotDigitalClient.for_connection(destination, lane=Lane.REALTIME)
    used, _ = client.budget.usage("enrolment")
    calls_left = ENROLMENT_CALLS_PER_HOUR - used
    pending = list(
        ProgramEnrolment.objects.filter(destination=destination, state=PE.PENDING).order_by("pk")[
            :5000
        ]
    )
    if not pending or calls_left <= 0:
        return 0
    ids = dict(
        Customer.objects.filter(
            workspace_id=destination.workspace_id,
            email__in={p.email for p in pending},
            dotdigital_contact_id__gt="",
        ).values_list("email", "dotdigital_contact_id")
    )
    by_program: dict[int, list[ProgramEnrolment]] = defaultdict(list)
    for row in pending:
        if row.email in ids:  # a contact DotDigital does not know yet waits for its upsert
            by_program[row.program_id].append(row)
    enrolled = 0
    for program_id, rows in sorted(by_program.items()):
        for start in range(0, len(rows), CONTACTS_PER_ENROLMENT):
            if calls_left <= 0:
                return enrolled
            chunk = rows[start : start + CONTACTS_PER_ENROLMENT]
            pks = [r.pk for r in chunk]
            # Committed before the call: a crash after this line never sends it again.
            claimed = ProgramEnrolment.objects.filter(pk__in=pks, state=PE.PENDING).update(
                state=PE.SENDING, sent_at=timezone.now()
            )
            if claimed != len(pks):
                ProgramEnrolment.objects.filter(pk__in=pks, state=PE.SENDING).update(
                    state=PE.PENDING
                )
                continue
            calls_left -= 1
            try:
                enrolment = client.enrol(program_id, [int(ids[r.email]) for r in chunk])
            except (errors.RateLimited, errors.NotSent):
                # Refused, never applied — by our own budget (no call made), a 429, DotDigital's
                # hourly enrolment allowance, or no connection made at all (DotDigital
                # unreachable): the rows wait for the next run rather than fail, which would lose
                # the enrolments without an occurrence.
                ProgramEnrolment.objects.filter(pk__in=pks).update(state=PE.PENDING)
                return enrolled
            except (errors.CallTimeout, errors.ConnectionDropped, errors.ServerError) as exc:
                _may_have_applied(destination, chunk, f"May have been applied; not retried: {exc}")
                continue
            except errors.DotDigitalError as exc:
                _settle(pks, PE.FAILED, str(exc))
                continue
            ProgramEnrolment.objects.filter(pk__in=pks).update(
                state=PE.SENT, enrolment_id=enrolment.id[:80]
            )
            clear_occurrences(destination.workspace, [f"enrolment:{pk}" for pk in pks], stage=STAGE)
            enrolled += len(pks)
    return enrolled


def _may_have_applied(destination: Connection, rows: list[ProgramEnrolment], error: str) -> None:
    """Rows whose call got no answer: `unknown`, never sent again on its own, and each an
    occurrence in marketing's inbox (one group a program) for a person to check DotDigital and
    retry what it does not have (`retry_unknown`)."""
    _settle([r.pk for r in rows], PE.UNKNOWN, error)
    for row in rows:
        record_occurrence(
            workspace=destination.workspace,
            kind=UNKNOWN_KIND,
            event_key=f"enrolment:{row.pk}",
            stage=STAGE,
            message=error,
            subject_key=f"program:{row.program_id}",
            subject_label=f"program {row.program_id}",
            email=row.email,
            detail={"enrolment": row.pk, "program": row.program_id},
        )


def retry_unknown(occurrences: Sequence[Occurrence]) -> None:
    """A person found these contacts missing from the program in DotDigital: send each once
    more (their occurrences clear when it is sent)."""
    pks = event_ids(occurrences, kind="enrolment")
    ProgramEnrolment.objects.filter(pk__in=pks, state=PE.UNKNOWN).update(state=PE.PENDING, error="")


def register_hooks() -> None:
    """Called from MonitoringConfig.ready()."""
    register(UNKNOWN_KIND, retry=retry_unknown)


def _settle(pks: list[int], state: str, error: str) -> None:
    ProgramEnrolment.objects.filter(pk__in=pks).update(state=state, error=error[:2000])
