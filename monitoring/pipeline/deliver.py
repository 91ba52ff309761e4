"""Step 4, send: claim due operations of one DotDigital connection and lane, and send them.

- **Claims** are leases (`SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL, a conditional UPDATE on
  SQLite): a worker killed after its claim leaves operations whose lease expires, and the next
  claim takes them again. Writes are upserts by key, so a second send never duplicates anything.
- **Contacts before the insight data that refers to them**: an insight record or list write of a
  contact DotDigital does not know yet waits while that contact's upsert is open.
- **Lanes**: the realtime lane sends single records while the shared rate budget's single-call
  tier has room, and imports for the rest, one of each kind and collection a second at most
  (`realtime_import_blocks`); the bulk lane sends large imports, split by the client to
  DotDigital's body limit, and leaves some import slots free for the realtime lane. Each lane has
  its own Celery queue and workers.
- **Errors by whose problem they are** (`sending.handle_error`): a transient error (429, 5xx,
  timeout, too many imports) puts the operations back with backoff and jitter; a connection error
  (401, wrong region, feature off, allowance) pauses the connection with one alert and leaves
  every operation queued until `destination.test_and_resume` succeeds; a record error fails that
  operation with DotDigital's code and text; a suppressed contact is skipped with that reason.
- **Checks before sending**: data fields are created in DotDigital on first use, each value is
  checked against its field's type, and each insight record against its collection's schema (read
  from DotDigital and cached): a misfit opens `schema_mismatch` and is never sent.

`SYNCDESK_KILL_AT=after_claim|after_send` kills the process at that point (tests of the invariants).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from django.db import connection as db_connection
from django.db import transaction
from django.db.models import Case, Exists, F, OuterRef, Q, Value, When
from django.utils import timezone

from connectors.budget import ConcurrencyCap, Lane
from connectors.dotdigital import errors
from connectors.dotdigital.client import DotDigitalClient
from connectors.dotdigital.types import ContactWrite, InsightWrite, Outcome
from connectors.models import Connection
from monitoring.models import (
    OPEN_STATES,
    Customer,
    DeliveryBatch,
    DestinationCache,
    Operation,
    SourceEvent,
)
from monitoring.pipeline import consent
from monitoring.pipeline.claims import hold, worker_token, working
from monitoring.pipeline.confirm import record_results
from monitoring.pipeline.destination import (
    client_for,
    collection_schema,
    data_field_types,
    list_id,
    pause_destination,
)
from monitoring.pipeline.mapping import (
    COLLECTIONS,
    check_data_field,
    check_record,
)
from monitoring.pipeline.plan import ready_events
from monitoring.pipeline.sending import (
    HOLD_SECONDS,
    SINGLE_MAX,
    Paused,
    Result,
    Sending,
    each_call,
    handle_error,
    kill_point,
    record_imports,
    schema_failure,
    single_capacity,
)

log = logging.getLogger(__name__)

Op = Operation.State
OpKind = Operation.Kind
# A claim's lease: a killed sender's operations are claimed again when it runs out. Writes are
# upserts by key, so a send that outlives its lease costs a second send, never a duplicate: the
# realtime lane's is short (its claims take seconds; a dispatch must not wait minutes for a dead
# worker's lease), the bulk lane's outlasts an import's PUT (121 s at most).
SEND_LEASE_SECONDS = {"realtime": 30, "bulk": 180}
REALTIME_CLAIM = 2000  # single calls up to SINGLE_MAX, else imports of up to this many
# The bulk lane spends few calls (at most 20 per 10,000 bulk events): it sends when this many
# operations are due, or when the oldest due one has waited BULK_MAX_WAIT (stock levels, attribute
# refreshes and backfills can wait a minute; the realtime lane carries what cannot).
BULK_CLAIM = 10_000
BULK_MIN = 5_000
BULK_MAX_WAIT = timedelta(seconds=60)
BULK_IDLE_WAIT = timedelta(seconds=5)


# -- claiming -------------------------------------------------------------------------------------


def due_operations(destination_id: int, lane: str, now: Any = None) -> Any:
    now = now or timezone.now()
    contact_open = Operation.objects.filter(
        destination_id=OuterRef("destination_id"),
        contact_key=OuterRef("contact_key"),
        kind=Operation.Kind.CONTACT,
        state__in=OPEN_STATES,
    )
    return (
        Operation.objects.filter(destination_id=destination_id, lane=lane)
        .filter(
            Q(state=Op.PENDING, next_attempt_at__lte=now) | Q(state=Op.SENDING, lease_until__lt=now)
        )
        .filter(
            Q(kind__in=(Operation.Kind.CONTACT, Operation.Kind.CONSENT))
            | Q(contact_key="")
            | Q(customer__dotdigital_contact_id__gt="")
            | ~Exists(contact_open)
        )
    )


def claim_operations(
    destination_id: int,
    lane: str,
    owner: str,
    limit: int,
    *,
    exclude: Q | None = None,
    only: Q | None = None,
) -> list[int]:
    """Lease up to `limit` due operations to `owner`, marked sending (sent_version = version);
    `exclude` and `only` narrow which."""
    now = timezone.now()
    until = now + timedelta(seconds=SEND_LEASE_SECONDS[lane])
    qs = due_operations(destination_id, lane, now).order_by("next_attempt_at", "pk")
    if exclude is not None:
        qs = qs.exclude(exclude)
    if only is not None:
        qs = qs.filter(only)
    changes = {
        "state": Op.SENDING,
        "lease_owner": owner,
        "lease_until": until,
        "attempts": F("attempts") + 1,
        "sent_version": F("version"),
        "sent_at": now,
    }
    with transaction.atomic():
        if db_connection.vendor == "postgresql":
            ids = list(
                qs.select_for_update(skip_locked=True, of=("self",)).values_list("pk", flat=True)[
                    :limit
                ]
            )
            if ids:
                Operation.objects.filter(pk__in=ids).update(**changes)
                hold(owner)
            return ids
        candidates = list(qs.values_list("pk", flat=True)[:limit])
        if not candidates:
            return []
        Operation.objects.filter(pk__in=candidates).filter(
            Q(state=Op.PENDING) | Q(state=Op.SENDING, lease_until__lt=now)
        ).update(**changes)
        return list(
            Operation.objects.filter(pk__in=candidates, lease_owner=owner).values_list(
                "pk", flat=True
            )
        )


# The realtime lane sends at most one import of each kind and collection every
# `REALTIME_IMPORT_SPACING` seconds: what comes due meanwhile goes in the next one, so at any rate
# the lane sends about one import per kind a second, within DotDigital's 120 import calls a minute,
# instead of one per claim until the tier is spent and everything waits for its window to end.
# The next import does not wait for the last to finish (about 1.4 s from sent to seen finished):
# an operation in flight is `sent`, never due, so one record never rides in two imports at once.
REALTIME_IMPORT_SPACING = 1.0


def realtime_import_blocks(destination_id: int) -> Q | None:
    """The realtime writes that would join an import of a kind and collection the lane sent less
    than `REALTIME_IMPORT_SPACING` ago; None when there are none."""
    since = timezone.now() - timedelta(seconds=REALTIME_IMPORT_SPACING)
    pairs = set(
        DeliveryBatch.objects.filter(
            destination_id=destination_id,
            lane=Lane.REALTIME,
            state=DeliveryBatch.State.SUBMITTED,
            submitted_at__gte=since,
        ).values_list("kind", "collection")
    )
    if not pairs:
        return None
    blocked = Q()
    for kind, collection in pairs:
        if kind == DeliveryBatch.Kind.CONTACTS:  # contacts, list additions and consent
            blocked |= Q(kind__in=(OpKind.CONTACT, OpKind.LIST_ADD, OpKind.CONSENT))
        else:
            blocked |= Q(kind=OpKind.INSIGHT, collection=collection)
    return blocked


# -- the connection -------------------------------------------------------------------------------


# -- what DotDigital has: data fields, collections, lists -----------------------------------------


# -- sending --------------------------------------------------------------------------------------


def send_operations(sending: Sending, ops: Sequence[Operation]) -> None:
    """Send claimed operations; their outcomes collect in `sending.results`."""
    by_kind: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
        by_kind[op.kind].append(op)
    realtime = sending.lane == Lane.REALTIME
    insight: dict[str, list[Operation]] = defaultdict(list)
    for op in by_kind["insight"]:
        insight[op.collection].append(op)
    if realtime:
        # DotDigital's import tier (120 calls a minute) is what paces the realtime lane's
        # rounds, so single calls go where they save an import: a collection whose few records
        # all fit the single tier's room is sent singly, not in an import of its own. A few of
        # many sent singly would save none (and deliver no event sooner: its other writes ride
        # the import), so a collection that does not fit goes whole in an import.
        for collection, group in sorted(insight.items(), key=lambda item: len(item[1])):
            if len(group) <= _singles(sending, len(group)):
                _send_insight(sending, collection, group, len(group))
                del insight[collection]
    consent_writes = consent.send_consent(sending, by_kind["consent"]) if by_kind["consent"] else []
    contacts = by_kind["contact"] + by_kind["list_add"]
    if contacts or consent_writes:
        singles = _singles(sending, len(contacts)) if realtime and contacts else 0
        _send_contacts(sending, contacts, singles, consent_writes)
    if by_kind["list_remove"]:
        _send_list_removals(sending, by_kind["list_remove"])
    for collection, group in insight.items():
        _send_insight(sending, collection, group, 0)


def _singles(sending: Sending, wanted: int) -> int:
    """How many of `wanted` realtime writes go as single-record calls: as many as the single
    tier has room for, `SINGLE_MAX` at most (the rest go in an import)."""
    return min(wanted, SINGLE_MAX, single_capacity(sending.client))


def _contact_writes(
    sending: Sending, ops: list[Operation]
) -> tuple[dict[str, ContactWrite], dict[str, list[Operation]]]:
    """One write per contact (an import may not carry one email twice), its data fields checked
    against DotDigital's types (a misfit fails its operation) and its lists named by id."""
    client = sending.client
    wanted: dict[str, str] = {}
    for op in ops:
        for target, spec in (op.payload.get("fields") or {}).items():
            wanted[target] = str(spec.get("type") or "string")
    types = data_field_types(client, sending.destination.pk, wanted) if wanted else {}

    by_email: dict[str, list[Operation]] = defaultdict(list)
    writes: dict[str, ContactWrite] = {}
    for op in ops:
        email = op.record_key
        fields: dict[str, Any] = {}
        problems = []
        for target, spec in (op.payload.get("fields") or {}).items():
            value = spec.get("value")
            problem = check_data_field(target, value, types.get(target, "String"))
            if problem:
                problems.append(problem)
            fields[target] = value
        if problems:
            schema_failure(sending, op, problems)
            continue
        lists: tuple[int, ...] = ()
        if op.kind == Operation.Kind.LIST_ADD:
            lists = (
                list_id(client, sending.destination.pk, str(op.payload["list"]), sending.lists),
            )
        current = writes.get(email) or ContactWrite(email=email)
        writes[email] = replace(
            current,
            data_fields={**current.data_fields, **fields},
            lists=(*current.lists, *lists),
        )
        by_email[email].append(op)
    return writes, by_email


