"""What watching the flows keeps.

- `FlowWatch`: per-flow alert settings (lag threshold and how long, stalled grace and trading hours,
  escalation, the owning team and its webhook) and the lag breach in progress.
- `Alert` with its history (`AlertChange`) and one `AlertNotice` per change: the healthchecks
  model (a Flip per state change, one notification per flip), with acknowledge and escalation.
- `FlowSample`: a flow's backlog once a minute, for the backlog chart.
- `ReconciliationRun` and its `ReconciliationDifference` rows.
- `OptOutWriteBack`: an opt-out DotDigital holds, written back to the source, with both times.
"""

from __future__ import annotations

from datetime import time

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Workspace
from connectors.models import Connection
from monitoring.models.flows import Flow
from monitoring.models.outbox import Suppression


class FlowWatch(models.Model):
    """How one flow is watched. Created with defaults the first time the flow is checked."""

    flow = models.OneToOneField(Flow, on_delete=models.CASCADE, related_name="watch")
    enabled = models.BooleanField(default=True)
    lag_p95_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="p95 latency above this is lag; empty: the flow's threshold.",
    )
    lag_backlog_age_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Oldest waiting event older than this is lag; empty: the flow's threshold.",
    )
    lag_for_minutes = models.PositiveIntegerField(
        default=5, help_text="Lag must last this long before an alert triggers."
    )
    stalled_grace_minutes = models.PositiveIntegerField(
        default=60, help_text="No event for this long during trading hours: the flow is stalled."
    )
    trading_days = models.CharField(
        max_length=7, default="01234", help_text="Weekdays traded, Monday = 0 (e.g. 0123456)."
    )
    trading_start = models.TimeField(default=time(8, 0))
    trading_end = models.TimeField(default=time(20, 0))
    trading_timezone = models.CharField(max_length=60, default="Europe/London")
    escalate_after_minutes = models.PositiveIntegerField(
        default=30, help_text="Escalate to the admins when nobody acknowledges within this."
    )
    owning_team = models.SlugField(max_length=40, default="ops")
    webhook_url = models.URLField(
        blank=True, help_text="Slack-compatible webhook for this flow's alerts; empty: the default."
    )
    reconcile_sample = models.PositiveIntegerField(
        default=0, help_text="Contacts and orders compared per run; 0 compares all."
    )
    reconcile_source_days = models.PositiveIntegerField(
        default=7,
        help_text="Reconciliation also reads the source's orders of this many days through its "
        "connector's poll (where it has one) and compares them with Syncdesk's state.",
    )
    opt_out_webhook_url = models.URLField(
        blank=True,
        help_text="Where the source's connector cannot record an opt-out, it is POSTed here as "
        "JSON (an outbound webhook to the source's own intake); empty: none.",
    )
    lag_breach_since = models.DateTimeField(null=True, blank=True, editable=False)

    def __str__(self) -> str:
        return f"watch of {self.flow}"

    @classmethod
    def for_flow(cls, flow: Flow) -> FlowWatch:
        """The flow's watch, created with the defaults when it has none yet. The configuration
        pages and the watch both read it, so it lives with the model both may import."""
        watch, _ = cls.objects.get_or_create(flow=flow)
        watch.flow = flow  # the caller's instance: no query to read the flow back
        return watch

    @property
    def p95_limit(self) -> int:
        return self.lag_p95_seconds or self.flow.lag_threshold_seconds

    @property
    def backlog_age_limit(self) -> int:
        return self.lag_backlog_age_seconds or self.flow.lag_threshold_seconds


