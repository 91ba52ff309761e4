"""The exceptions inbox: the pages' tabs and filters (`exceptions_inbox.listing`), one group with
its occurrences and history, and the actions through `actions.apply_action` (the same legal
states, history rows and refusals as the pages; the actor is the key's name)."""

from __future__ import annotations

from typing import Any, Literal

from django.contrib.auth.models import User
from django.db.models import Q
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Field as NinjaField
from ninja import Query, Schema, Status

from api.core import (
    ACT,
    MAX_PAGE,
    READ,
    ApiError,
    RowId,
    api,
    cursor_int,
    cursor_time,
    decode_cursor,
    encode_cursor,
    key_access,
    require_act,
)
from api.keys import KeyAccess
from api.schemas import (
    ActionIn,
    ActionOut,
    FixIn,
    GroupDetail,
    GroupOut,
    GroupPage,
    OccurrenceOut,
    Text,
)
from exceptions_inbox.actions import Action, IllegalAction, apply_action
from exceptions_inbox.fixes import apply_fix
from exceptions_inbox.forms import fix_form_class
from exceptions_inbox.listing import filtered, in_tab
from exceptions_inbox.models import Activity, ExceptionGroup, Occurrence

Tab = Literal["review", "open", "mine", "team", "snoozed", "resolved", "ignored"]
Age = Literal["1h", "24h", "7d", "old"]


class GroupFilters(Schema):
    tab: Tab = NinjaField(
        default="review",
        description="As the inbox: review (open), open (open and acknowledged), mine (assigned "
        "to the key: none), team (the key's team's unclosed groups), snoozed, resolved, ignored.",
    )
    kind: Text | None = NinjaField(default=None, max_length=40)
    team: Text | None = NinjaField(default=None, max_length=40, description="A team's slug.")
    flow: Text | None = NinjaField(default=None, max_length=80, description="A flow key.")
    age: Age | None = None
    q: Text | None = NinjaField(
        default=None, max_length=254, description="An order number, SKU, email or event id."
    )
    limit: int = NinjaField(default=100, ge=1, le=MAX_PAGE)
    cursor: Text | None = NinjaField(default=None, max_length=200)


@api.get(
    "/w/{ws}/exceptions",
    response={200: GroupPage, **READ},
    tags=["exceptions"],
    summary="Exception groups",
)
def list_groups(request: HttpRequest, ws: str, filters: Query[GroupFilters]) -> dict[str, Any]:
    """Groups in a tab of the inbox, newest activity first. A group with new activity moves to
    the top: a list read page by page does not show it twice, but shows it again only when read
    from the start."""
    ka = key_access(request, ws)
    chosen = {
        k: v for k, v in filters.model_dump().items() if k in ("kind", "team", "flow", "age", "q")
    }
    chosen = {k: v for k, v in chosen.items() if v}
    qs = in_tab(filtered(ka.scope.groups(), chosen, ka.scope), filters.tab, ka.scope)
    after = decode_cursor(filters.cursor, 2)
    if after is not None:
        seen, pk = cursor_time(after[0]), cursor_int(after[1])
        qs = qs.filter(last_seen__lte=seen).filter(
            Q(last_seen__lt=seen) | Q(last_seen=seen, pk__lt=pk)
        )
    rows = list(
        qs.select_related("team", "assignee").order_by("-last_seen", "-id")[: filters.limit + 1]
    )
    more = len(rows) > filters.limit
    rows = rows[: filters.limit]
    last = rows[-1] if rows else None
    return {
        "items": [group_out(g) for g in rows],
        "next_cursor": encode_cursor(last.last_seen.isoformat(), last.pk)
        if more and last
        else None,
    }


def group_out(g: ExceptionGroup) -> dict[str, Any]:
    data = {name: getattr(g, name) for name in GroupOut.model_fields if hasattr(g, name)}
    data.update(
        team=g.team.slug if g.team else None,
        assignee=g.assignee.get_username() if g.assignee else None,
    )
    return data


def activity_out(a: Activity) -> dict[str, Any]:
    return {
        "id": a.pk,
        "kind": a.kind,
        "actor": a.actor.get_username() if a.actor else None,
        "note": a.note,
        "before": a.before or {},
        "after": a.after or {},
        "created": a.created,
    }


def _group(ka: KeyAccess, group_id: int) -> ExceptionGroup:
    return get_object_or_404(
        ExceptionGroup.objects.select_related("workspace", "team", "assignee"),
        workspace_id=ka.workspace.pk,
        pk=group_id,
    )


@api.get(
    "/w/{ws}/exceptions/{group_id}",
    response={200: GroupDetail, **READ},
    tags=["exceptions"],
    summary="One exception group",
)
def get_group(request: HttpRequest, ws: str, group_id: RowId) -> dict[str, Any]:
    """The group, its latest occurrences (at most 500) and its whole history."""
    ka = key_access(request, ws)
    group = _group(ka, group_id)
    occurrences = Occurrence.objects.filter(group=group).order_by("-last_seen", "-id")[:MAX_PAGE]
    history = Activity.objects.filter(group=group).select_related("actor")
    return {
        **group_out(group),
        "occurrences": [
            {name: getattr(o, name) for name in OccurrenceOut.model_fields} | {"id": o.pk}
            for o in occurrences
        ],
        "history": [activity_out(a) for a in history],
    }


