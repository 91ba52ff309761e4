from __future__ import annotations

from django import forms
from django.contrib.auth.models import User

from accounts.models import Team, Workspace


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