def _new_contacts_first(
    emails: list[str], by_email: dict[str, list[Operation]]
) -> tuple[list[str], int]:
    """Contacts DotDigital does not know yet first (their orders' records wait on them), and how
    many there are."""
    customers = {op.customer_id for ops in by_email.values() for op in ops if op.customer_id}
    new = set(
        Customer.objects.filter(pk__in=customers, dotdigital_contact_id="").values_list(
            "pk", flat=True
        )
    )
    is_new = {e: any(op.customer_id in new for op in by_email[e]) for e in emails}
    return sorted(emails, key=lambda e: not is_new[e]), sum(is_new.values())


def _send_contacts(
    sending: Sending,
    ops: list[Operation],
    singles: int,
    consent_writes: Sequence[tuple[Operation, ContactWrite]] = (),
) -> None:
    """Up to `singles` contacts as single-record calls (of more, new ones only), the rest (and
    any the single tier turns away) in an import, with the consent writes left for an import (one
    record per contact: a consent change joins the contact's data fields and lists)."""
    client = sending.client
    writes, by_email = _contact_writes(sending, ops)
    if not writes and not consent_writes:
        return
    emails = list(writes)
    if 0 < singles < len(emails):
        # Of more than the room, only contacts DotDigital does not know yet go singly: the
        # records naming them wait on them, where a known contact's write may ride the import.
        emails, new = _new_contacts_first(emails, by_email)
        singles = min(singles, new)
    if singles:
        first, later = emails[:singles], emails[singles:]
        answers = each_call(client, client.upsert_contact, [writes[e] for e in first])
        rest: list[str] = []
        errors_seen: list[tuple[str, errors.DotDigitalError]] = []
        for email, answer in zip(first, answers, strict=True):
            if isinstance(answer, errors.RateLimited) and answer.status is None:
                rest.append(email)  # our share of the single tier ran out: in a small import
            elif isinstance(answer, errors.DotDigitalError):
                errors_seen.append((email, answer))
            else:
                for op in by_email[email]:
                    if answer.outcome is Outcome.SUPPRESSED:
                        sending.add(
                            op,
                            "skipped",
                            reason="The contact is suppressed in DotDigital.",
                            code="suppressed",
                        )
                    else:
                        sending.add(
                            op,
                            "delivered",
                            contact_id=answer.contact.contact_id if answer.contact else None,
                        )
        if len(rest) + len(errors_seen) < len(first):
            kill_point("after_send")
        # A connection error pauses the claim (it raises): the others' outcomes are kept first.
        errors_seen.sort(key=lambda item: isinstance(item[1], errors.ConnectionProblem))
        for email, exc in errors_seen:
            handle_error(sending, by_email[email], exc)
        emails = rest + later
    if sending.singles_only:
        going = {op.pk for op in sending.importable([op for e in emails for op in by_email[e]])}
        emails = [e for e in emails if all(op.pk in going for op in by_email[e])]
    emails = _with_consent(writes, by_email, emails, consent_writes)
    if not emails:
        return
    try:
        handles = client.import_contacts([writes[e] for e in emails])
    except errors.DotDigitalError as exc:
        submitted = getattr(exc, "submitted", [])
        done = record_imports(sending, submitted, by_email, "contacts", None)
        unsent = [op for e in emails if e not in done for op in by_email[e]]
        handle_error(sending, unsent, exc)
        return
    kill_point("after_send")
    record_imports(sending, handles, by_email, "contacts", None)


