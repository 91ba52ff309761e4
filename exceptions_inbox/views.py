"""The inbox pages: small guarded views around `actions.apply_action` / `apply_bulk`.

Each view starts from the person's memberships (`listing.scope_for`): 404 outside them, then 403
when the person is not in the owning team and not an admin. One URL serves a page and its htmx
fragment (`template.html#partial`).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseLocation
from django_tables2 import RequestConfig
from django_tables2.paginators import LazyPaginator

from accounts.access import TeamOnly
from accounts.http import AuthenticatedHttpRequest
from exceptions_inbox.actions import (
    LEGAL_FROM,
    Action,
    IllegalAction,
    apply_action,
    apply_bulk,
    apply_to_matching,
    prerequisite_of,
    why_not,
)
from exceptions_inbox.figures import off_by
from exceptions_inbox.fixes import apply_fix, fix_subjects, one_click, suggestions, why_no_fix
from exceptions_inbox.forms import (
    SNOOZES,
    BulkActionForm,
    CommentForm,
    FixForm,
    GroupActionForm,
    InboxFilterForm,
    fix_form_class,
)
from exceptions_inbox.listing import (
    COUNT_CAP,
    TABS,
    InboxScope,
    bounded_counts,
    filtered,
    in_tab,
    scope_for,
)
from exceptions_inbox.models import Activity, ExceptionGroup, Occurrence
from exceptions_inbox.tables import GroupTable, OccurrenceTable
from exceptions_inbox.tasks import send_assignment_notices

PER_PAGE = 25
MAX_PER_PAGE = 100


class InboxPaginator(LazyPaginator):  # type: ignore[misc] # django-tables2 has no type information
    """Pages without COUNT(*) (it reads one row past the page), and never more than 100 a page."""

    def __init__(self, object_list: Any, per_page: int | str, *args: Any, **kwargs: Any) -> None:
        super().__init__(object_list, min(int(per_page), MAX_PER_PAGE), *args, **kwargs)


def _paginate(request: AuthenticatedHttpRequest, table: Any) -> None:
    RequestConfig(
        request, paginate={"paginator_class": InboxPaginator, "per_page": PER_PAGE}
    ).configure(table)


# ---------------------------------------------------------------------------------------- lists


@require_GET
def inbox(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    """One workspace's inbox."""
    scope = scope_for(request.user, ws)
    return _render_inbox(request, scope)


@require_GET
def all_inboxes(request: AuthenticatedHttpRequest) -> HttpResponse:
    """One inbox across every workspace the person belongs to (an agency's view)."""
    scope = scope_for(request.user)
    return _render_inbox(request, scope)


def _render_inbox(request: AuthenticatedHttpRequest, scope: InboxScope) -> HttpResponse:
    form = InboxFilterForm(request.GET, workspace_ids=scope.workspace_ids)
    filters = form.filters(default_tab=scope.landing_tab)
    base = filtered(scope.groups(), filters, scope)
    rows = in_tab(base, filters["tab"], scope).select_related("workspace", "team", "assignee")
    table = GroupTable(
        rows,
        can_change=scope.can_change,
        exclude=("workspace",) if scope.single else (),
    )
    _paginate(request, table)
    counts = bounded_counts([in_tab(base, slug, scope) for slug, _label in TABS])
    tabs = [(slug, label, count) for (slug, label), count in zip(TABS, counts, strict=True)]
    for_review = dict(zip((slug for slug, _label in TABS), counts, strict=True))["review"]
    if filters["tab"] == "team" and for_review:
        # A member lands here: an empty team tab says where everyone else's groups are.
        table.empty_text = (
            f"Nothing for your team. For review has {for_review} group(s) of other teams."
        )
    match_count = next(count for slug, _label, count in tabs if slug == filters["tab"])
    single = scope.single
    ctx: dict[str, Any] = {
        "scope": scope,
        "access": single,
        "form": form,
        "filters": filters,
        "tab": filters["tab"],
        "tabs": tabs,
        "count_cap": COUNT_CAP,
        "table": table,
        "nav": "inbox",
        "bulk_form": BulkActionForm(members=_members(scope)),
        "bulk_url": (
            reverse("exceptions_inbox:bulk", kwargs={"ws": single.workspace.slug})
            if single
            else reverse("exceptions_inbox:all-bulk")
        ),
        "snoozes": SNOOZES,
        "match_count": match_count,
        # The list's filters travel with a bulk POST, for "every match, on every page".
        "match_fields": [
            (name, filters[name])
            for name in ("tab", "kind", "team", "flow", "age", "q")
            if filters.get(name)
        ],
        "any_changeable": any(scope.can_change(row.record) for row in table.page.object_list)
        if table.page
        else False,
    }
    if request.htmx and request.htmx.target == "results":
        return render(request, "exceptions_inbox/inbox.html#results", ctx)
    return render(request, "exceptions_inbox/inbox.html", ctx)


def _members(scope: InboxScope) -> QuerySet[User]:
    return (
        User.objects.filter(memberships__workspace_id__in=scope.workspace_ids, is_active=True)
        .distinct()
        .order_by("username")
    )