class Alert(models.Model):
    """A lag or stalled condition of a flow: triggered → acknowledged → resolved."""

    class Kind(models.TextChoices):
        LAG = "lag", "Lag"
        STALLED = "stalled_flow", "Stalled flow"

    class State(models.TextChoices):
        TRIGGERED = "triggered", "Triggered"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        RESOLVED = "resolved", "Resolved"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="alerts")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    state = models.CharField(max_length=15, choices=State.choices, default=State.TRIGGERED)
    team_slug = models.SlugField(max_length=40, default="ops")
    message = models.TextField()
    detail = models.JSONField(default=dict, blank=True)
    triggered_at = models.DateTimeField(default=timezone.now)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    escalated_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-triggered_at"]
        constraints = [
            # One open alert per flow and kind: a check that finds it open again changes nothing.
            models.UniqueConstraint(
                fields=["flow", "kind"], name="alert_open_once", condition=~Q(state="resolved")
            ),
        ]
        indexes = [
            # The escalation sweep: triggered alerts nobody has acknowledged.
            models.Index(
                fields=["triggered_at"],
                name="alert_unacknowledged",
                condition=Q(state="triggered", escalated_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} on {self.flow_id} ({self.state})"

    @property
    def event_key(self) -> str:
        """The key its inbox occurrence is filed under."""
        return f"alert:{self.pk}"

    @property
    def is_open(self) -> bool:
        return self.state != self.State.RESOLVED


class AlertChange(models.Model):
    """One change of an alert (a history row); each has exactly one notice."""

    class Kind(models.TextChoices):
        TRIGGERED = "triggered", "Triggered"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        ESCALATED = "escalated", "Escalated"
        RESOLVED = "resolved", "Resolved (recovered)"

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="changes")
    kind = models.CharField(max_length=15, choices=Kind.choices)
    at = models.DateTimeField(default=timezone.now)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Empty: the system.",
    )
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["at", "pk"]

    def __str__(self) -> str:
        return f"{self.alert_id} {self.kind} at {self.at:%Y-%m-%d %H:%M}"


class AlertNotice(models.Model):
    """The notice of one change, sent by e-mail to the owning team and to its webhook."""

    change = models.OneToOneField(AlertChange, on_delete=models.CASCADE, related_name="notice")
    subject = models.CharField(max_length=200)
    text = models.TextField()
    recipients = models.JSONField(default=list, blank=True)
    webhook_url = models.URLField(blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True)
    webhook_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    created = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.subject


class FlowSample(models.Model):
    """A flow's backlog at one minute (for the backlog chart); written by the watch check."""

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="samples")
    at = models.DateTimeField()
    backlog = models.PositiveIntegerField(default=0)
    held = models.PositiveIntegerField(default=0)
    oldest_age_seconds = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["flow", "at"], name="flow_sample_once"),
        ]

    def __str__(self) -> str:
        return f"{self.flow_id} at {self.at:%H:%M}: {self.backlog}"


class ReconciliationRun(models.Model):
    """One comparison of a flow's engine state with DotDigital (a run row per job)."""

    class State(models.TextChoices):
        RUNNING = "running", "Running"
        FINISHED = "finished", "Finished"
        FAILED = "failed", "Failed"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="reconciliation_runs")
    state = models.CharField(max_length=10, choices=State.choices, default=State.RUNNING)
    sample = models.PositiveIntegerField(default=0, help_text="0: in full")
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    engine_contacts = models.PositiveIntegerField(default=0)
    dotdigital_contacts = models.PositiveIntegerField(
        null=True, blank=True, help_text="Contacts listed in DotDigital; empty: not listed."
    )
    checked = models.PositiveIntegerField(default=0)
    matched = models.PositiveIntegerField(default=0)
    mismatched = models.PositiveIntegerField(default=0)
    missing = models.PositiveIntegerField(default=0)
    source_orders = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Orders read from the source through its connector; empty: not read (the "
        "source cannot be polled, or the read failed).",
    )
    source_window_start = models.DateTimeField(null=True, blank=True)
    source_window_end = models.DateTimeField(null=True, blank=True)
    source_error = models.TextField(blank=True, help_text="Why the source could not be read.")
    error = models.TextField(blank=True)
    # Progress, so an interrupted run resumes where it stopped: the step it is in, the last
    # subject compared in it (a customer id, then an order email), and how many it will compare.
    phase = models.CharField(max_length=10, blank=True, default="")
    cursor = models.CharField(max_length=320, blank=True, default="")
    total = models.PositiveIntegerField(
        null=True, blank=True, help_text="Contacts and orders to compare with DotDigital."
    )
    sample_ids = models.JSONField(
        default=dict, blank=True, help_text="A sampled run's customers and orders, chosen once."
    )
    retries = models.PositiveIntegerField(
        default=0, help_text="Retryable answers from DotDigital retried so far."
    )
    # The worker comparing now; a lease that ran out (its worker died) lets the next one resume.
    lease_owner = models.CharField(max_length=40, blank=True, default="")
    lease_until = models.DateTimeField(null=True, blank=True)
    resume_at = models.DateTimeField(
        null=True, blank=True, help_text="Paused (DotDigital kept failing): continues then."
    )
    pause_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"reconciliation {self.pk} of {self.flow_id}"

    @property
    def percent(self) -> int:
        """How far the comparison with DotDigital has got, 0–100 (for the progress bar)."""
        if not self.total:
            return 0
        return min(100, round(100 * self.checked / self.total))


