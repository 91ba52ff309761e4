"""API keys: what a script or another system uses to read Syncdesk and act in its inbox."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from accounts.models import Team, Workspace


class ApiKey(models.Model):
    """One key of a workspace, acting with the permissions of its team (none: as an admin).

    Only the key's SHA-256 digest is stored: the key is shown once, when it is made. Its actor is
    an inactive user named after the key (no password, no membership), so the inbox's and the
    alerts' history rows name the key as the one who acted, as they name a person.
    """

    class Scope(models.TextChoices):
        READ = "read", "Read"
        ACT = "act", "Read and act"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(
        max_length=80, help_text="Who uses it, e.g. 'Zendesk'; shown as the actor in history."
    )
    team = models.ForeignKey(
        Team,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        help_text="The team it acts for; empty: every team, as a workspace admin.",
    )
    scope = models.CharField(max_length=4, choices=Scope.choices, default=Scope.READ)
    prefix = models.CharField(max_length=12, help_text="The key's first characters, to tell it.")
    digest = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the key.")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The inactive user history rows name for this key.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["revoked_at", "name", "pk"]
        indexes = [
            # The keys page: a workspace's keys.
            models.Index(fields=["workspace", "name"], name="apikey_workspace"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def can_act(self) -> bool:
        return self.scope == self.Scope.ACT
