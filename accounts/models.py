"""The ground floor: workspaces (one retailer each), memberships with a role, and teams."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models, transaction

DEFAULT_TEAMS: tuple[tuple[str, str], ...] = (
    ("marketing", "Marketing"),
    ("ops", "Ops"),
    ("finance", "Finance"),
    ("admins", "Admins"),
)


class Workspace(models.Model):
    """One retailer: its connections, flows, teams, events and exceptions belong here."""

    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=60, unique=True, help_text="Used in URLs: /w/<slug>/")
    currency = models.CharField(
        max_length=3,
        default="GBP",
        validators=[RegexValidator(r"^[A-Z]{3}$", "An ISO 4217 code such as GBP.")],
        help_text="The currency lifetime value and order totals are kept in.",
    )
    timezone = models.CharField(max_length=64, default="Europe/London")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Every workspace starts with the four teams exception kinds are routed to.
        adding = self._state.adding
        with transaction.atomic():
            super().save(*args, **kwargs)
            if adding:
                Team.objects.bulk_create(
                    [Team(workspace=self, slug=slug, name=name) for slug, name in DEFAULT_TEAMS],
                    ignore_conflicts=True,
                )

    def add_member(
        self, user: Any, role: str = "member", teams: tuple[str, ...] = ()
    ) -> Membership:
        membership, _ = Membership.objects.update_or_create(
            workspace=self, user=user, defaults={"role": role}
        )
        for team in self.teams.filter(slug__in=teams):
            team.members.add(user)
        return membership


class Membership(models.Model):
    class Role(models.TextChoices):
        ADMIN = "admin", "Admin"
        MEMBER = "member", "Member"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "workspace"], name="membership_once_per_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.workspace} ({self.role})"

    @property
    def is_admin(self) -> bool:
        return self.role == self.Role.ADMIN


class Team(models.Model):
    """A group of a workspace's people that owns exception kinds (marketing, ops, finance…)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="teams")
    slug = models.SlugField(max_length=40)
    name = models.CharField(max_length=80)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="teams", blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "slug"], name="team_slug_per_workspace")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.workspace.slug})"


class ConfigChange(models.Model):
    """One change to a workspace's configuration: who, when, what, and the before/after diff.

    Written only through `accounts.audit.record_change`, which never stores a secret's value: a
    changed secret appears in `changes` as ``{"field": ..., "secret": true}`` and reads "changed".
    The object is named by its type, id and label rather than a foreign key, so any app's objects
    can be audited from the ground floor, and the history outlives the object.
    """

    class Action(models.TextChoices):
        CREATED = "created", "Created"
        CHANGED = "changed", "Changed"
        DELETED = "deleted", "Deleted"
        TOKEN_ROTATED = "token_rotated", "Webhook token rotated"
        TESTED = "tested", "Tested"
        MEMBER_ADDED = "member_added", "Member added"
        MEMBER_REMOVED = "member_removed", "Member removed"

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="config_changes"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Who made the change; empty for Syncdesk itself.",
    )
    actor_name = models.CharField(
        max_length=150, blank=True, help_text="The actor's username then, kept if they leave."
    )
    action = models.CharField(max_length=20, choices=Action.choices)
    object_type = models.CharField(
        max_length=100, blank=True, help_text="app_label.model_name, e.g. connectors.connection."
    )
    object_id = models.CharField(max_length=64, blank=True)
    object_label = models.CharField(max_length=200)
    changes = models.JSONField(
        default=list,
        blank=True,
        help_text='[{"field", "before", "after"}] or [{"field", "secret": true}]: never a secret.',
    )
    note = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-pk"]
        indexes = [
            # The audit page: a workspace's changes, newest first.
            models.Index(fields=["workspace", "-created"], name="configchange_ws_created"),
            # An object's own history on its page.
            models.Index(
                fields=["workspace", "object_type", "object_id"], name="configchange_object"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.actor_name or 'Syncdesk'} {self.get_action_display()} {self.object_label}"

    @property
    def who(self) -> str:
        return self.actor_name or "Syncdesk"

    def lines(self) -> list[tuple[str, str, str, bool]]:
        """(field, before, after, secret) as shown: a secret reads only "changed"."""
        shown = []
        for change in self.changes or []:
            field = str(change.get("field", ""))
            if change.get("secret"):
                shown.append((field, "", "changed", True))
            else:
                shown.append(
                    (field, _shown(change.get("before")), _shown(change.get("after")), False)
                )
        return shown


def _shown(value: Any) -> str:
    if value is None or value == "" or value == []:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)
