"""What the configuration pages do beyond saving a form: DotDigital's data fields for the type check,
the dry run (the delivery planner itself, in a transaction that is rolled back), SKU alias CSV
import and export, flows removed with their schedules, and the runbook built from the routing.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import Count
from django.urls import reverse
from django.utils import timezone

from accounts import audit
from accounts.models import ConfigChange, Team, Workspace
from connectors.budget import Lane
from connectors.dotdigital.client import DotDigitalClient
from connectors.dotdigital.errors import ConnectorError, DotDigitalError, explain
from connectors.dotdigital.types import DataField
from connectors.models import Connection
from exceptions_inbox.kinds import KINDS, Kind
from exceptions_inbox.models import Occurrence, RoutingRule
from monitoring.models import (
    DirectEnrolment,
    FieldMapping,
    Flow,
    FlowWatch,
    OperationEvent,
    Product,
    ProgramEnrolment,
    Schedule,
    SkuAlias,
    SourceEvent,
)
from monitoring.pipeline.claims import worker_token
from monitoring.pipeline.flows import remove_schedule
from monitoring.pipeline.hooks import retry_events
from monitoring.pipeline.ingest import ingest_events
from monitoring.pipeline.mapping import DATA_FIELD_TYPES
from monitoring.pipeline.normalise import clean_sku, sku_match_key
from monitoring.pipeline.plan import plan_batch
from monitoring.pipeline.staging.run import stage_batch
from monitoring.pipeline.transforms import clean_sku_by_rules

logger = logging.getLogger(__name__)

# A person waits on these pages: never wait long on the shared rate budget.
PAGE_MAX_WAIT = 2.0

# Audited objects that are not rows of ours (`audit.record_change(..., object_type=...)`).
DOTDIGITAL_LIST = "dotdigital.list"  # object_id: the DotDigital connection
DOTDIGITAL_FIELD = "dotdigital.datafield"  # object_id: the flow it was created for

MAPPING_FIELDS = ["target", "source_path", "type", "is_aggregate", "transform", "enabled"]
ALIAS_FIELDS = ["flow", "alias_key", "sku"]
SCHEDULE_FIELDS = ["name", "flow", "task", "args", "every_seconds", "crontab", "queue", "enabled"]
ROUTING_FIELDS = ["kind", "flow_key", "team"]


WRITE_FIELDS = ["source_path", "type", "is_aggregate", "transform"]  # what a data field gets


def other_flows_writing(flow: Flow) -> dict[str, int]:
    """Data field (upper case) → how many other flows to the same DotDigital account write it."""
    if flow.destination_id is None:
        return {}
    rows = (
        FieldMapping.objects.filter(flow__destination_id=flow.destination_id, enabled=True)
        .exclude(flow_id=flow.pk)
        .values("target")
        .annotate(n=Count("flow", distinct=True))
    )
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["target"].upper()] = counts.get(row["target"].upper(), 0) + row["n"]
    return counts


def change_other_writers(
    saved: FieldMapping, others: Iterable[FieldMapping], workspace: Workspace, actor: Any
) -> list[str]:
    """Give the other flows' mappings of the same data field the write `saved` now makes (their
    on/off stays theirs), one audit row each; the names of the flows changed."""
    names = []
    for other in others:
        before = audit.snapshot(other, MAPPING_FIELDS)
        for name in WRITE_FIELDS:
            setattr(other, name, getattr(saved, name))
        other.save(update_fields=WRITE_FIELDS)
        audit.record_change(
            workspace,
            actor,
            other,
            ConfigChange.Action.CHANGED,
            before,
            audit.snapshot(other, MAPPING_FIELDS),
            note=f"Flow {other.flow.name}: changed with the flow {saved.flow.name}'s mapping",
        )
        names.append(other.flow.name)
    return names


def client_for(destination: Connection) -> DotDigitalClient:
    return DotDigitalClient.for_connection(destination, lane=Lane.REALTIME, max_wait=PAGE_MAX_WAIT)


class AccountFields:
    """The DotDigital account's data fields, read at most once per request (`fields()`)."""

    def __init__(self, destination: Connection | None) -> None:
        self.destination = destination
        self._fields: dict[str, DataField] | None = None
        self.error = ""

    def fields(self) -> dict[str, DataField] | None:
        """Name (upper case) → data field, or None when the account cannot be read."""
        if self._fields is not None:
            return self._fields
        if self.destination is None:
            self.error = "The flow delivers to no DotDigital connection."
            return None
        if self.error:
            return None
        try:
            found = client_for(self.destination).list_data_fields()
        except (DotDigitalError, ConnectorError) as exc:
            self.error = "Could not read the account's data fields. " + explain(
                exc, retry="Reload the page in a minute."
            )
            logger.info("data fields of connection %s: %s", self.destination.pk, exc)
            return None
        self._fields = {f.name.upper(): f for f in found}
        return self._fields

    def type_problem(self, target: str, mapping_type: str) -> str | None:
        """Why the mapping's type does not fit the account's field (None if it fits or is unknown)."""
        fields = self.fields()
        if fields is None:
            return None
        found = fields.get(target.upper())
        if found is None:
            return None
        wanted = DATA_FIELD_TYPES.get(mapping_type, "")
        if found.type.lower() != wanted.lower():
            return (
                f"{found.name} is a {found.type} data field in DotDigital; this mapping "
                f"sends {wanted or mapping_type}."
            )
        return None

    def create(self, name: str, mapping_type: str) -> DataField:
        field_ = client_for(self._destination()).create_data_field(
            name.upper(), DATA_FIELD_TYPES.get(mapping_type, "String")
        )
        if self._fields is not None:
            self._fields[field_.name.upper()] = field_
        return field_

    def _destination(self) -> Connection:
        if self.destination is None:
            raise ConnectorError("The flow delivers to no DotDigital connection.")
        return self.destination


