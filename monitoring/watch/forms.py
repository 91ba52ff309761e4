"""Forms of the monitoring pages (the flow's alerting settings are on its configuration page)."""

from __future__ import annotations

from django import forms


class OptOutWebhookForm(forms.Form):
    """Where a flow's opt-outs go when its source's connector cannot record them. The URL may
    hold a token: write-only (blank keeps the stored one)."""

    url = forms.URLField(
        assume_scheme="https",
        required=False,
        widget=forms.PasswordInput(render_value=False),
        label="Opt-out webhook",
        help_text="Write-only: blank keeps the stored one.",
    )
    clear = forms.BooleanField(required=False, label="Remove the opt-out webhook")

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        if not data.get("url") and not data.get("clear"):
            raise forms.ValidationError("Give a URL, or tick “Remove”.")
        return data
