"""Every input to the inbox (GET filters and POSTed actions) goes through one of these forms."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import Team
from exceptions_inbox import kinds
from exceptions_inbox.actions import Action
from exceptions_inbox.listing import AGES, TABS
from exceptions_inbox.models import KnownFlow

SNOOZES: list[tuple[str, str]] = [
    ("1h", "for 1 hour"),
    ("1d", "for 1 day"),
    ("more", "until N more occurrences"),
]


class InboxFilterForm(forms.Form):
    """The inbox's tab, filters and search (GET). Unknown values fall back to the defaults."""

    tab = forms.ChoiceField(choices=TABS, required=False)
    kind = forms.ChoiceField(required=False)
    team = forms.ChoiceField(required=False)
    flow = forms.ChoiceField(required=False)
    age = forms.ChoiceField(choices=AGES, required=False)
    q = forms.CharField(
        required=False,
        max_length=254,
        label="Search",
        widget=forms.TextInput(
            attrs={"type": "search", "placeholder": "Order, SKU, email or event id"}
        ),
    )

    def __init__(self, data: Any, *, workspace_ids: list[int]) -> None:
        super().__init__(data)
        self.fields["kind"].choices = [("", "Every kind"), *kinds.choices()]  # type: ignore[attr-defined]
        team_slugs = (
            Team.objects.filter(workspace_id__in=workspace_ids)
            .order_by("name")
            .values_list("slug", "name")
            .distinct()
        )
        self.fields["team"].choices = [("", "Every team"), *team_slugs]  # type: ignore[attr-defined]
        flows = KnownFlow.objects.filter(workspace_id__in=workspace_ids).order_by("flow_label")
        self.fields["flow"].choices = [  # type: ignore[attr-defined]
            ("", "Every flow"),
            *((f.flow_key, f.flow_label or f.flow_key) for f in flows),
        ]

    def filters(self, default_tab: str = "review") -> dict[str, Any]:
        """The cleaned filters, dropping any field that did not validate (a stale link); with no
        tab chosen, `default_tab` (the person's landing tab, `listing.landing_tab`)."""
        self.is_valid()
        data = {name: self.cleaned_data.get(name) or "" for name in self.fields}
        data["tab"] = data["tab"] or default_tab
        return data


class SnoozeFields(forms.Form):
    snooze = forms.ChoiceField(choices=SNOOZES, required=False, label="Snooze")
    more = forms.IntegerField(
        required=False, min_value=1, max_value=1_000_000, label="N more occurrences"
    )

    def snooze_params(self) -> dict[str, Any]:
        choice = self.cleaned_data.get("snooze")
        if choice == "1h":
            return {"until": timezone.now() + timedelta(hours=1)}
        if choice == "1d":
            return {"until": timezone.now() + timedelta(days=1)}
        return {"more": self.cleaned_data.get("more")}

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("action") == Action.SNOOZE:
            if not data.get("snooze"):
                self.add_error("snooze", "Choose how long to snooze for.")
            elif data["snooze"] == "more" and not data.get("more"):
                self.add_error("more", "How many more occurrences?")
        return data


