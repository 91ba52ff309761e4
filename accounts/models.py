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
