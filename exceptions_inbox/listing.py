"""What a person may see in the inbox, and the tabs, filters and search over it.

Every query starts from the person's memberships (`InboxScope`), so a cross-workspace inbox can
never show another workspace's groups. Lists are paged without COUNT(*): the tables page lazily and
the tab counts stop at `COUNT_CAP` (a tab with more than that reads "200+").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import Q, QuerySet
from django.http import Http404
from django.utils import timezone

from accounts.access import WorkspaceAccess
from accounts.models import Membership, Team
from exceptions_inbox.models import ExceptionGroup, Occurrence

if TYPE_CHECKING:
    from django.contrib.auth.models import User

S = ExceptionGroup.State
COUNT_CAP = 200
SEARCH_CAP = 500

TABS: list[tuple[str, str]] = [
    ("review", "For review"),
    ("open", "Open"),
    ("mine", "Mine"),
    ("team", "My team"),
    ("snoozed", "Snoozed"),
    ("resolved", "Resolved"),
    ("ignored", "Ignored"),
]
AGES: list[tuple[str, str]] = [
    ("", "Any age"),
    ("1h", "New in the last hour"),
    ("24h", "New in the last 24 hours"),
    ("7d", "New in the last 7 days"),
    ("old", "Older than 7 days"),
]


@dataclass(frozen=True)
class InboxScope:
    """The workspaces one inbox page covers, with what the person may do in each."""

    user: User
    accesses: dict[int, WorkspaceAccess]
    team_ids: frozenset[int]

    @property
    def workspace_ids(self) -> list[int]:
        return list(self.accesses)

    @property
    def single(self) -> WorkspaceAccess | None:
        return next(iter(self.accesses.values())) if len(self.accesses) == 1 else None

    def can_change(self, group: ExceptionGroup) -> bool:
        """Only the owning team or an admin changes a group."""
        access = self.accesses.get(group.workspace_id)
        if access is None:
            return False
        return access.is_admin or (group.team_id is not None and group.team_id in self.team_ids)

    def may_change(self) -> Q:
        """`can_change` as a filter: the admin's workspaces, and the person's teams' groups."""
        admin_of = [ws for ws, access in self.accesses.items() if access.is_admin]
        return Q(workspace_id__in=admin_of) | Q(team_id__in=sorted(self.team_ids))

    def groups(self) -> QuerySet[ExceptionGroup]:
        return ExceptionGroup.objects.filter(workspace_id__in=self.workspace_ids)

    @property
    def landing_tab(self) -> str:
        """Where the inbox opens: a member lands on their team's groups (what they may act on),
        an admin on everything for review. A member of no team sees everything too."""
        if any(access.is_admin for access in self.accesses.values()) or not self.team_ids:
            return "review"
        return "team"


def scope_for(user: User, workspace_slug: str | None = None) -> InboxScope:
    """The person's inbox scope: one workspace (404 outside their memberships) or all of theirs."""
    memberships = Membership.objects.filter(user=user).select_related("workspace")
    if workspace_slug is not None:
        memberships = memberships.filter(workspace__slug=workspace_slug)
    teams = list(
        Team.objects.filter(
            members=user, workspace_id__in=[m.workspace_id for m in memberships]
        ).values_list("pk", "workspace_id", "slug")
    )
    accesses = {
        m.workspace_id: WorkspaceAccess(
            m.workspace,
            m,
            frozenset(slug for _pk, ws_id, slug in teams if ws_id == m.workspace_id),
        )
        for m in memberships
    }
    if workspace_slug is not None and not accesses:
        raise Http404("No such workspace")
    return InboxScope(user, accesses, frozenset(pk for pk, _ws, _slug in teams))