class GroupActionForm(SnoozeFields):
    """One action on one group, from the group page."""

    action = forms.ChoiceField(choices=[c for c in Action.choices if c[0] != Action.COMMENT])
    note = forms.CharField(required=False, max_length=2000, widget=forms.Textarea({"rows": 2}))
    assignee = forms.ModelChoiceField(
        queryset=User.objects.none(), required=False, empty_label="Nobody"
    )

    def __init__(self, *args: Any, members: QuerySet[User], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["assignee"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = members
        field.error_messages["invalid_choice"] = "That person is not in this workspace."

    def params(self) -> dict[str, Any]:
        action = self.cleaned_data["action"]
        params: dict[str, Any] = {"note": self.cleaned_data.get("note") or ""}
        if action == Action.ASSIGN:
            params["assignee"] = self.cleaned_data.get("assignee")
        if action == Action.SNOOZE:
            params.update(self.snooze_params())
        return params


class BulkActionForm(GroupActionForm):
    """One action on the groups ticked in the inbox."""

    BULK_ACTIONS = (
        Action.ASSIGN,
        Action.ACKNOWLEDGE,
        Action.SNOOZE,
        Action.RESOLVE,
        Action.IGNORE,
        Action.RETRY,
    )

    TICKED = "ticked"
    MATCHING = "matching"

    groups = forms.TypedMultipleChoiceField(coerce=int, choices=[], required=False)
    # "matching": every group the list's filters match, on every page (the filters come with the
    # POST as the list's own fields: tab, kind, team, flow, age, q); the ticks are then ignored.
    select = forms.ChoiceField(
        choices=[(TICKED, "The ticked groups"), (MATCHING, "Every match, on every page")],
        required=False,
    )
    next = forms.CharField(required=False, max_length=2000)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["action"].choices = [  # type: ignore[attr-defined]
            (a.value, a.label) for a in self.BULK_ACTIONS
        ]

    def clean_groups(self) -> list[int]:
        return list(self.cleaned_data["groups"])

    @property
    def every_match(self) -> bool:
        return self.data.get("select") == self.MATCHING

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not self.every_match and not data.get("groups") and "groups" not in self.errors:
            self.add_error("groups", "Tick the groups to act on.")
        return data


class CommentForm(forms.Form):
    note = forms.CharField(
        label="Comment", max_length=4000, widget=forms.Textarea({"rows": 3}), strip=True
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "comment_%s")  # the action form on the page has a note too
        super().__init__(*args, **kwargs)


class FixForm(forms.Form):
    """The fix of a kind that has no form of its own: a value for the engine's fix hook."""

    field_name = "value"
    value = forms.CharField(max_length=255, label="Value")

    def __init__(
        self,
        *args: Any,
        suggestions: list[kinds.Suggestion] | None = None,
        subjects: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.suggestions = suggestions or []
        self.subjects = subjects or []

    def hook_data(self, group: Any) -> dict[str, Any]:
        return dict(self.cleaned_data)


class SkuAliasForm(FixForm):
    """sku_mapping_gap: make an unknown SKU of the group (`alias`; the group's own SKU when it has
    one) an alias of a catalogue SKU."""

    field_name = "catalogue_sku"
    value = None  # type: ignore[assignment]
    alias = forms.CharField(max_length=100, required=False, label="Unknown SKU")
    catalogue_sku = forms.CharField(
        max_length=100,
        label="Catalogue SKU",
        help_text="The product this SKU is another spelling of. Every event it blocked is retried.",
    )
    field_order = ("alias", "catalogue_sku")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["alias"]
        if len(self.subjects) > 1:
            field.widget = forms.Select(choices=[(s, s) for s in self.subjects])
            field.required = True
        else:  # the group's one SKU
            field.widget = forms.HiddenInput()
            field.initial = self.subjects[0] if self.subjects else ""

    def clean_alias(self) -> str:
        alias = str(self.cleaned_data.get("alias") or "")
        if alias and self.subjects and alias not in self.subjects:
            raise forms.ValidationError("That SKU blocks nothing in this group.")
        return alias

    def hook_data(self, group: Any) -> dict[str, Any]:
        alias = self.cleaned_data.get("alias") or (
            self.subjects[0] if self.subjects else group.sku or group.subject_label
        )
        return {"alias": alias, "sku": self.cleaned_data["catalogue_sku"].strip()}


class RecordEmailForm(FixForm):
    """contact_without_email: the customer's email, then retry."""

    field_name = "email"
    value = None  # type: ignore[assignment]
    email = forms.EmailField(label="Customer's email")


class FieldMappingForm(FixForm):
    """field_mapping_missing: the DotDigital data field the value should go to."""

    field_name = "data_field"
    value = None  # type: ignore[assignment]
    data_field = forms.CharField(
        max_length=100,
        label="DotDigital data field",
        help_text="The mapping is created and the blocked events are retried.",
    )


FIX_FORMS: dict[str, type[FixForm]] = {
    "sku_mapping_gap": SkuAliasForm,
    "contact_without_email": RecordEmailForm,
    "field_mapping_missing": FieldMappingForm,
}


def fix_form_class(kind: str) -> type[FixForm]:
    return FIX_FORMS.get(kind, FixForm)
