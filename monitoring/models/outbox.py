"""The delivery half of the engine's rows: the outbox (operations, the events each carries, the
DotDigital imports they went in) and what Syncdesk knows of the DotDigital side (suppressions,
list memberships, program enrolments, cached data fields and collection schemas).

Work is rows, not messages: an `Operation` is claimed with a lease like an event is, so a worker
killed at any point leaves a row whose lease expires and is claimed again. Writes to DotDigital
are upserts by key, so sending an operation twice never duplicates a contact or a record.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Workspace
from connectors.models import Connection
from monitoring.models.events import Lease, SourceEvent
from monitoring.models.state import Customer

OPEN_STATES = ("pending", "sending", "sent")


class DeliveryBatch(Lease):
    """One DotDigital import (contacts or one insight collection): polled until it is done.

    `next_attempt_at` is when to poll next; the lease keeps two workers from polling one import.
    A bulk import is `awaited` once it carries a record a realtime write waits for (a refund's
    contact in a nightly import): the realtime lane polls it then, on its own cadence.
    """

    class Kind(models.TextChoices):
        CONTACTS = "contacts", "Contact import"
        INSIGHT = "insight", "Insight import"

    class State(models.TextChoices):
        SUBMITTED = "submitted", "Submitted"
        FINISHED = "finished", "Finished"
        FAILED = "failed", "Failed"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    destination = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    lane = models.CharField(max_length=10, choices=SourceEvent.Lane.choices)
    collection = models.CharField(max_length=120, blank=True)
    import_id = models.CharField(max_length=80, help_text="DotDigital's import id")
    state = models.CharField(max_length=10, choices=State.choices, default=State.SUBMITTED)
    raw_status = models.CharField(max_length=40, blank=True)
    records = models.PositiveIntegerField(default=0)
    body_bytes = models.PositiveBigIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    summary = models.JSONField(default=dict, blank=True)
    polls = models.PositiveIntegerField(default=0)
    submitted_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    awaited = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["destination", "import_id"], name="batch_import_once"),
        ]
        indexes = [
            # The confirmation sweep: submitted imports due for a poll.
            models.Index(
                fields=["destination", "lane", "next_attempt_at"],
                name="batch_due",
                condition=Q(state="submitted"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} import {self.import_id}"


class Operation(Lease):
    """One write to DotDigital, coalesced per destination key: while an operation of a key is open
    (pending, sending or sent), newer state replaces its payload and bumps its `version` instead of
    queueing a second write, and only one write per key is in flight at a time."""

    class Kind(models.TextChoices):
        CONTACT = "contact", "Contact upsert"
        CONSENT = "consent", "Subscription change"
        INSIGHT = "insight", "Insight record upsert"
        LIST_ADD = "list_add", "Add to list"
        LIST_REMOVE = "list_remove", "Remove from list"

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending (leased)"
        SENT = "sent", "Sent in an import, awaiting confirmation"
        DELIVERED = "delivered", "Delivered"
        SKIPPED = "skipped", "Skipped"
        FAILED = "failed", "Failed (in the inbox)"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    destination = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=400, help_text="Destination key, e.g. contact:jo@example.com")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    lane = models.CharField(max_length=10, choices=SourceEvent.Lane.choices)
    record_key = models.CharField(
        max_length=300, help_text="The key DotDigital knows the record by (email, record key)."
    )
    contact_key = models.CharField(
        max_length=254, blank=True, help_text="The contact this write needs to exist first."
    )
    customer = models.ForeignKey(
        Customer, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    collection = models.CharField(max_length=120, blank=True)
    payload = models.JSONField(default=dict)
    version = models.PositiveBigIntegerField(default=0)
    sent_version = models.PositiveBigIntegerField(default=0)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    batch = models.ForeignKey(
        DeliveryBatch, on_delete=models.SET_NULL, null=True, blank=True, related_name="operations"
    )
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    via = models.CharField(max_length=10, blank=True, help_text="single | import")
    reason = models.TextField(blank=True)
    error_code = models.CharField(max_length=120, blank=True)
    error_text = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["destination", "key"],
                name="operation_open_once",
                condition=Q(state__in=OPEN_STATES),
            ),
        ]
        indexes = [
            # The delivery claim: due operations of one destination and lane.
            models.Index(
                fields=["destination", "lane", "next_attempt_at"],
                name="operation_due",
                condition=Q(state__in=["pending", "sending"]),
            ),
            # "Contacts before the insight data that refers to them": open writes of a contact.
            models.Index(
                fields=["destination", "contact_key"],
                name="operation_contact_open",
                condition=Q(state__in=OPEN_STATES),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.key} ({self.state})"


class OperationEvent(models.Model):
    """An event carried by an operation, from the operation's `version` on. Its outcome is set when
    a write of that version (or newer) is confirmed, skipped or failed; an event is done when all
    its rows have an outcome."""

    class Outcome(models.TextChoices):
        OPEN = "", "Open"
        DELIVERED = "delivered", "Delivered"
        SKIPPED = "skipped", "Skipped"
        FAILED = "failed", "Failed"

    # No index of their own: the two below lead with each (a link is inserted and updated about
    # twice an event, and every index is written each time: its `outcome` is indexed).
    operation = models.ForeignKey(
        Operation, on_delete=models.CASCADE, related_name="links", db_index=False
    )
    event = models.ForeignKey(
        SourceEvent, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    version = models.PositiveBigIntegerField()
    outcome = models.CharField(max_length=10, choices=Outcome.choices, blank=True, default="")
    reason = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["operation", "event"], name="operation_event_once"),
        ]
        indexes = [
            # Settling events: which of an event's operations are still open.
            models.Index(fields=["event", "outcome"], name="operation_event_open"),
        ]

    def __str__(self) -> str:
        return f"event {self.event_id} in operation {self.operation_id} v{self.version}"


class Suppression(models.Model):
    """An opt-out or bounce DotDigital holds, pulled from its suppressions feed with the time it
    happened there (`dateRemoved`): a source's opt-in older than this never re-subscribes."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    destination = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    email = models.CharField(max_length=254, help_text="Normalised (trimmed, lower case).")
    contact_id = models.BigIntegerField(null=True, blank=True)
    reason = models.CharField(max_length=60)
    date_removed = models.DateTimeField(help_text="When DotDigital suppressed the contact.")
    pulled_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["destination", "email"], name="suppression_once"),
        ]

    def __str__(self) -> str:
        return f"{self.email}: {self.reason} at {self.date_removed:%Y-%m-%d %H:%M}"


