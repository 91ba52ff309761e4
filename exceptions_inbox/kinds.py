"""The registry of exception kinds: what each is called, who owns it by default, how to fix it,
and the hooks the engine registers for it.

The inbox imports no engine code: `monitoring` registers its hooks per kind when its app is ready
(`register_hooks`), and the inbox calls only those.

A group is one cause a person fixes once. The engine's subject keys, kind by kind: per flow (the
`per_flow` kinds, each order an occurrence) for no email, totals, negative orders, refunds over
the order, expired orphans and SKU gaps (the group lists each unknown SKU, each with its own alias
fix: a feed of legacy codes is one cause, not one group per code); per currency,
per DotDigital error code, per reconciled field, per source for opt-outs, per connection for a
paused connection, the flow itself for lag and stalls, per code and message for source warnings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

# Named only in the hooks' types; exceptions_inbox.models imports this module.
if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from exceptions_inbox.models import ExceptionGroup, Occurrence

# retry(occurrences): re-run the blocked events from the stage that failed, with today's mappings.
RetryHook = Callable[[Sequence["Occurrence"]], None]
# fix(group, data, actor): apply the kind's fix (e.g. add a SKU alias) and retry what it blocked;
# returns a message for the person, or raises ValueError with a message for the field.
FixHook = Callable[["ExceptionGroup", dict[str, Any], "User"], str]
# render_occurrence(occurrence): the blocked event and its payload, as context for a template
# ({"title": str, "fields": {name: value}, "payload": JSON-able}).
RenderHook = Callable[["Occurrence"], dict[str, Any]]
# render_occurrences(occurrences): the same for a page of occurrences at once, keyed by occurrence
# pk (one query for the page instead of one per row); preferred over render_occurrence when given.
RenderManyHook = Callable[[Sequence["Occurrence"]], dict[int, dict[str, Any]]]
# on_resolve / on_ignore(group, occurrences, actor, note): the blocked events become skipped.
CloseHook = Callable[["ExceptionGroup", Sequence["Occurrence"], "User | None", str], None]
# on_acknowledge(group, actor): e.g. an alert stops escalating.
AcknowledgeHook = Callable[["ExceptionGroup", "User | None"], None]
# suggest(group): candidate values for the fix. Plain strings (e.g. the flow's catalogue SKUs) the
# inbox ranks by similarity to the group's subject, so the hook may return the whole catalogue;
# `Suggestion`s come ranked by the engine, which knows more than the spelling (the product the
# blocked lines name), each with how close it is.
SuggestHook = Callable[["ExceptionGroup"], Sequence["str | Suggestion"]]
# prerequisite(group): the fix that must come before a retry can work (e.g. a flow with no opt-out
# webhook), or None. While there is one the inbox offers no retry and links to the fix instead.
PrerequisiteHook = Callable[["ExceptionGroup"], "Prerequisite | None"]


@dataclass(frozen=True)
class Suggestion:
    """One candidate for a kind's fix: the value the fix takes, what it is, and how close it is
    to what the group lacks (0–100)."""

    value: str
    closeness: int
    name: str = ""
    stock: int | None = None
    why: str = ""
    # What it is a suggestion for, in a group of several (e.g. which unknown SKU); "" for the
    # group's own subject.
    for_value: str = ""


@dataclass(frozen=True)
class Prerequisite:
    """What must be fixed before retrying can change anything, and where (`url`, `who` can)."""

    fix: str
    url: str = ""
    link_text: str = ""
    who: str = ""


HOOK_NAMES = frozenset(
    {
        "retry",
        "fix",
        "render_occurrence",
        "render_occurrences",
        "on_resolve",
        "on_ignore",
        "on_acknowledge",
        "suggest",
        "prerequisite",
    }
)


@dataclass
class Kind:
    slug: str
    title: str
    description: str
    runbook: str
    default_team: str
    fix_label: str = ""
    # One group per flow and cause (not per order): a cause a person fixes once, whatever the
    # number of orders it blocks; each occurrence names its order. The group then carries no
    # order number or email of its own (its occurrences do, for search).
    per_flow: bool = False
    retry: RetryHook | None = None
    fix: FixHook | None = None
    render_occurrence: RenderHook | None = None
    render_occurrences: RenderManyHook | None = None
    on_resolve: CloseHook | None = None
    on_ignore: CloseHook | None = None
    on_acknowledge: AcknowledgeHook | None = None
    suggest: SuggestHook | None = None
    prerequisite: PrerequisiteHook | None = None
    extra: dict[str, Any] = field(default_factory=dict)


KINDS: dict[str, Kind] = {}


def define(kind: Kind) -> Kind:
    KINDS[kind.slug] = kind
    return kind


def get_kind(slug: str) -> Kind:
    """The kind, or a generic one for a slug no code defines (old rows stay readable)."""
    return KINDS.get(slug) or Kind(
        slug=slug,
        title=slug.replace("_", " ").capitalize(),
        description="An exception of a kind this version of Syncdesk does not describe.",
        runbook="Look at the occurrences and their payloads.",
        default_team="admins",
    )


def register_hooks(slug: str, **hooks: Any) -> None:
    """Called by the engine when its app is ready, e.g.
    ``register_hooks("sku_mapping_gap", retry=..., fix=..., suggest=...)``. Passing None unregisters."""
    kind = KINDS[slug]
    for name, hook in hooks.items():
        if name not in HOOK_NAMES:
            raise TypeError(f"unknown hook {name!r}")
        setattr(kind, name, hook)


def hooks_of(slug: str) -> dict[str, Any]:
    """The hooks registered for a kind (for tests that stand in for the engine and restore them)."""
    kind = KINDS[slug]
    return {name: getattr(kind, name) for name in HOOK_NAMES}


def choices() -> list[tuple[str, str]]:
    return sorted(((k.slug, k.title) for k in KINDS.values()), key=lambda c: c[1])


define(
    Kind(
        slug="sku_mapping_gap",
        title="SKU not in the catalogue",
        description="Order lines name SKUs that, after cleaning rules and aliases, match no product in "
        "the workspace's catalogue. The events wait so DotDigital never gets a product it cannot show. "
        "One group per flow lists each unknown SKU with the orders it blocks.",
        runbook="For each unknown SKU, check the products suggested beside it (name, stock, how close). "
        "If it is another spelling of one, add the alias: every event it blocked is retried. Many "
        "at once (a legacy code list): import them on the SKU aliases page. If a product is new, "
        "wait for the next catalogue sync, then retry.",
        default_team="ops",
        per_flow=True,
        fix_label="Add SKU alias",
    )
)
define(
    Kind(
        slug="contact_without_email",
        title="Contact without an email",
        description="A customer or order arrived with no email address (phone, in-store or B2B), so "
        "DotDigital cannot hold a contact for it.",
        runbook="Find the customer's email in the source system. Record it here to retry the events, or "
        "resolve the group if the customer should not be in DotDigital.",
        default_team="ops",
        per_flow=True,
        fix_label="Record the email",
    )
)
define(
    Kind(
        slug="orphan_expired",
        title="Waited too long for its order",
        description="A shipment, refund or return referred to an order Syncdesk never received within the "
        "hold's deadline.",
        runbook="Check that the order exists in the source and that the flow carrying orders is healthy; "
        "backfill the order, then retry.",
        default_team="ops",
        per_flow=True,
    )
)
define(
    Kind(
        slug="out_of_sequence",
        title="Event out of sequence",
        description="An event arrived that contradicts a newer state Syncdesk already holds.",
        runbook="Compare the event with the order's timeline; retry once the source has settled.",
        default_team="ops",
    )
)
define(
    Kind(
        slug="guest_policy",
        title="Guest order excluded by policy",
        description="A guest checkout was held because the flow's guest policy excludes guests.",
        runbook="Change the flow's guest policy to merge guests, or ignore the group.",
        default_team="ops",
    )
)
define(
    Kind(
        slug="lag",
        title="Flow lagging",
        description="Events are taking longer than the flow's lag threshold to reach DotDigital.",
        runbook="Open the flow: check the backlog, the connection's health and DotDigital's rate limits. "
        "Acknowledge to stop escalation while you work on it.",
        default_team="ops",
    )
)
define(
    Kind(
        slug="stalled_flow",
        title="Flow stalled",
        description="No events arrived within the flow's grace period during trading hours.",
        runbook="Check the source system's webhook or poller and the connection's last error.",
        default_team="ops",
    )
)
define(
    Kind(
        slug="order_total_mismatch",
        title="Order total does not add up",
        description="The order's total differs from its lines, shipping, discounts and tax by more than "
        "one minor unit per line, so its value in DotDigital would be wrong.",
        runbook="Compare each order's total, parts and difference with the order in the source. A "
        "retry re-reads the same figures, so fix the order at source: its corrected version goes "
        "through on its own. Then resolve the group to skip the versions that did not add up.",
        default_team="finance",
        per_flow=True,
    )
)
define(
    Kind(
        slug="negative_order",
        title="Order with negative figures",
        description="An order arrived with a negative quantity or a negative total. Taken as an order "
        "it would count as a purchase and take its value off the customer's lifetime value in "
        "DotDigital, so it waits and nothing of it is sent.",
        runbook="Compare the figures with the document in the source. If it is money going back, have "
        "the source send it as a refund, or mark the document as a credit note or return "
        "(data.document_type) naming the order it credits in links; if the order is wrong, fix "
        "it at source. A retry re-reads the same document; the corrected one goes through on its "
        "own. Then resolve the group to skip the old versions.",
        default_team="finance",
        per_flow=True,
    )
)
define(
    Kind(
        slug="currency_mismatch",
        title="Order in another currency",
        description="The order's currency is not the workspace's, so it cannot be added to lifetime value.",
        runbook="Check the store's currency settings; resolve to skip, or retry after correcting.",
        default_team="finance",
    )
)
define(
    Kind(
        slug="refund_mismatch",
        title="Refund does not match its order",
        description="A refund exceeds what is left of its order's total.",
        runbook="Check the credit note against the order in the source.",
        default_team="finance",
        per_flow=True,
    )
)
define(
    Kind(
        slug="reconciliation_difference",
        title="DotDigital differs from the source",
        description="A scheduled reconciliation found a value in DotDigital that differs from the source of "
        "truth.",
        runbook="Open the reconciliation report; repair re-sends the source's value.",
        default_team="finance",
    )
)
define(
    Kind(
        slug="consent_sync_failed",
        title="Opt-out not written back",
        description="An opt-out made in DotDigital could not be written back to the source system.",
        runbook="Check the source connection, then retry. Until then the person may be mailed by other "
        "systems that read the source.",
        default_team="marketing",
    )
)
define(
    Kind(
        slug="enrolment_unknown",
        title="Enrolment may not have happened",
        description="DotDigital gave no answer to a call enrolling contacts into a program (a "
        "timeout, a dropped connection or a server error), so it may or may not have enrolled them. "
        "Syncdesk never sends an enrolment twice on its own: DotDigital has no un-enrol, and a "
        "second one would send the program's mails again.",
        runbook="Open the program's enrolments in DotDigital and look for these contacts. Retry the "
        "ones it does not have (each is sent once more); resolve the group when all are there.",
        default_team="marketing",
    )
)
define(
    Kind(
        slug="segment_gap",
        title="Contacts missing from a segment",
        description="Contacts the source says belong in a list are not in it in DotDigital.",
        runbook="Check the list's mapping and retry.",
        default_team="marketing",
    )
)
define(
    Kind(
        slug="schema_mismatch",
        title="Value does not fit DotDigital's field or schema",
        description="A value's type does not match its DotDigital data field, or an insight record does not "
        "match its collection's locked schema. Caught before sending.",
        runbook="Fix the field mapping's transform, or the data field's type in DotDigital, then retry.",
        default_team="admins",
    )
)
define(
    Kind(
        slug="field_mapping_missing",
        title="No field mapping",
        description="An event carries a value that no field mapping sends to DotDigital.",
        runbook="Create the mapping from the group page; the events it blocked are retried.",
        default_team="admins",
        fix_label="Create mapping",
    )
)
define(
    Kind(
        slug="dotdigital_rejected",
        title="DotDigital rejected a record",
        description="DotDigital refused a record (its code and text are on each occurrence).",
        runbook="Read DotDigital's code; fix the mapping or the data, then retry.",
        default_team="admins",
    )
)
define(
    Kind(
        slug="malformed_payload",
        title="Malformed webhook",
        description="A webhook body could not be read as events (bad JSON, wrong content type, schema "
        "errors). It is stored whole.",
        runbook="Read the stored body and the field errors; fix the sender, then ask it to resend.",
        default_team="admins",
    )
)
define(
    Kind(
        slug="connection_paused",
        title="Connection paused",
        description="An outside system refused the connection itself (password changed, wrong region, "
        "feature off). Work stays queued until a test of the connection succeeds.",
        runbook="Fix the credentials or the account, then use Test connection to resume.",
        default_team="admins",
    )
)
define(
    Kind(
        slug="webhook_paused",
        title="Webhook paused",
        description="An outbound webhook's receiver kept failing (no answer, or not 2xx), so Syncdesk "
        "paused it. Its undelivered events wait; the engine is not affected.",
        runbook="Read the delivery log on the webhook's page, fix the receiver, send a test, then "
        "resume the webhook: the waiting events are sent and this group resolves itself.",
        default_team="admins",
    )
)
define(
    Kind(
        slug="source_warning",
        title="Source data not understood",
        description="A source sent something Syncdesk could not apply although no event failed: "
        "a status missing from the connection's status map (the order's status was left "
        "unchanged), a record skipped, a gap longer than the source's change window, stock "
        "on hand without a saleable figure (DotDigital's Saleable and InStock left as they were).",
        runbook="Read the message. An unknown status: add it to the connection's status map, then "
        "run a backfill (or wait for the order's next change) to apply it. A window gap: run a "
        "backfill. Stock without saleable: have the source send saleable, or allocated and "
        "quarantined beside on hand. Resolve the group when done.",
        default_team="admins",
    )
)
