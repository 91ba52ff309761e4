"""The inbox's tables, rendered with the project's htmx table template (templates/tables/htmx.html)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import django_tables2 as tables
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from exceptions_inbox.models import ExceptionGroup, Occurrence
from exceptions_inbox.templatetags.inbox import age, ago


# django-tables2 has no type information, so its classes are Any to mypy; each subclass below
# silences only that error (`misc`).
class SelectColumn(tables.Column):  # type: ignore[misc]
    """A tick box for the bulk bar, offered only on groups the person may change."""

    def __init__(self) -> None:
        super().__init__(
            accessor="pk",
            verbose_name=mark_safe(  # noqa: S308 - a constant
                '<input type="checkbox" aria-label="Select all on this page" data-select-all>'
            ),
            orderable=False,
            attrs={"th": {"class": "col-select"}, "td": {"class": "col-select"}},
        )

    def render(self, value: int, record: ExceptionGroup, table: GroupTable) -> str:
        if not table.can_change(record):
            return ""
        return format_html(
            '<input type="checkbox" name="groups" value="{}" form="bulk" aria-label="Select {}">',
            value,
            record.title,
        )


class GroupTable(tables.Table):  # type: ignore[misc] # django-tables2 is untyped (above)
    select = SelectColumn()
    title = tables.Column(verbose_name="Exception", order_by=("title", "id"))
    workspace = tables.Column(accessor="workspace__name", verbose_name="Workspace")
    team = tables.Column(accessor="team__name", verbose_name="Team", order_by=("team__name", "id"))
    state = tables.Column(verbose_name="State")
    assignee = tables.Column(verbose_name="Assignee", orderable=False)
    occurrence_count = tables.Column(verbose_name="Blocked", attrs={"td": {"class": "num"}})
    first_seen = tables.Column(verbose_name="Age", order_by=("first_seen", "id"))
    last_seen = tables.Column(verbose_name="Last seen", order_by=("last_seen", "id"))

    htmx_target = "results"

    class Meta:
        model = ExceptionGroup
        fields: tuple[str, ...] = ()
        sequence = (
            "select",
            "title",
            "workspace",
            "team",
            "state",
            "assignee",
            "occurrence_count",
            "first_seen",
            "last_seen",
        )
        template_name = "tables/htmx.html"
        attrs = {"class": "table inbox-table", "id": "groups"}
        row_attrs = {"data-group": lambda record: record.pk}
        empty_text = "Nothing here. Try another tab, or clear the filters."
        order_by = ("-last_seen",)

    def __init__(
        self, *args: Any, can_change: Callable[[ExceptionGroup], bool], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.can_change = can_change

    def render_title(self, value: str, record: ExceptionGroup) -> str:
        url = reverse(
            "exceptions_inbox:group", kwargs={"ws": record.workspace.slug, "pk": record.pk}
        )
        # format_html rather than a template per row: this is the inbox's hottest cell.
        regressed = (
            mark_safe(' <span class="pill pill-regressed">Regressed</span>')  # noqa: S308
            if record.is_regression
            else ""
        )
        where = f" · {record.flow_label}" if record.flow_label else ""
        return format_html(
            '<a href="{}" class="group-title">{}</a>{}<div class="muted small">{}{}</div>',
            url,
            value,
            regressed,
            record.kind_info.title,
            where,
        )

    def render_team(self, value: str) -> str:
        return value

    def render_state(self, value: str, record: ExceptionGroup) -> str:
        return format_html(
            '<span class="pill pill-{}">{}</span>', record.state, record.get_state_display()
        )

    def render_assignee(self, value: Any) -> str:
        return value.get_username() if value else "—"

    def render_occurrence_count(self, value: int, record: ExceptionGroup) -> str:
        if record.open_count and record.open_count != value:
            return format_html("{} <span class='muted'>of {}</span>", record.open_count, value)
        return str(record.open_count or value)

    def render_first_seen(self, value: Any) -> str:
        return format_html('<time datetime="{}">{}</time>', value.isoformat(), age(value) or "new")

    def render_last_seen(self, value: Any) -> str:
        return format_html('<time datetime="{}">{}</time>', value.isoformat(), ago(value))


class OccurrenceTable(tables.Table):  # type: ignore[misc] # django-tables2 is untyped (above)
    event_key = tables.Column(verbose_name="Event", orderable=False, attrs={"td": {"class": "key"}})
    keys = tables.Column(accessor="pk", verbose_name="Business keys", orderable=False)
    message = tables.Column(verbose_name="What went wrong", orderable=False)
    state = tables.Column(verbose_name="State", orderable=False)
    last_seen = tables.Column(verbose_name="Last seen", order_by=("last_seen", "id"))

    htmx_target = "occurrences"

    class Meta:
        model = Occurrence
        fields: tuple[str, ...] = ()
        sequence = ("event_key", "keys", "message", "state", "last_seen")
        template_name = "tables/htmx.html"
        attrs = {"class": "table occurrence-table", "id": "occurrence-table"}
        empty_text = "No occurrences."
        order_by = ("-last_seen",)

    def __init__(
        self,
        *args: Any,
        payload_for: Callable[[Occurrence], dict[str, Any]],
        workspace_slug: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.payload_for = payload_for
        self.workspace_slug = workspace_slug

    def render_state(self, value: str, record: Occurrence) -> str:
        return format_html(
            '<span class="pill pill-occ-{}">{}</span>', record.state, record.get_state_display()
        )

    def render_keys(self, record: Occurrence) -> str:
        return render_to_string(
            "exceptions_inbox/_occurrence_keys.html", {"o": record, "ws": self.workspace_slug}
        )

    def render_message(self, value: str, record: Occurrence) -> str:
        return render_to_string(
            "exceptions_inbox/_occurrence_payload.html",
            {"o": record, "payload": self.payload_for(record)},
        )

    def render_last_seen(self, value: Any) -> str:
        return format_html('<time datetime="{}">{}</time>', value.isoformat(), ago(value))