def _with_consent(
    writes: dict[str, ContactWrite],
    by_email: dict[str, list[Operation]],
    emails: list[str],
    consent_writes: Sequence[tuple[Operation, ContactWrite]],
) -> list[str]:
    """`emails` to import, with each consent write joined to its contact's record (its channel
    status and consent records beside the data fields and lists) or as a record of its own."""
    going = set(emails)
    for op, change in consent_writes:
        email = change.key
        current = writes.get(email) if email in going else None
        writes[email] = (
            change
            if current is None
            else replace(
                current,
                email_status=change.email_status,
                opt_in_type=change.opt_in_type,
                email_type=change.email_type,
                consent_records=change.consent_records,
            )
        )
        by_email[email] = [*(by_email[email] if current is not None else []), op]
        if email not in going:
            going.add(email)
            emails.append(email)
    return emails


def _contact_id(sending: Sending, op: Operation) -> int | None:
    if op.customer_id:
        known = (
            Customer.objects.filter(pk=op.customer_id)
            .values_list("dotdigital_contact_id", flat=True)
            .first()
        )
        if known:
            return int(known)
    contact = sending.client.get_contact("email", op.record_key)
    return contact.contact_id if contact else None


def _send_list_removals(sending: Sending, ops: list[Operation]) -> None:
    for op in ops:
        try:
            contact_id = _contact_id(sending, op)
            if contact_id is None:  # never reached DotDigital: not on any list
                sending.add(op, "delivered")
                continue
            book = list_id(
                sending.client, sending.destination.pk, str(op.payload["list"]), sending.lists
            )
            with contextlib.suppress(errors.NotFound):  # not on the list: done already
                sending.client.remove_from_list(book, contact_id)
        except errors.DotDigitalError as exc:
            handle_error(sending, [op], exc)
            continue
        kill_point("after_send")
        sending.add(op, "delivered", contact_id=contact_id)


