"""The connection forms: a name plus each kind's settings, with write-only secrets.

Each kind's settings are declared once, as `Setting`s: DotDigital's here, each source's on its
adapter (`SourceAdapter.settings`; a check across them is the adapter's `validate_settings`, which
puts its errors on this form's fields). A setting says where it is kept (`credentials`, encrypted,
or `options`, plain JSON), whether it is secret (never rendered back: the form shows "set" and an
empty field that, left blank, keeps the stored value), and whether changing it requires the
secrets to be typed again (an address the secrets are sent to: otherwise an admin could point a
stored password at a server of their own and press "Test connection").
Adapters read the same keys: `connection.credentials["password"]`, `connection.options["base_url"]`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django import forms
from django.core.validators import RegexValidator

from accounts.fields import Secrets
from accounts.models import Workspace
from connectors.models import Connection
from connectors.sources.base import Setting
from connectors.sources.registry import adapter_classes, get_adapter

CODE = RegexValidator(r"^[A-Za-z0-9_-]+$", "Letters, digits, - and _ only.")

KIND_SETTINGS: dict[str, tuple[Setting, ...]] = {
    Connection.Kind.DOTDIGITAL: (
        Setting(
            "api_user",
            "API user",
            "credentials",
            kind="email",
            help_text="The API user's email, e.g. apiuser-1a2b3c@apiconnector.com "
            "(DotDigital: Settings → Access → API users).",
        ),
        Setting("password", "API user's password", "credentials", secret=True),
        Setting(
            "discovery_url",
            "Discovery address (advanced)",
            "options",
            required=False,
            kind="url",
            guards_secrets=True,
            help_text="Leave blank for DotDigital's own (https://r1-api.dotdigital.com). "
            "The account's region and endpoint are discovered from it by “Test connection”.",
        ),
    ),
    **{kind: adapter.settings for kind, adapter in adapter_classes().items()},
}

#: Settings that are filled in by "Test connection", shown but never edited.
DISCOVERED_OPTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    Connection.Kind.DOTDIGITAL: (
        ("api_endpoint", "API endpoint (region)"),
        ("account_id", "Account id"),
    ),
}

#: The connection's fields an audit row compares (credentials and options key by key).
AUDITED_FIELDS = ("name", "status", "credentials", "options")


def settings_for(kind: str) -> tuple[Setting, ...]:
    return KIND_SETTINGS.get(kind, ())


def secret_fields(connection: Connection) -> tuple[str, ...]:
    """The credential keys an audit must hide: every one not declared public for the kind."""
    public = {s.name for s in settings_for(connection.kind) if not s.secret}
    keys = set(connection.credentials or {}) | {
        s.name for s in settings_for(connection.kind) if s.store == "credentials"
    }
    return tuple(sorted(f"credentials.{k}" for k in keys if k not in public))


def secret_values(connection: Connection) -> list[str]:
    """The connection's secret values (to scrub them from any text we show or log)."""
    public = {s.name for s in settings_for(connection.kind) if not s.secret}
    return [
        str(v)
        for k, v in (connection.credentials or {}).items()
        if k not in public and isinstance(v, str | int) and len(str(v)) >= 4
    ]


def scrub(text: str, connection: Connection) -> str:
    """`text` with any of the connection's secret values blanked (belt and braces)."""
    for value in secret_values(connection):
        text = text.replace(value, "••••")
    return text


def is_webhook_kind(kind: str) -> bool:
    """Sources receive webhooks; DotDigital is a destination and has no webhook URL."""
    return bool(kind != Connection.Kind.DOTDIGITAL)


