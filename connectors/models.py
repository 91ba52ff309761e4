"""Connection: one account in an outside system (a DotDigital account, a WMS, an ERP)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.db import models
from django.utils import timezone

from accounts.fields import EncryptedJSONField, Secrets
from accounts.models import Workspace
from connectors.sources.registry import SOURCES


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Connection(models.Model):
    #: DotDigital (the destination), then every source in connectors/sources/registry.py's order.
    Kind = models.TextChoices(  # type: ignore[call-overload]
        "Kind",
        [("DOTDIGITAL", ("dotdigital", "DotDigital"))]
        + [(source.kind.upper(), (source.kind, source.label)) for source in SOURCES],
    )

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="connections")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    name = models.CharField(max_length=120)
    credentials = EncryptedJSONField(
        default=Secrets, blank=True, help_text="Encrypted at rest; never rendered back."
    )
    options = models.JSONField(
        default=dict, blank=True, help_text="Non-secret settings: endpoint, region, account id."
    )
    webhook_token_hash = models.CharField(max_length=64, unique=True, null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    paused_reason = models.TextField(blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    last_tested_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    def rotate_webhook_token(self) -> str:
        """Give the connection a new webhook token and return it: the only time it is seen."""
        token = secrets.token_urlsafe(32)
        self.webhook_token_hash = hash_token(token)
        if self.pk:
            self.save(update_fields=["webhook_token_hash"])
        return token

    @classmethod
    def for_webhook_token(cls, token: str) -> Connection | None:
        digest = hash_token(token)
        # One row by a unique column: no join, no ORDER BY (the webhook's first query).
        conn = next(iter(cls.objects.filter(webhook_token_hash=digest)[:1]), None)
        if conn is None or not hmac.compare_digest(conn.webhook_token_hash or "", digest):
            return None
        return conn

    @property
    def is_paused(self) -> bool:
        return self.status == self.Status.PAUSED

    def pause(self, reason: str) -> bool:
        """Pause (once): True if this call paused it, False if it already was."""
        changed = Connection.objects.filter(pk=self.pk, status=self.Status.ACTIVE).update(
            status=self.Status.PAUSED, paused_reason=reason, paused_at=timezone.now()
        )
        self.refresh_from_db(fields=["status", "paused_reason", "paused_at"])
        return bool(changed)

    def resume(self) -> bool:
        changed = Connection.objects.filter(pk=self.pk, status=self.Status.PAUSED).update(
            status=self.Status.ACTIVE, paused_reason="", paused_at=None
        )
        self.refresh_from_db(fields=["status", "paused_reason", "paused_at"])
        return bool(changed)


class RateWindow(models.Model):
    """The calls counted in the current rate window of one (account, tier), shared by every worker.

    Written only by `connectors.budget` with conditional UPDATEs. Times are epoch seconds (floats),
    so the window arithmetic is the same on PostgreSQL, SQLite and in the Redis script.
    """

    account_key = models.CharField(max_length=200, help_text="e.g. dotdigital:r1:12345")
    tier = models.CharField(max_length=40)
    limit = models.PositiveIntegerField(help_text="Calls per window: configured, then as reported.")
    window_seconds = models.FloatField()
    window_end = models.FloatField(default=0.0, help_text="Epoch seconds; 0 before the first call.")
    used = models.PositiveIntegerField(default=0)
    blocked_until = models.FloatField(
        default=0.0, help_text="Epoch seconds: after a 429 nobody calls this tier before then."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account_key", "tier"], name="ratewindow_account_tier")
        ]

    def __str__(self) -> str:
        return f"{self.account_key} {self.tier}: {self.used}/{self.limit}"


class ConcurrencySlot(models.Model):
    """One of the N slots of concurrent work (imports in flight) of an (account, kind).

    A slot is held by a named holder until it is released or its lease expires, so a worker
    killed mid-import frees its slot by itself.
    """

    account_key = models.CharField(max_length=200)
    kind = models.CharField(max_length=40)
    slot = models.PositiveSmallIntegerField()
    holder = models.CharField(max_length=100, blank=True)
    expires_at = models.FloatField(default=0.0, help_text="Epoch seconds the lease runs to.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account_key", "kind", "slot"], name="concurrencyslot_account_kind_slot"
            )
        ]
        # claim() looks for a free slot of one (account, kind); release() finds the holder's.
        indexes = [models.Index(fields=["account_key", "kind", "holder"])]

    def __str__(self) -> str:
        return f"{self.account_key} {self.kind}#{self.slot}: {self.holder or 'free'}"