def _insight_write(op: Operation, scope: str = "contact") -> InsightWrite:
    """The record as the client writes it: contact-scoped records name their contact's email."""
    email = op.payload.get("contact_email") or (op.contact_key if scope == "contact" else None)
    return InsightWrite(key=op.record_key, json=op.payload.get("json") or {}, contact_email=email)


def _send_insight(sending: Sending, collection: str, ops: list[Operation], singles: int) -> None:
    """The first `singles` records as single-record calls, the rest (and any the single tier
    turns away) in an import."""
    client = sending.client
    schema = collection_schema(client, sending.destination.pk, collection)
    ready = []
    for op in ops:
        problems = check_record(op.payload.get("json") or {}, schema or {})
        if problems:
            schema_failure(sending, op, problems)
        else:
            ready.append(op)
    if not ready:
        return
    _, scope, kind = COLLECTIONS.get(collection, (collection, "contact", "custom"))
    if singles and schema is not None:
        first, later = ready[:singles], ready[singles:]
        answers = each_call(
            client,
            lambda write: client.put_insight_record(collection, write),
            [_insight_write(op, scope) for op in first],
        )
        rest: list[Operation] = []
        errors_seen: list[tuple[Operation, errors.DotDigitalError]] = []
        for op, answer in zip(first, answers, strict=True):
            if isinstance(answer, errors.RateLimited) and answer.status is None:
                rest.append(op)  # the single tier is spent: the rest in an import
            elif isinstance(answer, errors.NotFound):
                if "contactnotfound" in answer.code.lower():
                    sending.add(
                        op,
                        "retry",
                        reason="The contact is still being written.",
                        code=answer.code,
                        text=answer.text,
                        retry_after=0.5,
                    )
                    continue
                DestinationCache.objects.filter(
                    destination_id=sending.destination.pk, name=f"collection:{collection}"
                ).delete()
                sending.add(
                    op,
                    "retry",
                    reason="DotDigital did not know the insight collection yet: Syncdesk checks "
                    "it again and resends.",
                    code=answer.code,
                    retry_after=0.2,
                )
            elif isinstance(answer, errors.DotDigitalError):
                errors_seen.append((op, answer))
            else:
                sending.add(op, "delivered")
        if any(r.outcome == "delivered" for r in sending.results):
            kill_point("after_send")
        errors_seen.sort(key=lambda item: isinstance(item[1], errors.ConnectionProblem))
        for op, exc in errors_seen:
            handle_error(sending, [op], exc)
        ready = rest + later
    ready = sending.importable(ready)
    if not ready:
        return
    by_key = {op.record_key: [op] for op in ready}
    try:
        handles = client.import_insight(
            collection,
            [_insight_write(op, scope) for op in ready],
            scope=scope,
            collection_type=kind,
        )
    except errors.DotDigitalError as exc:
        done = record_imports(sending, getattr(exc, "submitted", []), by_key, "insight", collection)
        handle_error(sending, [op for op in ready if op.record_key not in done], exc)
        return
    kill_point("after_send")
    record_imports(sending, handles, by_key, "insight", collection)
    if schema is None:  # the import creates the collection: read its schema next time
        DestinationCache.objects.filter(
            destination_id=sending.destination.pk, name=f"collection:{collection}"
        ).delete()