# -- the dry run -----------------------------------------------------------------------------


class _Rollback(Exception):
    pass


@dataclass
class DryRunResult:
    """What the planner made of one event: its operations as delivery would send them."""

    operations: list[dict[str, Any]] = field(default_factory=list)
    enrolments: list[int] = field(default_factory=list)  # program ids
    state: str = ""
    reason: str = ""
    problems: list[str] = field(default_factory=list)
    event_label: str = ""
    also: list[str] = field(default_factory=list)  # the other flows a save would change too


def dry_run(
    flow: Flow,
    *,
    event: SourceEvent | None = None,
    pasted: dict[str, Any] | None = None,
    draft: FieldMapping | None = None,
) -> DryRunResult:
    """Run delivery's own planner (`plan.plan_batch`) for one event, with the draft mapping saved,
    and roll everything back: nothing is stored, nothing is sent, no task is woken (on-commit
    callbacks of a rolled-back transaction are dropped). A pasted event is taken in and staged
    first (ingest, then staging's `stage_batch`), in the same transaction."""
    result = DryRunResult()
    try:
        with transaction.atomic():
            if draft is not None:
                draft.save()
            owner = worker_token()
            if pasted is not None:
                event = _stage_pasted(flow, pasted, owner, result)
            if event is None:
                raise _Rollback
            result.event_label = f"{event.event_type} {event.source_event_id}"
            if event.state != SourceEvent.State.READY and pasted is not None:
                result.state = event.get_state_display()
                result.reason = event.reason or event.hold
                raise _Rollback
            # As if it had just been staged: the planner takes READY events it holds the lease of.
            SourceEvent.objects.filter(pk=event.pk).update(
                state=SourceEvent.State.READY, lease_owner=owner, lease_until=None
            )
            plan_batch([event.pk], owner)
            event.refresh_from_db()
            result.state = event.get_state_display()
            result.reason = event.reason
            result.operations = _planned_operations(event)
            result.enrolments = sorted(
                ProgramEnrolment.objects.filter(event_id=event.pk).values_list(
                    "program_id", flat=True
                )
            )
            raise _Rollback
    except _Rollback:
        pass
    return result


def _stage_pasted(
    flow: Flow, pasted: dict[str, Any], owner: str, result: DryRunResult
) -> SourceEvent:
    """Take a pasted event in and stage it, as the dry run's event; raises `_Rollback` with the
    problems on `result` when the flow would not take it."""
    pasted = {**pasted, "source_event_id": f"dry-run:{owner}"}
    outcome = ingest_events(flow.source, [pasted], via=SourceEvent.Via.WEBHOOK)[0]
    if outcome.status != "accepted" or outcome.event_id is None:
        result.problems = [
            f"{e.get('path') or 'event'}: {e.get('message')}" for e in (outcome.errors or [])
        ] or [f"The event was not taken ({outcome.status})."]
        raise _Rollback
    event = SourceEvent.objects.get(pk=outcome.event_id)
    if event.flow_id != flow.pk:
        result.problems = [
            f"This flow does not take {event.event_type} events "
            "(or another flow of its source takes them first)."
        ]
        raise _Rollback
    SourceEvent.objects.filter(pk=event.pk).update(lease_owner=owner)
    stage_batch([event.pk], owner)
    event.refresh_from_db()
    return event