class ConnectionForm(forms.Form):
    """Create or edit one connection of one kind."""

    name = forms.CharField(
        max_length=120, help_text="What your people call it, e.g. “Mintsoft (Leeds warehouse)”."
    )

    def __init__(
        self,
        workspace: Workspace,
        kind: str,
        data: Mapping[str, Any] | None = None,
        *,
        instance: Connection | None = None,
    ) -> None:
        self.workspace = workspace
        self.kind = kind
        self.instance = instance
        initial: dict[str, Any] = {}
        if instance is not None:
            initial["name"] = instance.name
        super().__init__(data, initial=initial)
        for setting in settings_for(kind):
            stored = self._stored(setting)
            self.fields[setting.name] = self._field(setting, has_stored=bool(stored))
            if not setting.secret:
                self.initial[setting.name] = stored if instance is not None else setting.initial

    def _stored(self, setting: Setting) -> Any:
        if self.instance is None:
            return ""
        bag = self.instance.credentials if setting.store == "credentials" else self.instance.options
        return (bag or {}).get(setting.name, "")

    @staticmethod
    def _field(setting: Setting, *, has_stored: bool) -> forms.Field:
        field: forms.Field
        if setting.secret:
            field = forms.CharField(
                label=setting.label,
                required=setting.required and not has_stored,
                strip=False,
                max_length=500,
                widget=forms.PasswordInput(
                    render_value=False, attrs={"autocomplete": "new-password"}
                ),
                help_text=(
                    "Set. Leave blank to keep it; type a new one to replace it."
                    if has_stored
                    else setting.help_text or "Stored encrypted; never shown again."
                ),
            )
            field.widget.attrs["placeholder"] = "set (hidden)" if has_stored else ""
            return field
        if setting.kind == "url":
            field = forms.URLField(
                label=setting.label,
                required=setting.required,
                assume_scheme="https",
                max_length=300,
            )
        elif setting.kind == "email":
            field = forms.EmailField(label=setting.label, required=setting.required)
        else:
            field = forms.CharField(label=setting.label, required=setting.required, max_length=200)
            if setting.kind == "code":
                field.validators.append(CODE)
        field.help_text = setting.help_text
        return field

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"].strip()
        clash = Connection.objects.filter(workspace=self.workspace, name__iexact=name)
        if self.instance is not None:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():
            raise forms.ValidationError("Another connection in this workspace has that name.")
        return name

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        adapter = get_adapter(self.kind)
        if adapter is not None:
            adapter.validate_settings(self)
        if self.instance is None:
            return cleaned
        moved = [
            s
            for s in settings_for(self.kind)
            if s.guards_secrets
            and s.name in cleaned
            and (cleaned.get(s.name) or "").rstrip("/") != str(self._stored(s) or "").rstrip("/")
        ]
        if not moved:
            return cleaned
        for secret in (s for s in settings_for(self.kind) if s.secret):
            if self._stored(secret) and not cleaned.get(secret.name):
                self.add_error(
                    secret.name,
                    f"Type it again: the {moved[0].label.lower()} it is sent to has changed.",
                )
        return cleaned

    def given(self, name: str) -> bool:
        """The setting is typed in, or is a secret left blank that keeps its stored value."""
        setting = next(s for s in settings_for(self.kind) if s.name == name)
        return bool(self.cleaned_data.get(name) or (setting.secret and self._stored(setting)))

    def save(self) -> Connection:
        """Apply the form to its connection (a new one if none) and save it."""
        conn = self.instance or Connection(workspace=self.workspace, kind=self.kind)
        conn.name = self.cleaned_data["name"]
        credentials = dict(conn.credentials or {})
        options = dict(conn.options or {})
        before_identity = (credentials.get("api_user"), options.get("discovery_url"))
        for setting in settings_for(self.kind):
            value = self.cleaned_data.get(setting.name)
            bag = credentials if setting.store == "credentials" else options
            if setting.secret and not value:
                continue  # blank keeps the stored secret
            if isinstance(value, str) and not setting.secret:
                value = value.strip()
                if setting.kind == "url":
                    value = value.rstrip("/")
            if value:
                bag[setting.name] = value
            else:
                bag.pop(setting.name, None)
        if self.kind == Connection.Kind.DOTDIGITAL and before_identity != (
            credentials.get("api_user"),
            options.get("discovery_url"),
        ):
            # Another account or another place: its region is found again by the next test.
            for key, _ in DISCOVERED_OPTIONS[Connection.Kind.DOTDIGITAL]:
                options.pop(key, None)
        conn.credentials = Secrets(credentials)
        conn.options = options
        conn.save()
        return conn


def secret_rows(connection: Connection) -> list[tuple[str, str, bool]]:
    """(label, shown value, is_secret) for a connection's page: secrets only as set / not set."""
    rows = []
    for setting in settings_for(connection.kind):
        bag = connection.credentials if setting.store == "credentials" else connection.options
        value = (bag or {}).get(setting.name, "")
        if setting.secret:
            rows.append((setting.label, "set" if value else "not set", True))
        else:
            rows.append((setting.label, str(value) if value else "—", False))
    for key, label in DISCOVERED_OPTIONS.get(connection.kind, ()):
        value = (connection.options or {}).get(key, "")
        rows.append(
            (label, str(value) if value else "not discovered yet: test the connection", False)
        )
    return rows