def _assignee(group: ExceptionGroup, username: str | None) -> User | None:
    if not username:
        return None
    user = User.objects.filter(
        username=username, is_active=True, memberships__workspace_id=group.workspace_id
    ).first()
    if user is None:
        raise ApiError(422, "invalid", f"{username!r} is not a person of this workspace.")
    return user


def _act(request: HttpRequest, ws: str, group_id: int, action: str, body: ActionIn) -> Any:
    ka = key_access(request, ws)
    group = _group(ka, group_id)
    if action == Action.COMMENT:
        require_act(ka)  # any act key comments, as any member does on the pages
    else:
        require_act(ka, group.team_slug)
    params: dict[str, Any] = {"note": body.note}
    if action == Action.ASSIGN:
        params["assignee"] = _assignee(group, body.assignee)
    if action == Action.SNOOZE:
        params.update(until=body.until, more=body.more)
    try:
        activity = apply_action(group, action, ka.key.actor, **params)
    except IllegalAction as exc:
        return Status(409, {"error": "not_applied", "detail": str(exc)})
    group = _group(ka, group_id)
    return Status(
        200,
        {
            "message": done_message(action, group),
            "group": group_out(group),
            "activity": activity_out(activity),
        },
    )


def done_message(action: str, group: ExceptionGroup) -> str:
    """What the action did, in the group page's words."""
    if action == Action.RETRY:
        if group.state == ExceptionGroup.State.RESOLVED:
            return "Retried: every event got through, so the group is resolved."
        return (
            f"Retried: {group.open_count} blocked event(s) sent back. The group resolves itself "
            "once they all get through."
        )
    if action == Action.ASSIGN:
        return f"Assigned to {group.assignee.get_username() if group.assignee else 'nobody'}."
    if action == Action.COMMENT:
        return "Commented."
    return f"{group.get_state_display()}."


def _register(action: str, doc: str) -> None:
    def act(request: HttpRequest, ws: str, group_id: RowId, body: ActionIn | None = None) -> Any:
        # No body at all is an empty one: `POST …/retry` needs nothing more.
        return _act(request, ws, group_id, action, body or ActionIn())

    act.__doc__ = doc
    api.post(
        f"/w/{{ws}}/exceptions/{{group_id}}/{action}",
        response={200: ActionOut, **ACT},
        tags=["exceptions"],
        summary=f"{Action(action).label} a group",
        operation_id=f"{action}_group",
        url_name=f"{action}_group",
    )(act)


ACTIONS: dict[str, str] = {
    Action.ASSIGN: "Assign to a person of the workspace (`assignee`: a username; null unassigns).",
    Action.COMMENT: "Add a comment (`note`); any read-and-act key of the workspace may.",
    Action.ACKNOWLEDGE: "Acknowledge an open group.",
    Action.SNOOZE: "Snooze until a time (`until`) or N more occurrences (`more`).",
    Action.UNSNOOZE: "Wake a snoozed group.",
    Action.RESOLVE: "Resolve: its blocking events are skipped.",
    Action.IGNORE: "Ignore: its blocking events are skipped, and new ones too.",
    Action.REOPEN: "Reopen a resolved or ignored group.",
    Action.RETRY: "Send the blocked events back to the engine; the group resolves itself once "
    "they all get through.",
}
for _action, _doc in ACTIONS.items():
    _register(_action, _doc + " 409 when the group's state does not allow it, saying why.")


@api.post(
    "/w/{ws}/exceptions/{group_id}/fix",
    response={200: ActionOut, **ACT},
    tags=["exceptions"],
    summary="Fix a group",
    operation_id="fix_group",
)
def fix_group(request: HttpRequest, ws: str, group_id: RowId, body: FixIn) -> Any:
    """The kind's fix (a SKU alias, the customer's email, a field mapping), as the group page's
    form: the engine retries every event the cause blocked."""
    ka = key_access(request, ws)
    group = _group(ka, group_id)
    require_act(ka, group.team_slug)
    form = fix_form_class(group.kind)(body.values)
    if not form.is_valid():
        errors = [{"loc": [k], "msg": " ".join(str(m) for m in v)} for k, v in form.errors.items()]
        return Status(422, {"error": "invalid", "detail": "The fix was refused.", "errors": errors})
    try:
        message = apply_fix(group, ka.key.actor, form.hook_data(group))
    except ValueError as exc:
        return Status(422, {"error": "invalid", "detail": str(exc)})
    except IllegalAction as exc:
        return Status(409, {"error": "not_applied", "detail": str(exc)})
    group = _group(ka, group_id)
    latest = Activity.objects.filter(group=group, kind=Activity.Kind.FIXED).last()
    return Status(
        200,
        {
            "message": message or "Fixed.",
            "group": group_out(group),
            "activity": activity_out(latest) if latest else None,
        },
    )