def _planned_operations(event: SourceEvent) -> list[dict[str, Any]]:
    """The writes the planner queued for the event, as the dry run page shows them."""
    operations = [
        {
            "key": op.key,
            "kind": op.kind,
            "record_key": op.record_key,
            "collection": op.collection,
            "payload": op.payload,
            "payload_json": json.dumps(op.payload, indent=2, sort_keys=True),
            "merged": op.version > 1,
        }
        for op in (
            link.operation
            for link in OperationEvent.objects.filter(event_id=event.pk).select_related("operation")
        )
    ]
    operations.sort(key=lambda o: o["key"])
    return operations


# -- SKU aliases: cleaning, CSV --------------------------------------------------------------


def alias_key_for(workspace: Workspace, flow: Flow | None, alias: str) -> str:
    """The alias as staging matches it: trimmed, NFC, through the flow's cleaning rules, then
    case-folded unless the flow keeps case (for every flow: no flow's rules, and folded unless
    every flow of the workspace keeps case)."""
    if flow is not None:
        case_sensitive = flow.sku_case_sensitive
        return sku_match_key(
            clean_sku_by_rules(clean_sku(alias), flow.sku_cleaning), case_sensitive
        )
    flows = Flow.objects.filter(workspace=workspace)
    case_sensitive = flows.exists() and not flows.filter(sku_case_sensitive=False).exists()
    return sku_match_key(clean_sku(alias), case_sensitive)


def sku_problem(workspace: Workspace, sku: str) -> str | None:
    """Why an alias cannot point at `sku` (once a catalogue is loaded, it must be in it)."""
    sku = clean_sku(sku)
    if not sku:
        return "Give the catalogue SKU."
    products = Product.objects.filter(workspace=workspace)
    if products.exists() and not products.filter(sku=sku).exists():
        if products.filter(sku_key=sku.casefold()).exists():
            return f"{sku} is not in the catalogue with this case."
        return f"{sku} is not in the catalogue."
    return None


def retry_sku_gaps(flow: Flow) -> int:
    """Retry the events of the flow's open SKU gaps (after its cleaning rules changed): staging
    checks them again under today's rules. Returns how many occurrences were retried."""
    occurrences = list(
        Occurrence.objects.filter(
            group__workspace_id=flow.workspace_id,
            group__kind="sku_mapping_gap",
            group__flow_key=flow.key,
            state="open",
        )
    )
    retry_events(occurrences)
    return len(occurrences)


CSV_HEADER = ["alias", "sku", "flow"]


def export_aliases(workspace: Workspace) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    for alias in (
        SkuAlias.objects.filter(workspace=workspace)
        .select_related("flow")
        .order_by("alias_key", "pk")
    ):
        writer.writerow(
            [
                _csv_safe(alias.alias_key),
                _csv_safe(alias.sku),
                alias.flow.name if alias.flow else "",
            ]
        )
    return out.getvalue()


def _csv_safe(value: str) -> str:
    """A cell a spreadsheet will not run as a formula."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


@dataclass
class ImportResult:
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line, message)
    created: int = 0
    changed: int = 0
    unchanged: int = 0


def import_aliases(workspace: Workspace, actor: Any, text: str) -> ImportResult:
    """Aliases from CSV (header `alias,sku,flow`; flow by name, empty = every flow). Every line is
    checked first; with any error nothing is imported and each error names its line."""
    result = ImportResult()
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        result.errors.append((1, "The file is empty."))
        return result
    header = [h.strip().lower() for h in rows[0]]
    if header[:2] != ["alias", "sku"]:
        result.errors.append((1, "The first line must be the header: alias,sku,flow"))
        return result
    wanted = _wanted_aliases(workspace, rows, result)
    if result.errors:
        return result
    with transaction.atomic():
        _save_aliases(workspace, actor, wanted, result)
    return result


# The aliases a CSV asks for, by (flow id or None, alias key): (flow, catalogue SKU, line).
WantedAliases = dict[tuple[int | None, str], tuple[Flow | None, str, int]]


def _wanted_aliases(
    workspace: Workspace, rows: list[list[str]], result: ImportResult
) -> WantedAliases:
    """The CSV's lines after the header, checked; each problem goes to `result.errors`."""
    flows = {f.name.casefold(): f for f in Flow.objects.filter(workspace=workspace)}
    wanted: WantedAliases = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = [*row, "", "", ""][:3]
        alias, sku, flow_name = (c.strip() for c in cells)
        alias, sku = alias.removeprefix("'"), sku.removeprefix("'")
        flow = flows.get(flow_name.casefold()) if flow_name else None
        problem = _alias_line_problem(workspace, row, alias, sku, flow_name, flow)
        if problem:
            result.errors.append((number, problem))
            continue
        key = alias_key_for(workspace, flow, alias)
        slot = (flow.pk if flow else None, key)
        if slot in wanted:
            result.errors.append((number, f"{alias} is already on line {wanted[slot][2]}."))
            continue
        wanted[slot] = (flow, clean_sku(sku), number)
    return wanted


