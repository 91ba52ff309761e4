from __future__ import annotations

from typing import Any

from django import forms

from accounts.models import Team, Workspace
from api.models import ApiKey


class NewKeyForm(forms.Form):
    """A new key: its name (the actor history shows), the team it acts for, read or act."""

    name = forms.CharField(
        max_length=80, help_text="Who will use it, e.g. 'Zendesk': history names it as the actor."
    )
    team = forms.ModelChoiceField(
        queryset=Team.objects.none(),
        required=False,
        empty_label="Every team (as a workspace admin)",
        help_text="It acts with this team's permissions.",
    )
    scope = forms.ChoiceField(choices=ApiKey.Scope.choices, initial=ApiKey.Scope.READ)

    def __init__(self, workspace: Workspace, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        team = self.fields["team"]
        team.queryset = workspace.teams.all()  # type: ignore[attr-defined]
        team.label_from_instance = lambda t: t.name  # type: ignore[attr-defined]

    def clean_name(self) -> str:
        name = str(self.cleaned_data["name"]).strip()
        if not name:
            raise forms.ValidationError("Give the key a name.")
        return name