# -- one lane of one destination ------------------------------------------------------------------


def send_due(destination: Connection, lane: str, client: DotDigitalClient | None = None) -> int:
    """Claim and send one claim's worth of due operations; returns how many were claimed."""
    if destination.is_paused:
        return 0
    if lane == Lane.BULK and not bulk_batch_ready(destination.pk):
        return 0
    owner = worker_token()
    limit = REALTIME_CLAIM if lane == Lane.REALTIME else BULK_CLAIM
    started = time.monotonic()
    if lane == Lane.REALTIME and started - _promoted.get(destination.pk, 0.0) >= PROMOTE_EVERY:
        _promoted[destination.pk] = started
        promote_blocking_contacts(destination.pk)
    client = client or client_for(destination, lane)
    with working(owner):
        if lane != Lane.REALTIME:
            return _send_claim(destination, lane, client, owner, started, limit)
        importer = realtime_importer(client, destination.pk)
        importing = importer.claim(owner)
        try:
            return _send_claim(destination, lane, client, owner, started, limit, importing)
        finally:
            if importing:
                importer.release(owner)


def nothing_to_send(destination_id: int, lane: str) -> bool:
    """Whether a claim now would find nothing: no operation of the lane is due (one EXISTS on
    `operation_due`), and for the realtime lane no look for blocking bulk contacts is due either.
    An idle runner asks this before each round instead of claiming (a claim with its budget,
    import and singles checks is a dozen statements: at 20 rounds a second, most of an idle
    realtime worker's CPU and PostgreSQL's)."""
    if (
        lane == Lane.REALTIME
        and time.monotonic() - _promoted.get(destination_id, 0.0) >= PROMOTE_EVERY
    ):
        return False
    return not due_operations(destination_id, lane).exists()