def _alias_line_problem(
    workspace: Workspace, row: list[str], alias: str, sku: str, flow_name: str, flow: Flow | None
) -> str | None:
    """Why one CSV line cannot be imported, or None."""
    if len(row) > 3 and any(c.strip() for c in row[3:]):
        return "Three columns at most: alias, sku, flow."
    if flow_name and flow is None:
        return f"No flow is called “{flow_name}”."
    if not clean_sku(alias):
        return "The alias is empty."
    if len(alias) > 200 or len(sku) > 200:
        return "At most 200 characters."
    return sku_problem(workspace, sku)


def _save_aliases(
    workspace: Workspace, actor: Any, wanted: WantedAliases, result: ImportResult
) -> None:
    """Create or change the wanted aliases, each with its audit row; counted on `result`."""
    existing = {(a.flow_id, a.alias_key): a for a in SkuAlias.objects.filter(workspace=workspace)}
    for (flow_id, key), (flow, sku, _) in wanted.items():
        current = existing.get((flow_id, key))
        if current is None:
            alias_row = SkuAlias.objects.create(
                workspace=workspace, flow=flow, alias_key=key, sku=sku
            )
            audit.record_change(
                workspace,
                actor,
                alias_row,
                ConfigChange.Action.CREATED,
                None,
                audit.snapshot(alias_row, ALIAS_FIELDS),
                note="CSV import",
            )
            result.created += 1
        elif current.sku != sku:
            before = audit.snapshot(current, ALIAS_FIELDS)
            current.sku = sku
            current.save(update_fields=["sku"])
            audit.record_change(
                workspace,
                actor,
                current,
                ConfigChange.Action.CHANGED,
                before,
                audit.snapshot(current, ALIAS_FIELDS),
                note="CSV import",
            )
            result.changed += 1
        else:
            result.unchanged += 1


# -- flows and their schedules ---------------------------------------------------------------


def delete_flow(flow: Flow, actor: Any) -> None:
    """Remove a flow with its schedules (and their beat entries: `remove_schedule`)."""
    with transaction.atomic():
        for schedule in Schedule.objects.filter(flow=flow):
            audit.record_change(
                flow.workspace,
                actor,
                schedule,
                ConfigChange.Action.DELETED,
                note=f"Removed with its flow {flow.name}.",
            )
            remove_schedule(schedule)
        audit.record_change(flow.workspace, actor, flow, ConfigChange.Action.DELETED)
        flow.delete()


# -- routing and the runbook -----------------------------------------------------------------


@dataclass
class KindOwner:
    kind: Kind
    team: Team | None
    by_rule: bool
    per_flow: list[tuple[str, Team]] = field(default_factory=list)  # (flow name, team)


def routing_table(workspace: Workspace) -> list[KindOwner]:
    """Who owns each kind: for every flow (a rule, else the kind's default team), and per flow."""
    teams = {t.slug: t for t in workspace.teams.all()}
    flows = {f.key: f.name for f in Flow.objects.filter(workspace=workspace)}
    rules: dict[str, dict[str, Team]] = {}
    for rule in RoutingRule.objects.filter(workspace=workspace).select_related("team"):
        rules.setdefault(rule.kind, {})[rule.flow_key] = rule.team
    out = []
    for slug in sorted(KINDS, key=lambda s: KINDS[s].title):
        kind = KINDS[slug]
        mine = rules.get(slug, {})
        team = mine.get("") or teams.get(kind.default_team)
        per_flow = sorted((flows.get(key, key), t) for key, t in mine.items() if key)
        out.append(KindOwner(kind, team, "" in mine, per_flow))
    return out


DAILY_CHECKS = (
    "Open the inbox's Open tab filtered to your team: work the oldest groups first.",
    "Look at the flows page: every flow healthy, no backlog growing, no connection paused.",
    "Acknowledge (or resolve) every triggered alert you own; unacknowledged ones escalate.",
    "Read the last reconciliation run for differences to repair.",
)


@dataclass
class RunbookTeam:
    team: Team
    kinds: list[tuple[Kind, str]]  # (kind, where: "every flow" or flow names)
    alerts: list[str]


