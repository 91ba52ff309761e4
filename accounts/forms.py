from __future__ import annotations

from django import forms
from django.contrib.auth.models import User
from django.db.models import Q, QuerySet

from accounts.models import ConfigChange, Team, Workspace

# What the audit calls each kind of object (app_label.model_name); others show as their type.
OBJECT_TYPE_LABELS = {
    "connectors.connection": "Connection",
    "accounts.team": "Team",
    "accounts.workspace": "Workspace",
}


class TeamMemberForm(forms.Form):
    """Add or remove one workspace member to or from one team."""

    action = forms.ChoiceField(choices=[("add", "Add"), ("remove", "Remove")])
    team = forms.ModelChoiceField(queryset=Team.objects.none(), to_field_name="slug")
    user = forms.ModelChoiceField(queryset=User.objects.none())

    def __init__(self, workspace: Workspace, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        team_field = self.fields["team"]
        user_field = self.fields["user"]
        assert isinstance(team_field, forms.ModelChoiceField)
        assert isinstance(user_field, forms.ModelChoiceField)
        team_field.queryset = workspace.teams.all()
        user_field.queryset = User.objects.filter(memberships__workspace=workspace)
        user_field.error_messages["invalid_choice"] = "That person is not in this workspace."


class AuditFilterForm(forms.Form):
    """The audit page's filters (GET): what kind of object, which action, who, and free text."""

    object_type = forms.ChoiceField(label="Object", required=False)
    action = forms.ChoiceField(
        required=False, choices=[("", "Any action"), *ConfigChange.Action.choices]
    )
    actor = forms.ModelChoiceField(
        label="Who", queryset=User.objects.none(), required=False, empty_label="Anyone"
    )
    q = forms.CharField(label="Search", required=False, max_length=100)

    def __init__(self, workspace: Workspace, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        types = (
            ConfigChange.objects.filter(workspace=workspace)
            .order_by()
            .values_list("object_type", flat=True)
            .distinct()
        )
        object_field = self.fields["object_type"]
        assert isinstance(object_field, forms.ChoiceField)
        object_field.choices = [
            ("", "Anything"),
            *sorted(
                ((t, OBJECT_TYPE_LABELS.get(t, t or "Other")) for t in set(types)),
                key=lambda c: c[1],
            ),
        ]
        actor_field = self.fields["actor"]
        assert isinstance(actor_field, forms.ModelChoiceField)
        actor_field.queryset = User.objects.filter(memberships__workspace=workspace).order_by(
            "username"
        )
        actor_field.error_messages["invalid_choice"] = "That person is not in this workspace."

    def filter(self, changes: QuerySet[ConfigChange]) -> QuerySet[ConfigChange]:
        data = self.cleaned_data
        if data.get("object_type"):
            changes = changes.filter(object_type=data["object_type"])
        if data.get("action"):
            changes = changes.filter(action=data["action"])
        if data.get("actor"):
            changes = changes.filter(actor=data["actor"])
        if data.get("q"):
            changes = changes.filter(
                Q(object_label__icontains=data["q"]) | Q(note__icontains=data["q"])
            )
        return changes