def realtime_importer(client: DotDigitalClient, destination_id: int) -> ConcurrencyCap:
    """One sender of a destination's realtime lane at a time sends its imports (the lane runner,
    or a staging task sending what it just planned); the others send single calls only. Two
    senders checking `realtime_import_blocks` at once would each send an import of a kind. A
    killed sender's turn runs out after `IMPORTER_SECONDS`."""
    return ConcurrencyCap(
        client.account_key,
        f"realtime-importer:{destination_id}",
        1,
        ttl=IMPORTER_SECONDS,
        backend=client.budget.backend,
    )


IMPORTER_SECONDS = 15.0


def _send_claim(
    destination: Connection,
    lane: str,
    client: DotDigitalClient,
    owner: str,
    started: float,
    limit: int,
    importing: bool = True,
) -> int:
    singles_only: list[int] = []
    if lane == Lane.REALTIME:
        blocked = realtime_import_blocks(destination.pk) if importing else None
        ids = (
            claim_operations(destination.pk, lane, owner, limit, exclude=blocked)
            if importing
            else []
        )
        if blocked is not None or not importing:  # what waits for an import may go singly
            singles_only = _claim_singles(destination.pk, client, owner, blocked)
            ids += singles_only
    else:
        ids = claim_operations(destination.pk, lane, owner, limit)
    if not ids:
        return 0
    kill_point("after_claim")
    claimed = time.monotonic()
    ops = list(Operation.objects.filter(pk__in=ids, lease_owner=owner).order_by("pk"))
    sending = Sending(client, destination, lane, owner, singles_only=set(singles_only))
    try:
        send_operations(sending, ops)
    except Paused:
        pass
    except errors.ConnectionProblem as exc:  # reading data fields, schemas or lists
        pause_destination(destination.pk, exc)
    except errors.DotDigitalError as exc:
        seen = {r.op_id for r in sending.results}
        retry_after = exc.retry_after if isinstance(exc, errors.RetryableError) else None
        sending.results.extend(
            Result(
                op.pk, "retry", reason=errors.explain(exc), code=exc.code, retry_after=retry_after
            )
            for op in ops
            if op.pk not in seen
        )
    except Exception:
        log.exception("sending %s operations failed", len(ops))
        seen = {r.op_id for r in sending.results}
        sending.results.extend(
            Result(op.pk, "retry", reason="Syncdesk failed while sending.")
            for op in ops
            if op.pk not in seen
        )
    put_back_unsent(sending, ops)
    sent = time.monotonic()
    record_results(sending.results, owner=owner)
    # Its imports' operations are recorded as sent: confirmation may poll them now.
    DeliveryBatch.objects.filter(lease_owner=owner, state=DeliveryBatch.State.SUBMITTED).update(
        lease_owner="", lease_until=None
    )
    if any(r.outcome in ("delivered", "sent") for r in sending.results):
        resume_backed_off(destination.pk, lane)
    log.debug(
        "%s lane: claimed %d in %.3fs, sent in %.3fs, recorded in %.3fs",
        lane,
        len(ids),
        claimed - started,
        sent - claimed,
        time.monotonic() - sent,
    )
    return len(ids)


def _claim_singles(
    destination_id: int, client: DotDigitalClient, owner: str, only: Q | None
) -> list[int]:
    """Claim the realtime writes waiting for the lane's next import (`only`; all due when None)
    to send singly, when they all fit the single tier's room. A few of many sent singly would
    spend the room and save no import, where a small collection sent whole saves one
    (`send_operations`): the import tier is what paces the lane's rounds."""
    room = min(SINGLE_MAX, single_capacity(client))
    if not room:
        return []
    due = due_operations(destination_id, Lane.REALTIME)
    if only is not None:
        due = due.filter(only)
    if due[: room + 1].count() > room:
        return []
    return claim_operations(destination_id, Lane.REALTIME, owner, room, only=only)


def put_back_unsent(sending: Sending, ops: Sequence[Operation]) -> None:
    """Operations left without an outcome go back unsent, as they were (no attempt counted): a
    connection pause's, or what a singles-only claim could not send singly (due again in a
    moment, for the lane's next import)."""
    seen = {r.op_id for r in sending.results}
    leftover = [op.pk for op in ops if op.pk not in seen]
    if not leftover:
        return
    held = [pk for pk in leftover if pk in sending.singles_only]
    due: F | Case = F("next_attempt_at")
    if held:  # one UPDATE, not a second for the held: each is a new row version
        later = timezone.now() + timedelta(seconds=HOLD_SECONDS)
        due = Case(When(pk__in=held, then=Value(later)), default=due)
    Operation.objects.filter(pk__in=leftover, lease_owner=sending.owner).update(
        state=Op.PENDING,
        lease_owner="",
        lease_until=None,
        attempts=F("attempts") - 1,
        next_attempt_at=due,
    )


