"""Forms of the configuration pages (flows, mappings, dry run, aliases, schedules, routing, programs).

Every check reports on its field. Choices are scoped to the workspace: a form is built with it.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.schedules import ParseException, crontab_parser
from django import forms
from django.core.exceptions import ValidationError

from accounts.models import Team, Workspace
from connectors.models import Connection
from exceptions_inbox import kinds as inbox_kinds
from exceptions_inbox.models import RoutingRule
from monitoring.configuration.services import AccountFields, alias_key_for, sku_problem
from monitoring.models import FieldMapping, Flow, FlowWatch, Schedule, SkuAlias, SourceEvent
from monitoring.pipeline import transforms
from monitoring.pipeline.mapping import COLLECTIONS, DATA_FIELD_TYPES
from monitoring.pipeline.normalise import clean_sku

if TYPE_CHECKING:
    # django-stubs types a ModelForm by its model; Django's class takes no subscript at run time.
    FlowModelForm = forms.ModelForm[Flow]
    WatchModelForm = forms.ModelForm[FlowWatch]
    MappingModelForm = forms.ModelForm[FieldMapping]
    AliasModelForm = forms.ModelForm[SkuAlias]
    ScheduleModelForm = forms.ModelForm[Schedule]
else:
    FlowModelForm = WatchModelForm = MappingModelForm = forms.ModelForm
    AliasModelForm = ScheduleModelForm = forms.ModelForm

T = FieldMapping.Type

# What a mapping can read: paths in the merged state (`mapping.resolve`) and their natural type.
SOURCE_PATHS: dict[str, tuple[str, str]] = {
    "customer.first_name": ("First name", T.STRING),
    "customer.last_name": ("Last name", T.STRING),
    "customer.email": ("Email", T.STRING),
    "customer.phone": ("Phone", T.STRING),
    "customer.is_guest": ("Is a guest", T.BOOLEAN),
    "customer.order_count": ("Orders (count)", T.NUMERIC),
    "customer.lifetime_value": ("Lifetime value", T.NUMERIC),
    "customer.last_order_at": ("Last order date", T.DATE),
    "customer.last_dispatch_at": ("Last dispatch date", T.DATE),
    "customer.refunded": ("Has a refund", T.BOOLEAN),
}
AGGREGATE_PATHS = {
    "customer.order_count",
    "customer.lifetime_value",
    "customer.last_order_at",
    "customer.last_dispatch_at",
    "customer.refunded",
}
DATA_FIELD_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,19}$")


class FlowForm(FlowModelForm):
    """A flow's thresholds and policies (its source is chosen once, at creation)."""

    class Meta:
        model = Flow
        fields = [
            "name",
            "source",
            "destination",
            "is_active",
            "guest_policy",
            "join_key",
            "hold_orphans",
            "orphan_hold_seconds",
            "hold_dispatch_for_scan",
            "scan_hold_seconds",
            "lag_threshold_seconds",
            "masters_products",
            "sku_case_sensitive",
            "payload_retention_days",
        ]
        labels = {
            "payload_retention_days": "Payload retention (days)",
            "orphan_hold_seconds": "Orphan hold (seconds)",
            "scan_hold_seconds": "Carrier-scan hold (seconds)",
            "lag_threshold_seconds": "Lag threshold (seconds)",
            "sku_case_sensitive": "SKUs are case-sensitive (else case is folded before matching)",
        }

    def __init__(self, workspace: Workspace, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.workspace = workspace
        connections = Connection.objects.filter(workspace=workspace)
        dest = self.fields["destination"]
        assert isinstance(dest, forms.ModelChoiceField)
        dest.queryset = connections.filter(kind=Connection.Kind.DOTDIGITAL)
        if self.instance.pk:
            del self.fields["source"]
        else:
            source = self.fields["source"]
            assert isinstance(source, forms.ModelChoiceField)
            source.queryset = connections.exclude(kind=Connection.Kind.DOTDIGITAL)
        for name in ("orphan_hold_seconds", "scan_hold_seconds", "lag_threshold_seconds"):
            field = self.fields[name]
            assert isinstance(field, forms.IntegerField)
            field.min_value = 60
            field.validators.append(_at_least(60))
        retention = self.fields["payload_retention_days"]
        assert isinstance(retention, forms.IntegerField)
        retention.min_value = 1
        retention.validators.append(_at_least(1, "day"))

    def clean_name(self) -> str:
        name = str(self.cleaned_data["name"]).strip()
        clash = Flow.objects.filter(workspace=self.workspace, name__iexact=name)
        if self.instance.pk:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():
            raise ValidationError("Another flow has this name.")
        return name

    def save(self, commit: bool = True) -> Flow:
        self.instance.workspace = self.workspace
        return super().save(commit)


def _at_least(limit: int, unit: str = "second") -> Any:
    def check(value: int) -> None:
        if value is not None and value < limit:
            raise ValidationError(f"At least {limit} {unit}{'' if limit == 1 else 's'}.")

    return check


class WatchForm(WatchModelForm):
    """The flow's alerting: stalled grace and trading hours, escalation, owning team, webhook.
    The webhook URL holds a token: write-only (blank keeps it)."""

    webhook_url = forms.URLField(
        assume_scheme="https",
        required=False,
        widget=forms.PasswordInput(render_value=False),
        label="Alert webhook (Slack-compatible)",
        help_text="Write-only: blank keeps the stored one.",
    )
    clear_webhook = forms.BooleanField(required=False, label="Remove the alert webhook")

    class Meta:
        model = FlowWatch
        fields = [
            "enabled",
            "stalled_grace_minutes",
            "trading_days",
            "trading_start",
            "trading_end",
            "trading_timezone",
            "lag_for_minutes",
            "escalate_after_minutes",
            "owning_team",
            "reconcile_sample",
            "reconcile_source_days",
        ]

    def __init__(self, workspace: Workspace, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["owning_team"] = forms.ChoiceField(
            choices=[(t.slug, t.name) for t in workspace.teams.order_by("name")],
            help_text="Gets this flow's lag and stalled alerts.",
        )

    def clean_trading_days(self) -> str:
        days = str(self.cleaned_data["trading_days"]).strip()
        if not days or not set(days) <= set("0123456") or len(set(days)) != len(days):
            raise ValidationError("Weekday digits, Monday = 0, each once (e.g. 01234).")
        return "".join(sorted(days))

    def clean_trading_timezone(self) -> str:
        name = str(self.cleaned_data["trading_timezone"]).strip()
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValidationError("Not a time zone name (e.g. Europe/London).") from None
        return name

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("trading_start"), data.get("trading_end")
        if start and end and start >= end:
            self.add_error("trading_end", "Trading ends after it starts.")
        return data

    def save(self, commit: bool = True) -> FlowWatch:
        watch = super().save(commit=False)
        if self.cleaned_data.get("clear_webhook"):
            watch.webhook_url = ""
        elif self.cleaned_data.get("webhook_url"):
            watch.webhook_url = self.cleaned_data["webhook_url"]
        if commit:
            watch.save()
        return watch


class MappingForm(MappingModelForm):
    """One canonical field → one DotDigital data field, with its transform and a type check
    against the account's field (`account`, read once per request)."""

    source_path = forms.ChoiceField(
        label="Canonical field",
        choices=[(p, f"{label} ({p})") for p, (label, _) in SOURCE_PATHS.items()],
    )

    class Meta:
        model = FieldMapping
        fields = ["target", "source_path", "type", "transform", "enabled"]
        labels = {"target": "DotDigital data field", "transform": "Transform"}
        help_texts = {
            "transform": "Steps split by |: trim, upper, lower, title, date:%d/%m/%Y (Text "
            "fields), date_only (Date fields), scale:2, map:1=Bronze;2=Silver;3=Gold"
        }

    for_all_flows = forms.BooleanField(required=False)

    def __init__(self, flow: Flow, account: AccountFields, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flow = flow
        self.account = account
        self.missing_field = ""
        # The other flows' mappings this save changes too (filled by `clean` when ticked).
        self.also_changed: list[FieldMapping] = []
        target = str(self.data.get("target") or self.instance.target or "").strip().upper()
        writers = other_writers(flow, target) if target else []
        if writers:
            names = ", ".join(f"“{m.flow.name}”" for m in writers)
            field = self.fields["for_all_flows"]
            field.label = f"Change {target} for all {len(writers) + 1} flows that write it"
            field.help_text = (
                f"{names} also write{'s' if len(writers) == 1 else ''} {target} to the same "
                "DotDigital account: one data field takes one mapping, so they change together "
                "(one audit row per flow)."
            )
            field.initial = True
        else:
            del self.fields["for_all_flows"]

    def clean_target(self) -> str:
        target = str(self.cleaned_data["target"]).strip().upper()
        if not DATA_FIELD_NAME.match(target):
            raise ValidationError(
                "A DotDigital data field name: a letter, then letters, digits or _ (20 at most)."
            )
        if target.casefold() in {c.casefold() for c in COLLECTIONS}:
            raise ValidationError(
                f"{target} is an insight collection Syncdesk writes itself; map a data field."
            )
        mine = FieldMapping.objects.filter(flow=self.flow, target__iexact=target)
        if self.instance.pk:
            mine = mine.exclude(pk=self.instance.pk)
        if mine.exists():
            raise ValidationError(
                f"{target} is already written by this flow's mapping from "
                f"{mine[0].source_path}: one data field, one mapping."
            )
        return target

    def clean_transform(self) -> str:
        text = str(self.cleaned_data.get("transform") or "").strip()
        try:
            transforms.parse(text)
        except transforms.TransformError as exc:
            raise ValidationError(str(exc)) from None
        return text

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        target, path, kind = data.get("target"), data.get("source_path"), data.get("type")
        if not (target and path and kind):
            return data
        natural = SOURCE_PATHS[path][1]
        steps = [name for name, _ in transforms.parse(str(data.get("transform") or ""))]
        if "date" in steps:
            natural = T.STRING
            if kind != T.STRING:
                self.add_error("transform", "date:<format> makes text: use it on a Text field.")
        if "date_only" in steps and kind != T.DATE:
            self.add_error("transform", "date_only is for Date fields.")
        if "map" in steps:
            natural = kind  # the map's values decide
        if kind != T.STRING and natural != kind:
            self.add_error(
                "type",
                f"{SOURCE_PATHS[path][0]} is {T(natural).label.lower()}; it cannot be sent as "
                f"{T(kind).label.lower()}.",
            )
        writers = other_writers(self.flow, target)
        differ = [
            m
            for m in writers
            if (m.source_path, m.transform, m.type) != (path, data.get("transform") or "", kind)
        ]
        if data.get("for_all_flows"):
            self.also_changed = differ
        elif differ:
            other = differ[0]
            self.add_error(
                "target",
                f"{target} is already written by the flow “{other.flow.name}” (from "
                f"{other.source_path}) to the same DotDigital account: one data field, one "
                f"mapping. Tick “Change {target} for all {len(writers) + 1} flows” to change "
                "them together.",
            )
            return data
        fields = self.account.fields()
        if fields is not None and target not in fields:
            self.missing_field = target
            self.add_error(
                "target",
                f"{target} is not a data field in the DotDigital account. Create it from this "
                "page, or pick an existing one.",
            )
        else:
            problem = self.account.type_problem(target, kind)
            if problem:
                self.add_error("type", problem)
        data["is_aggregate"] = path in AGGREGATE_PATHS
        return data

    def save(self, commit: bool = True) -> FieldMapping:
        self.instance.flow = self.flow
        self.instance.is_aggregate = self.cleaned_data.get("is_aggregate", False)
        return super().save(commit)


def other_writers(flow: Flow, target: str) -> list[FieldMapping]:
    """The enabled mappings of the other flows to the same DotDigital connection that write
    `target` (one data field is written by one mapping: these change with this flow's)."""
    if flow.destination_id is None:
        return []
    return list(
        FieldMapping.objects.filter(
            flow__destination_id=flow.destination_id, target__iexact=target, enabled=True
        )
        .exclude(flow_id=flow.pk)
        .select_related("flow")
        .order_by("flow__name")
    )


class CreateDataFieldForm(forms.Form):
    name = forms.CharField(max_length=20)
    type = forms.ChoiceField(choices=T.choices)

    def clean_name(self) -> str:
        name = str(self.cleaned_data["name"]).strip().upper()
        if not DATA_FIELD_NAME.match(name):
            raise ValidationError("A letter, then letters, digits or _ (20 at most).")
        return name

    @property
    def dotdigital_type(self) -> str:
        return DATA_FIELD_TYPES[self.cleaned_data["type"]]


class DryRunForm(forms.Form):
    """A recent event of the flow, or one pasted as canonical JSON (sync.event/v1)."""

    event = forms.ModelChoiceField(queryset=SourceEvent.objects.none(), required=False)
    pasted = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false"}),
        required=False,
        label="Or paste an event (canonical JSON)",
    )

    def __init__(self, flow: Flow, events: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flow = flow
        field = self.fields["event"]
        assert isinstance(field, forms.ModelChoiceField)
        # Any event of the flow is valid, by id: the list shown is the recent ones when the page
        # was drawn, and on a busy flow they are no longer the recent ones by the time it is sent.
        field.queryset = SourceEvent.objects.filter(flow=flow)
        shown = list(events)
        chosen = self.data.get(self.add_prefix("event")) if self.is_bound else None
        if chosen and str(chosen).isdigit() and all(str(e.pk) != chosen for e in shown):
            shown += list(SourceEvent.objects.filter(flow=flow, pk=int(chosen)))
        field.widget.choices = [("", "---------"), *((e.pk, _event_label(e)) for e in shown)]

    def clean_pasted(self) -> dict[str, Any] | None:
        text = str(self.cleaned_data.get("pasted") or "").strip()
        if not text:
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"Not JSON: {exc.msg} (line {exc.lineno}).") from None
        if isinstance(value, dict) and isinstance(value.get("events"), list) and value["events"]:
            value = value["events"][0]
        if not isinstance(value, dict):
            raise ValidationError("Paste one event: a JSON object.")
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not data.get("event") and not data.get("pasted") and not self.errors:
            self.add_error("event", "Pick a recent event, or paste one.")
        if data.get("event") and data.get("pasted"):
            self.add_error("pasted", "Pick an event or paste one, not both.")
        return data


def _event_label(event: SourceEvent) -> str:
    return f"{event.received_at:%d %b %H:%M} · {event.event_type} · {event.source_event_id}"


class AliasForm(AliasModelForm):
    alias_key = forms.CharField(max_length=200, label="Alias (as the source sends it)")

    class Meta:
        model = SkuAlias
        fields = ["alias_key", "sku", "flow"]
        labels = {"sku": "Catalogue SKU", "flow": "Flow (empty: every flow)"}

    def __init__(self, workspace: Workspace, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.workspace = workspace
        flow = self.fields["flow"]
        assert isinstance(flow, forms.ModelChoiceField)
        flow.queryset = Flow.objects.filter(workspace=workspace)

    def clean_sku(self) -> str:
        problem = sku_problem(self.workspace, str(self.cleaned_data["sku"]))
        if problem:
            raise ValidationError(problem)
        return clean_sku(self.cleaned_data["sku"])

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        alias = data.get("alias_key")
        if alias is None:
            return data
        if not clean_sku(alias):
            self.add_error("alias_key", "Give the alias.")
            return data
        key = alias_key_for(self.workspace, data.get("flow"), alias)
        clash = SkuAlias.objects.filter(
            workspace=self.workspace, flow=data.get("flow"), alias_key=key
        )
        if self.instance.pk:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():
            self.add_error("alias_key", f"{key} already means {clash[0].sku}.")
        data["alias_key"] = key
        return data

    def _post_clean(self) -> None:
        self.instance.workspace = self.workspace
        super()._post_clean()  # type: ignore[misc]


class SkuCleaningForm(forms.Form):
    """A flow's SKU cleaning rules (applied before aliases and the catalogue check)."""

    flow = forms.ModelChoiceField(queryset=Flow.objects.none())
    rules = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        label="Rules, one a line",
        help_text="trim (or trim:<chars>), upper, lower, replace:<from>=<to> (e.g. replace:_=-; "
        "an empty <to> removes), strip_prefix:<text>, strip_suffix:<text>. Applied in order, "
        "after trimming and NFC, before case folding and aliases.",
    )

    def __init__(self, workspace: Workspace, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "id_cleaning_%s")  # the alias form on the page has a flow
        super().__init__(*args, **kwargs)
        flow = self.fields["flow"]
        assert isinstance(flow, forms.ModelChoiceField)
        flow.queryset = Flow.objects.filter(workspace=workspace)

    def clean_rules(self) -> str:
        text = "\n".join(
            line.strip("\r\t ") for line in str(self.cleaned_data.get("rules") or "").splitlines()
        ).strip("\n")
        try:
            transforms.parse_sku_rules(text)
        except transforms.TransformError as exc:
            raise ValidationError(str(exc)) from None
        return text


LIST_PURPOSES = (
    ("dispatched_list", "Dispatched today", "dispatched_keep_hours"),
    ("recent_buyers_list", "Recent buyers", "recent_buyer_days"),
    ("back_in_stock_list", "Back in stock", ""),
)
NEW = "__new__"


class FlowListsForm(FlowModelForm):
    """Which DotDigital lists a flow keeps, chosen from the account's lists (`books`: their names,
    None when the account cannot be read: then typed) or a new one, created when saved."""

    class Meta:
        model = Flow
        fields = [
            "dispatched_list",
            "dispatched_keep_hours",
            "recent_buyers_list",
            "recent_buyer_days",
            "back_in_stock_list",
        ]
        labels = {
            "dispatched_keep_hours": "Kept on it for (hours after the latest dispatch)",
            "recent_buyer_days": "Recent-buyer exclusion period (days after the last order)",
        }

    def __init__(self, flow: Flow, books: list[str] | None, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", f"id_lists{flow.pk}_%s")  # one form per flow on the page
        kwargs["instance"] = flow
        super().__init__(*args, **kwargs)
        self.books = books
        self.to_create: list[str] = []
        for name, label, _ in LIST_PURPOSES:
            current = str(getattr(flow, name) or "")
            if books is None:
                self.fields[name] = forms.CharField(
                    max_length=120, required=False, label=f"{label} list (name)"
                )
                continue
            names = sorted({*books, *([current] if current else [])}, key=str.casefold)
            choices = [("", "— none —")]
            choices += [(n, n if n in books else f"{n} (not in the account yet)") for n in names]
            choices.append((NEW, "A new list…"))
            self.fields[name] = forms.ChoiceField(
                choices=choices, required=False, label=f"{label} list"
            )
            self.fields[f"{name}_new"] = forms.CharField(
                max_length=120, required=False, label="New list's name"
            )
        for name in ("dispatched_keep_hours", "recent_buyer_days"):
            field = self.fields[name]
            assert isinstance(field, forms.IntegerField)
            field.min_value = 1
            field.validators.append(_at_least(1, "hour" if "hours" in name else "day"))
        self.fields["back_in_stock_list"].help_text = (
            "Recorded for the program only: no source sends who asked to be told when an item is "
            "back, so Syncdesk adds no one to it (it keeps the Stock collection's InStock current "
            "on the realtime lane, which such a program can read)."
        )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        chosen: dict[str, str] = {}
        for name, _, _ in LIST_PURPOSES:
            value = str(data.get(name) or "").strip()
            if value == NEW:
                value = str(data.get(f"{name}_new") or "").strip()
                if not value:
                    self.add_error(f"{name}_new", "Name the new list.")
                    continue
                if self.books is not None and value in self.books:
                    self.add_error(f"{name}_new", f"The account has “{value}” already: pick it.")
                    continue
                if value not in self.to_create:
                    self.to_create.append(value)
            data[name] = value
            if value and value in chosen.values():
                self.add_error(
                    name, "Another of this flow's lists is this list: one list, one use."
                )
            chosen[name] = value
        self._refuse_other_writers(data)
        return data

    def _refuse_other_writers(self, data: dict[str, Any]) -> None:
        """One list, one rule per DotDigital account: another flow to the same account may keep the
        same list only for the same use and period (else the two would undo each other's work)."""
        flow = self.instance
        if flow.destination_id is None:
            return
        others = Flow.objects.filter(destination_id=flow.destination_id).exclude(pk=flow.pk)
        for other in others:
            theirs = {
                other.dispatched_list: ("dispatched_list", other.dispatched_keep_hours),
                other.recent_buyers_list: ("recent_buyers_list", other.recent_buyer_days),
                other.back_in_stock_list: ("back_in_stock_list", None),
            }
            for name, _, period in LIST_PURPOSES:
                value = data.get(name)
                if not value or value not in theirs or self.has_error(name):
                    continue
                use, their_period = theirs[value]
                mine = data.get(period) if period else None
                if use != name or their_period != mine:
                    self.add_error(
                        name,
                        f"The flow “{other.name}” keeps “{value}” in the same DotDigital account "
                        "for another use or period: one list, one rule.",
                    )


class AliasImportForm(forms.Form):
    file = forms.FileField(label="CSV file (alias,sku,flow)")

    def clean_file(self) -> str:
        upload = self.cleaned_data["file"]
        if upload.size > 2_000_000:
            raise ValidationError("At most 2 MB.")
        try:
            return str(upload.read().decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise ValidationError("The file is not UTF-8 text.") from None


# Jobs a schedule may run: task → (label, what its one argument is).
TASKS: dict[str, tuple[str, str]] = {
    "monitoring.poll_flow": ("Poll the source (and backfill)", "flow"),
    "monitoring.reconcile_flow": ("Reconcile with DotDigital", "flow"),
    "monitoring.write_back_opt_outs": ("Write opt-outs back to the source", "flow"),
    "monitoring.pull_suppressions": ("Pull DotDigital's suppressions", "none"),
    "monitoring.expire_list_memberships": ("Take contacts off lists when their time is up", "none"),
    "monitoring.enrol_programs": ("Send direct program enrolments", "none"),
    "exceptions_inbox.send_team_digests": ("E-mail the teams' inbox digests", "none"),
}
CRON_FIELD = re.compile(r"^[0-9*/,\-]+$")


class ScheduleForm(ScheduleModelForm):
    task = forms.ChoiceField(choices=[(k, f"{v[0]} ({k})") for k, v in TASKS.items()])
    queue = forms.ChoiceField(choices=[("bulk", "bulk"), ("realtime", "realtime")])

    class Meta:
        model = Schedule
        fields = ["name", "flow", "task", "every_seconds", "crontab", "queue", "enabled"]
        labels = {"every_seconds": "Every (seconds)", "crontab": "Or a crontab (UTC)"}

    def __init__(self, workspace: Workspace, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.workspace = workspace
        flow = self.fields["flow"]
        assert isinstance(flow, forms.ModelChoiceField)
        flow.queryset = Flow.objects.filter(workspace=workspace)

    def clean_name(self) -> str:
        name = str(self.cleaned_data["name"]).strip()
        clash = Schedule.objects.filter(workspace=self.workspace, name=name)
        if self.instance.pk:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():
            raise ValidationError("Another schedule has this name.")
        return name

    def clean_every_seconds(self) -> int | None:
        every = self.cleaned_data.get("every_seconds")
        if every is not None and every < 30:
            raise ValidationError("At least 30 seconds.")
        return every

    def clean_crontab(self) -> str:
        text = " ".join(str(self.cleaned_data.get("crontab") or "").split())
        if not text:
            return ""
        parts = text.split(" ")
        if len(parts) != 5 or not all(CRON_FIELD.match(p) for p in parts):
            raise ValidationError("Five fields: minute hour day-of-month month day-of-week.")
        limits = ((60, 0), (24, 0), (31, 1), (12, 1), (7, 0))
        for part, (size, start) in zip(parts, limits, strict=True):
            try:
                crontab_parser(size, start).parse(part)
            except (ParseException, ValueError) as exc:
                raise ValidationError(f"“{part}”: {exc}") from None
        return text

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        every, cron = data.get("every_seconds"), data.get("crontab")
        both_checked = "every_seconds" in data and "crontab" in data
        if both_checked and bool(every) == bool(cron):
            self.add_error("every_seconds", "Give an interval or a crontab (one of them).")
        task = data.get("task")
        if task and TASKS[task][1] == "flow" and not data.get("flow"):
            self.add_error("flow", "This job runs for a flow: pick one.")
        return data

    def save(self, commit: bool = True) -> Schedule:
        schedule = super().save(commit=False)
        schedule.workspace = self.workspace
        flow = self.cleaned_data.get("flow")
        schedule.args = [flow.pk] if TASKS[schedule.task][1] == "flow" and flow else []
        if commit:
            schedule.save()
        return schedule


class RoutingForm(forms.Form):
    kind = forms.ChoiceField(label="Exception kind")
    flow = forms.ModelChoiceField(
        queryset=Flow.objects.none(), required=False, label="Flow (empty: every flow)"
    )
    team = forms.ModelChoiceField(queryset=Team.objects.none())

    def __init__(self, workspace: Workspace, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.workspace = workspace
        kind = self.fields["kind"]
        assert isinstance(kind, forms.ChoiceField)
        kind.choices = inbox_kinds.choices()
        flow = self.fields["flow"]
        assert isinstance(flow, forms.ModelChoiceField)
        flow.queryset = Flow.objects.filter(workspace=workspace)
        team = self.fields["team"]
        assert isinstance(team, forms.ModelChoiceField)
        team.queryset = workspace.teams.order_by("name")

    def save(self) -> tuple[RoutingRule, dict[str, Any] | None]:
        """The rule, set; with its state before (None when it is new)."""
        flow = self.cleaned_data.get("flow")
        rule, made = RoutingRule.objects.get_or_create(
            workspace=self.workspace,
            kind=self.cleaned_data["kind"],
            flow_key=flow.key if flow else "",
            defaults={"team": self.cleaned_data["team"]},
        )
        before = None if made else {"team": str(rule.team)}
        if not made:
            rule.team = self.cleaned_data["team"]
            rule.save(update_fields=["team"])
        return rule, before


class EnrolmentForm(forms.Form):
    """A direct enrolment: events of a type enrol their contact in a DotDigital program."""

    event_type = forms.ChoiceField(
        choices=[
            (t, t)
            for t in (
                "order.created",
                "shipment.dispatched",
                "shipment.carrier_scanned",
                "refund.issued",
                "return.received",
                "customer.upserted",
            )
        ]
    )
    program = forms.TypedChoiceField(coerce=int, label="Program")

    def __init__(self, programs: list[tuple[int, str]] | None, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if programs is None:  # the account cannot be read: the program's id, typed
            self.fields["program"] = forms.IntegerField(min_value=1, label="Program id")
        else:
            field = self.fields["program"]
            assert isinstance(field, forms.TypedChoiceField)
            field.choices = [(pk, f"{name} ({pk})") for pk, name in programs]