class DestinationCache(models.Model):
    """What Syncdesk read from a DotDigital account and keeps for a while: its data fields, a
    collection's schema, its lists, the suppressions cursor."""

    destination = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=160)
    value = models.JSONField(default=dict, blank=True)
    fetched_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["destination", "name"], name="destination_cache_once"),
        ]

    def __str__(self) -> str:
        return f"{self.name} of connection {self.destination_id}"


class ListMembership(models.Model):
    """What Syncdesk has put a contact on (or taken it off) in DotDigital: programs enrol through
    these lists, and an expiry takes the contact off again (e.g. 30 days after a purchase)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    destination = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    list_name = models.CharField(max_length=120)
    email = models.CharField(max_length=254)
    customer = models.ForeignKey(
        Customer, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    member = models.BooleanField(default=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["destination", "list_name", "email"], name="list_membership_once"
            ),
        ]
        indexes = [
            # The expiry sweep: members whose time on a list is up.
            models.Index(
                fields=["expires_at"], name="list_membership_expiry", condition=Q(member=True)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.email} {'on' if self.member else 'off'} {self.list_name}"


class DirectEnrolment(models.Model):
    """Configured direct enrolment: events of `event_type` enrol their contact in a program, at most
    once per contact (DotDigital has no un-enrol and allows 20 enrolment calls an hour)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    destination = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    program_id = models.PositiveBigIntegerField()
    event_type = models.CharField(max_length=40)
    enabled = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["destination", "program_id", "event_type"], name="direct_enrolment_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} → program {self.program_id}"


class ProgramEnrolment(models.Model):
    """One contact to enrol in one program, sent at most once: marked `sending` (committed) before
    the call, so a timeout or a crash leaves `unknown`, never a second enrolment."""

    class State(models.TextChoices):
        PENDING = "pending", "Waiting for the next enrolment call"
        SENDING = "sending", "In an enrolment call"
        SENT = "sent", "Enrolled"
        UNKNOWN = "unknown", "Outcome unknown (not retried)"
        FAILED = "failed", "Failed"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    destination = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    program_id = models.PositiveBigIntegerField()
    email = models.CharField(max_length=254)
    event = models.ForeignKey(
        SourceEvent, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    enrolment_id = models.CharField(max_length=80, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["destination", "program_id", "email"], name="program_enrolment_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.email} in program {self.program_id} ({self.state})"


class LaneRunner(models.Model):
    """Who is running one destination's lane right now (a lease): one runner per lane, so extra
    wake-ups return at once instead of filling a queue's worker slots."""

    destination = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    lane = models.CharField(max_length=10, choices=SourceEvent.Lane.choices)
    owner = models.CharField(max_length=64, blank=True)
    until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["destination", "lane"], name="lane_runner_once"),
        ]

    def __str__(self) -> str:
        return f"{self.lane} of connection {self.destination_id}: {self.owner or 'idle'}"