class ReconciliationDifference(models.Model):
    """One value that differs (or a contact or record missing) between the engine and DotDigital."""

    class Kind(models.TextChoices):
        CONTACT_MISSING = "contact_missing", "Contact missing in DotDigital"
        FIELD = "field", "Contact field differs"
        RECORD_MISSING = "record_missing", "Order record missing in DotDigital"
        RECORD = "record", "Order record differs"
        SOURCE_MISSING = "source_missing", "Order in the source never received"
        SOURCE_TOTAL = "source_total", "Order total differs from the source"

    run = models.ForeignKey(ReconciliationRun, on_delete=models.CASCADE, related_name="differences")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    subject = models.CharField(max_length=300, help_text="The email or order number")
    email = models.CharField(max_length=254, blank=True)
    order_number = models.CharField(max_length=120, blank=True)
    field = models.CharField(max_length=60, blank=True)
    engine_value = models.TextField(blank=True)
    dotdigital_value = models.TextField(blank=True)
    source_value = models.TextField(blank=True)
    source_events = models.JSONField(
        default=list,
        blank=True,
        help_text="The source's canonical events for this order, as read (ingested by a repair).",
    )
    team_slug = models.SlugField(max_length=40)
    repaired_at = models.DateTimeField(null=True, blank=True)
    repaired_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    def __str__(self) -> str:
        return f"{self.subject} {self.field or self.kind}"

    @property
    def event_key(self) -> str:
        return f"reconciliation:{self.pk}"


class OptOutWriteBack(models.Model):
    """An opt-out made in DotDigital, written back to the flow's source: when it happened there
    (`opted_out_at`) and when the source was told (`written_at`)."""

    class State(models.TextChoices):
        PENDING = "pending", "Waiting to be written"
        WRITTEN = "written", "Written to the source"
        FAILED = "failed", "Failed (in the inbox)"

    class Via(models.TextChoices):
        CONNECTOR = "connector", "The source's connector"
        WEBHOOK = "webhook", "Outbound webhook"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="opt_out_writes")
    source = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    suppression = models.ForeignKey(
        Suppression, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    email = models.CharField(max_length=254)
    reason = models.CharField(max_length=60, blank=True)
    opted_out_at = models.DateTimeField(help_text="When DotDigital suppressed the contact.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    via = models.CharField(
        max_length=10, choices=Via.choices, blank=True, help_text="How the source was told."
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    written_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-opted_out_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["flow", "email", "opted_out_at"], name="opt_out_write_once"
            ),
        ]
        indexes = [
            # The write-back sweep: opt-outs still to write that are due.
            models.Index(
                fields=["next_attempt_at"], name="opt_out_write_due", condition=Q(state="pending")
            ),
            # One contact's opt-outs: the timeline searched by email, the Opt-outs page's filter.
            models.Index(fields=["workspace", "email"], name="opt_out_write_contact"),
        ]

    def __str__(self) -> str:
        return f"{self.email} opt-out → {self.source_id} ({self.state})"

    @property
    def event_key(self) -> str:
        return f"optout:{self.pk}"