def in_tab(qs: QuerySet[ExceptionGroup], tab: str, scope: InboxScope) -> QuerySet[ExceptionGroup]:
    if tab == "review":  # new and regressed: open, not yet acknowledged
        return qs.filter(state=S.OPEN)
    if tab == "open":
        return qs.filter(state__in=[S.OPEN, S.ACKNOWLEDGED])
    if tab == "mine":
        return qs.filter(assignee=scope.user, state__in=[S.OPEN, S.ACKNOWLEDGED, S.SNOOZED])
    if tab == "team":
        return qs.filter(team_id__in=scope.team_ids, state__in=[S.OPEN, S.ACKNOWLEDGED, S.SNOOZED])
    if tab in (S.SNOOZED, S.RESOLVED, S.IGNORED):
        return qs.filter(state=tab)
    raise ValueError(tab)


def filtered(
    qs: QuerySet[ExceptionGroup], filters: dict[str, Any], scope: InboxScope
) -> QuerySet[ExceptionGroup]:
    """Apply the filter form's cleaned data (kind, team, flow, age, q) to a queryset. A search
    is run once and its group ids kept in `filters["group_ids"]` for the tab counts."""
    if filters.get("kind"):
        qs = qs.filter(kind=filters["kind"])
    if filters.get("team"):
        # By literal ids, not a join or subquery on the slug: the planner then knows the team
        # and reads the partial indexes in order instead of sorting every match.
        team_ids = list(
            Team.objects.filter(
                workspace_id__in=scope.workspace_ids, slug=filters["team"]
            ).values_list("pk", flat=True)
        )
        qs = qs.filter(team_id__in=team_ids)
    if filters.get("flow"):
        qs = qs.filter(flow_key=filters["flow"])
    age = filters.get("age")
    if age:
        now = timezone.now()
        if age == "old":
            qs = qs.filter(first_seen__lt=now - timedelta(days=7))
        else:
            span = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}
            qs = qs.filter(first_seen__gte=now - span[age])
    if filters.get("q"):
        if "group_ids" not in filters:
            filters["group_ids"] = search_group_ids(scope, filters["q"])
        qs = qs.filter(pk__in=filters["group_ids"])
    return qs


def search_group_ids(scope: InboxScope, text: str) -> list[int]:
    """Groups whose subject or any occurrence has this order number, SKU, email or source event
    id (exact; emails also lower-cased). Two index lookups, at most SEARCH_CAP groups each."""
    text = text.strip()
    values = sorted({text, text.lower()})
    ws = scope.workspace_ids
    by_occurrence = (
        Occurrence.objects.filter(workspace_id__in=ws)
        .filter(Q(email__in=values) | Q(order_number=text) | Q(sku=text) | Q(source_event_id=text))
        .values_list("group_id", flat=True)
        .distinct()[:SEARCH_CAP]
    )
    by_group = (
        ExceptionGroup.objects.filter(workspace_id__in=ws)
        .filter(Q(email__in=values) | Q(order_number=text) | Q(sku=text))
        .values_list("pk", flat=True)[:SEARCH_CAP]
    )
    return sorted(set(by_occurrence) | set(by_group))


def bounded_counts(querysets: list[QuerySet[Any]], cap: int = COUNT_CAP) -> list[int]:
    """`bounded_count` of each queryset, in one round trip (the tab counts: seven small index
    reads, which on a busy server cost more in round trips than in reading)."""
    if not querysets:
        return []
    db = querysets[0].db
    parts, params = [], []
    for n, qs in enumerate(querysets):
        try:
            sql, part_params = qs.order_by().values("pk")[:cap].query.get_compiler(db).as_sql()
        except EmptyResultSet:  # e.g. My team for a person in no team
            parts.append("0")
            continue
        parts.append(f"(SELECT COUNT(*) FROM ({sql}) AS tab{n})")
        params.extend(part_params)
    with connections[db].cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(parts)}", params)
        row = cursor.fetchone()
    return [int(value) for value in row]


def bounded_count(qs: QuerySet[Any], cap: int = COUNT_CAP) -> int:
    """How many rows, counting no further than `cap` (shown as "200+"): the cost of a page stays
    the same however many groups a tab holds."""
    return qs.order_by().values("pk")[:cap].count()