# ------------------------------------------------------------------------------------ one group


def _get_group_for_user(
    request: AuthenticatedHttpRequest, ws: str, pk: int
) -> tuple[ExceptionGroup, InboxScope]:
    """The group, if it is in one of the person's workspaces (404 otherwise)."""
    scope = scope_for(request.user, ws)
    group = get_object_or_404(
        ExceptionGroup.objects.select_related("workspace", "team", "assignee"),
        workspace_id__in=scope.workspace_ids,
        pk=pk,
    )
    return group, scope


def _require_change(scope: InboxScope, group: ExceptionGroup) -> None:
    if not scope.can_change(group):
        owner = f"the {group.team.name} team" if group.team else "the owning team"
        raise TeamOnly(
            f"Only {owner} or a workspace admin can change this exception.",
            group.team.slug if group.team else None,
        )


@require_GET
def group_detail(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    group, scope = _get_group_for_user(request, ws, pk)
    return _render_group(request, group, scope)


def _render_group(
    request: AuthenticatedHttpRequest,
    group: ExceptionGroup,
    scope: InboxScope,
    *,
    action_form: GroupActionForm | None = None,
    comment_form: CommentForm | None = None,
    fix_form: FixForm | None = None,
    status: int = 200,
) -> HttpResponse:
    kind = group.kind_info
    occurrences = OccurrenceTable(
        Occurrence.objects.filter(group=group),
        payload_for=lambda occurrence: _payload_for(group, occurrence),
        workspace_slug=group.workspace.slug,
    )
    _paginate(request, occurrences)
    if kind.render_occurrences is not None and occurrences.page:
        page = [row.record for row in occurrences.page.object_list]
        for occurrence in page:
            occurrence.group = group
        rendered = kind.render_occurrences(page) if page else {}
        occurrences.payload_for = lambda o: rendered.get(o.pk) or {"payload": o.detail}
    can_change = scope.can_change(group)
    members = _members(scope).filter(memberships__workspace=group.workspace)
    legal = {action: group.state in LEGAL_FROM[action] for action in Action.values}
    legal[Action.RETRY] = why_not(group, Action.RETRY) is None
    # Why not, when a fix must come first: the page names it and links to it.
    first = None if legal[Action.RETRY] else prerequisite_of(group)
    fix_class = fix_form_class(group.kind)
    subjects = fix_subjects(group) if can_change and kind.fix else []
    subject_values = [value for value, _n in subjects]
    offered_suggestions = suggestions(group, subject_values) if can_change and kind.fix else []
    pairs = [(s, one_click(s)) for s in offered_suggestions]
    ctx = {
        "group": group,
        "kind": kind,
        "scope": scope,
        "access": scope.accesses[group.workspace_id],
        "nav": "inbox",
        "can_change": can_change,
        "legal": legal,
        "occurrences": occurrences,
        "activities": Activity.objects.filter(group=group).select_related("actor"),
        # The menu starts at whoever has it now, so "Assign" without a choice changes nothing.
        "action_form": action_form
        or GroupActionForm(members=members, initial={"assignee": group.assignee_id}),
        "flow_url": _flow_url(group),
        "comment_form": comment_form or CommentForm(),
        "fix_form": fix_form or fix_class(suggestions=offered_suggestions, subjects=subject_values),
        "fix_unavailable": why_no_fix(group),
        "suggestions": pairs,
        # Each unknown value (e.g. SKU) with the events it blocks and its own suggestions.
        "fix_subjects": [
            (value, n, [(s, click) for s, click in pairs if s.for_value == value])
            for value, n in subjects
        ],
        "one_click_closeness": settings.INBOX_ONE_CLICK_CLOSENESS,
        "snoozes": SNOOZES,
        "off_by": off_by(group),
        "prerequisite": first,
    }
    if request.htmx and request.htmx.target == "occurrences":
        return render(request, "exceptions_inbox/group.html#occurrences", ctx)
    return render(request, "exceptions_inbox/group.html", ctx, status=status)


def _flow_url(group: ExceptionGroup) -> str:
    """The flow's page, when the group is about a flow (its key is the engine's 'flow:<id>')."""
    prefix, _, pk = group.flow_key.partition(":")
    if prefix != "flow" or not pk.isdigit():
        return ""
    return reverse("monitoring:flows", kwargs={"ws": group.workspace.slug}) + f"?flow={pk}"


def _payload_for(group: ExceptionGroup, occurrence: Occurrence) -> dict[str, Any]:
    """The blocked event as the engine shows it (`render_occurrence`), else the stored detail."""
    hook = group.kind_info.render_occurrence
    if hook is not None:
        occurrence.group = group  # the hook may read it; no query per row
        return hook(occurrence)
    return {"payload": occurrence.detail}


@require_POST
def group_action(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    group, scope = _get_group_for_user(request, ws, pk)
    _require_change(scope, group)
    members = _members(scope).filter(memberships__workspace=group.workspace)
    form = GroupActionForm(request.POST, members=members)
    if not form.is_valid():
        return _render_group(request, group, scope, action_form=form, status=400)
    action = form.cleaned_data["action"]
    try:
        apply_action(group, action, request.user, **form.params())
    except IllegalAction as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _done_message(action, group))
        if action == Action.ASSIGN:
            transaction.on_commit(send_assignment_notices.delay)
    return redirect("exceptions_inbox:group", ws=ws, pk=pk)


def _done_message(action: str, group: ExceptionGroup) -> str:
    if action == Action.RETRY:
        if group.state == ExceptionGroup.State.RESOLVED:
            return "Retried: every event got through, so the group is resolved."
        # The engine may re-run them later (a worker): say what was done, not a verdict.
        return (
            f"Retried: {group.open_count} blocked event(s) sent back. The group resolves itself "
            "once they all get through."
        )
    if action == Action.ASSIGN:
        who = group.assignee.get_username() if group.assignee else "nobody"
        return f"Assigned to {who}."
    return f"{group.get_state_display()}."


@require_POST
def group_comment(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    """Any member may comment: a comment changes nothing about the group."""
    group, scope = _get_group_for_user(request, ws, pk)
    form = CommentForm(request.POST)
    if not form.is_valid():
        return _render_group(request, group, scope, comment_form=form, status=400)
    apply_action(group, Action.COMMENT, request.user, note=form.cleaned_data["note"])
    return redirect(reverse("exceptions_inbox:group", kwargs={"ws": ws, "pk": pk}) + "#history")


@require_POST
def group_fix(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    """The kind's fix (add a SKU alias, record an email…): the engine retries what it blocked."""
    group, scope = _get_group_for_user(request, ws, pk)
    _require_change(scope, group)
    form_class = fix_form_class(group.kind)
    subjects = [value for value, _n in fix_subjects(group)]
    form = form_class(request.POST, subjects=subjects)
    if not form.is_valid():
        return _render_group(request, group, scope, fix_form=form, status=400)
    try:
        message = apply_fix(group, request.user, form.hook_data(group))
    except ValueError as exc:
        form.add_error(form.field_name, str(exc))
        return _render_group(request, group, scope, fix_form=form, status=400)
    except IllegalAction as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, message or "Fixed.")
    return redirect("exceptions_inbox:group", ws=ws, pk=pk)


# ------------------------------------------------------------------------------------------ bulk


@require_POST
def bulk(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    scope = scope_for(request.user, ws)
    return _bulk(request, scope, reverse("exceptions_inbox:inbox", kwargs={"ws": ws}))


@require_POST
def all_bulk(request: AuthenticatedHttpRequest) -> HttpResponse:
    scope = scope_for(request.user)
    return _bulk(request, scope, reverse("exceptions_inbox:all"))


def _bulk(request: AuthenticatedHttpRequest, scope: InboxScope, inbox_url: str) -> HttpResponse:
    """Apply one action to the ticked groups (or to every match of the list's filters, on every
    page) where it is legal; report the rest."""
    form = BulkActionForm(request.POST, members=_members(scope))
    ids = {int(v) for v in request.POST.getlist("groups") if v.isdigit()}
    form.fields["groups"].choices = [(str(pk), str(pk)) for pk in ids]  # type: ignore[attr-defined]
    groups: list[ExceptionGroup] = []
    if not form.every_match:
        groups = list(
            scope.groups()
            .filter(pk__in=ids)
            .select_related("workspace", "team", "assignee")
            .order_by("-last_seen", "-id")
        )
        if len(groups) != len(ids):
            raise Http404("No such exception")
        # The boxes are offered only on groups the person may change: a tick on another's is
        # refused outright. Every match instead leaves those alone and counts them.
        if not all(scope.can_change(g) for g in groups):
            raise PermissionDenied("Only the owning team or an admin can change these exceptions.")
    back = _safe_next(request, request.POST.get("next", ""), inbox_url)
    if not form.is_valid():
        for field, errors in form.errors.items():
            label = form.fields[field].label if field in form.fields else ""
            messages.error(request, f"{label or 'Bulk action'}: {' '.join(str(e) for e in errors)}")
        return _back(request, back)
    action = form.cleaned_data["action"]
    if form.every_match:
        filters = InboxFilterForm(request.POST, workspace_ids=scope.workspace_ids).filters(
            default_tab=scope.landing_tab
        )
        matching = in_tab(filtered(scope.groups(), filters, scope), filters["tab"], scope)
        result = apply_to_matching(
            matching, action, request.user, may_change=scope.may_change(), **form.params()
        )
    else:
        result = apply_bulk(groups, action, request.user, **form.params())
    (messages.success if result.applied else messages.warning)(request, result.summary(action))
    if action == Action.ASSIGN and result.applied:
        transaction.on_commit(send_assignment_notices.delay)
    return _back(request, back)


def _safe_next(request: AuthenticatedHttpRequest, candidate: str, default: str) -> str:
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return default


def _back(request: AuthenticatedHttpRequest, url: str) -> HttpResponse:
    """Back to the list the person acted from: htmx fetches it into the results region."""
    if request.htmx:
        return HttpResponseLocation(url, target="#results", swap="outerHTML")
    return redirect(url)