def runbook(workspace: Workspace) -> list[RunbookTeam]:
    """Per team: the exception kinds it owns (and where) and the flows whose alerts it gets."""
    table = routing_table(workspace)
    by_team: dict[int, RunbookTeam] = {
        t.pk: RunbookTeam(t, [], []) for t in workspace.teams.order_by("name")
    }
    for owner in table:
        if owner.team is not None and owner.team.pk in by_team:
            overridden = [name for name, t in owner.per_flow if t.pk != owner.team.pk]
            where = "every flow" + (f" except {', '.join(overridden)}" if overridden else "")
            by_team[owner.team.pk].kinds.append((owner.kind, where))
        for flow_name, team in owner.per_flow:
            if team.pk in by_team and (owner.team is None or team.pk != owner.team.pk):
                by_team[team.pk].kinds.append((owner.kind, flow_name))
    slugs = {t.team.slug: t for t in by_team.values()}
    for watch in FlowWatch.objects.filter(flow__workspace=workspace).select_related("flow"):
        entry = slugs.get(watch.owning_team)
        if entry is not None:
            entry.alerts.append(watch.flow.name)
    return list(by_team.values())


def recent_events(flow: Flow, limit: int = 20) -> Iterable[SourceEvent]:
    return (
        SourceEvent.objects.filter(flow=flow)
        .exclude(state=SourceEvent.State.SKIPPED)
        .order_by("-received_at", "-pk")[:limit]
    )


def now() -> Any:
    return timezone.now()


# -- where the audit page links each object ----------------------------------------------------


def _ws(change: ConfigChange) -> dict[str, Any]:
    return {"ws": change.workspace.slug}


def _alive(model: Any, change: ConfigChange) -> Any:
    """The changed object when it still exists in the change's workspace, else None."""
    if not change.object_id.isdigit():
        return None
    return model.objects.filter(pk=int(change.object_id), workspace=change.workspace).first()


def _connection_page(change: ConfigChange) -> str:
    if _alive(Connection, change):
        return reverse("connectors:detail", kwargs={**_ws(change), "pk": change.object_id})
    return reverse("connectors:list", kwargs=_ws(change))


def _flow_page(change: ConfigChange) -> str:
    if _alive(Flow, change):
        return reverse("config:flow", kwargs={**_ws(change), "pk": change.object_id})
    return reverse("config:flows", kwargs=_ws(change))


def _mapping_page(change: ConfigChange) -> str:
    found = (
        FieldMapping.objects.filter(
            pk=int(change.object_id), flow__workspace=change.workspace
        ).first()
        if change.object_id.isdigit()
        else None
    )
    if found is not None:
        kwargs = {**_ws(change), "pk": found.flow_id, "mapping": found.pk}
        return reverse("config:mapping", kwargs=kwargs)
    return reverse("config:flows", kwargs=_ws(change))


def _schedule_page(change: ConfigChange) -> str:
    if _alive(Schedule, change):
        return reverse("config:schedule", kwargs={**_ws(change), "pk": change.object_id})
    return reverse("config:schedules", kwargs=_ws(change))


def _data_field_page(change: ConfigChange) -> str:  # object_id: the flow it was created for
    if _alive(Flow, change):
        return reverse("config:mappings", kwargs={**_ws(change), "pk": change.object_id})
    return reverse("config:flows", kwargs=_ws(change))


def _lists_page(change: ConfigChange) -> str:  # object_id: the DotDigital connection
    anchor = f"#destination-{change.object_id}" if change.object_id else ""
    return reverse("config:lists", kwargs=_ws(change)) + anchor


def _enrolment_page(change: ConfigChange) -> str:
    found = _alive(DirectEnrolment, change)
    anchor = f"#destination-{found.destination_id}" if found else ""
    return reverse("config:lists", kwargs=_ws(change)) + anchor


def _page(name: str) -> audit.ObjectPage:
    return lambda change: reverse(name, kwargs=_ws(change))


def register_audit_pages() -> None:
    """Tell the audit (accounts, which knows no other app) where each configuration object of the
    engine, and a connection, is shown: its own page while it exists, else its kind's page."""
    audit.register_object_page("connectors.connection", _connection_page)
    audit.register_object_page("monitoring.flow", _flow_page)
    audit.register_object_page("monitoring.fieldmapping", _mapping_page)
    audit.register_object_page("monitoring.skualias", _page("config:aliases"))
    audit.register_object_page("monitoring.schedule", _schedule_page)
    audit.register_object_page("exceptions_inbox.routingrule", _page("config:routing"))
    meta = DirectEnrolment._meta
    audit.register_object_page(f"{meta.app_label}.{meta.model_name}", _enrolment_page)
    audit.register_object_page(DOTDIGITAL_LIST, _lists_page)
    audit.register_object_page(DOTDIGITAL_FIELD, _data_field_page)
