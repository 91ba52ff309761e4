"""The subscription form: a name, an http(s) URL and the events, each checked on its field."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django import forms
from django.core.exceptions import ValidationError

from outbound.models import Event, Subscription

if TYPE_CHECKING:
    SubscriptionModelForm = forms.ModelForm[Subscription]
else:
    SubscriptionModelForm = forms.ModelForm

# Fields shown in the audit (the secret is never one of them: it has its own "revealed" row).
AUDITED_FIELDS = ["name", "url", "events", "state"]


class SubscriptionForm(SubscriptionModelForm):
    url = forms.URLField(
        label="URL",
        max_length=500,
        assume_scheme="https",
        widget=forms.URLInput(attrs={"placeholder": "https://"}),
        help_text="Receives a signed POST per event (http or https).",
    )
    events = forms.MultipleChoiceField(
        choices=Event.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text="Each event is one signed POST.",
    )

    class Meta:
        model = Subscription
        fields = ["name", "url", "events"]

    def clean_url(self) -> str:
        url = str(self.cleaned_data["url"]).strip()
        parts = urlsplit(url)
        # URLField also takes ftp:// and friends; a receiver is spoken to over HTTP only.
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError("Enter an http:// or https:// address.")
        return url

    def clean_events(self) -> list[str]:
        chosen = set(self.cleaned_data["events"])
        return [e for e in Event.values if e in chosen]  # in the table's order