RESUME_EVERY = 5.0  # seconds between a runner's looks for writes backing off after a fault
_resumed: dict[tuple[int, str], float] = {}


def resume_backed_off(destination_id: int, lane: str) -> int:
    """DotDigital took a write: the lane's writes still backing off after earlier errors (a
    timeout, a 503, a dropped connection, a 429) are due now, so delivery resumes at full rate
    within seconds of a fault ending rather than when each backoff runs out. At most every
    `RESUME_EVERY` seconds per lane; reads only the backed-off rows (`operation_due`). Returns
    how many it made due."""
    started = time.monotonic()
    if started - _resumed.get((destination_id, lane), 0.0) < RESUME_EVERY:
        return 0
    _resumed[(destination_id, lane)] = started
    now = timezone.now()
    return Operation.objects.filter(
        destination_id=destination_id,
        lane=lane,
        state=Op.PENDING,
        next_attempt_at__gt=now + timedelta(seconds=RESUME_EVERY),
        attempts__gt=0,
    ).update(next_attempt_at=now)


# A safety net, not a step of every claim: at full load its UPDATE over the pending outbox costs
# more PostgreSQL time than the claim it would precede.
PROMOTE_EVERY = 2.0  # seconds between a runner's looks for bulk contacts blocking realtime writes
_promoted: dict[int, float] = {}


def promote_blocking_contacts(destination_id: int) -> int:
    """Pending bulk contact upserts that realtime insight or list writes wait on move to the
    realtime lane: a dispatch's record must not wait minutes for the bulk lane's next batch.
    Returns how many moved."""
    # Two statements, not one with a subquery: on an outbox that grows faster than its statistics
    # PostgreSQL joins the two sides by a nested loop over every pair.
    waiting = list(
        Operation.objects.filter(
            destination_id=destination_id,
            lane=Lane.REALTIME,
            state=Op.PENDING,
            kind__in=(Operation.Kind.INSIGHT, Operation.Kind.LIST_ADD, Operation.Kind.LIST_REMOVE),
        )
        .exclude(contact_key="")
        .values_list("contact_key", flat=True)
        .distinct()[:5000]
    )
    if not waiting:
        return 0
    return Operation.objects.filter(
        destination_id=destination_id,
        lane=Lane.BULK,
        kind=Operation.Kind.CONTACT,
        state=Op.PENDING,
        contact_key__in=waiting,
    ).update(lane=Lane.REALTIME)


def bulk_batch_ready(destination_id: int) -> bool:
    """The bulk lane sends when a batch is worth an import call: `BULK_MIN` operations due, or
    the oldest due one has waited `BULK_MAX_WAIT` (calls per 10,000 events stay low), or it has
    waited `BULK_IDLE_WAIT` and nothing upstream (events to stage or to plan) would add to the
    batch: once a burst is over, waiting longer only adds latency."""
    now = timezone.now()
    due = due_operations(destination_id, Lane.BULK, now)
    if due.filter(next_attempt_at__lte=now - BULK_MAX_WAIT).exists():
        return True
    # Which due writes can go now (their contact known or on its way) takes a look at each row's
    # contact; the lane's due rows in the index are a bound on them that takes none. The runner
    # asks this every loop while a backlog builds: counting the sendable among up to `BULK_MIN`
    # was 15 ms of PostgreSQL a time at full load, most often to learn there were too few.
    in_index = Operation.objects.filter(
        destination_id=destination_id,
        lane=Lane.BULK,
        state__in=(Op.PENDING, Op.SENDING),
        next_attempt_at__lte=now,
    )
    if in_index[:BULK_MIN].count() >= BULK_MIN and due[:BULK_MIN].count() >= BULK_MIN:
        return True
    if not due.filter(next_attempt_at__lte=now - BULK_IDLE_WAIT).exists():
        return False
    # Received, not held: a hold re-checks now and then for days and must not keep the batch.
    upstream = SourceEvent.objects.filter(
        state=SourceEvent.State.RECEIVED, flow__destination_id=destination_id
    )
    return not (upstream.exists() or ready_events(destination_id=destination_id).exists())
