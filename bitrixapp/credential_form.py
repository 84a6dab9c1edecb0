"""The admin form for a model with encrypted provider credentials (PBX connections, SMS
gateway accounts): one password input per credential key of the registered providers.

A stored value is never rendered; an empty input keeps it. A key a provider can do without
(`optional_credential_keys`) also gets a "remove" box, so that e.g. a previous secret can be
dropped once a rotation is over. On save only the keys the chosen provider takes are stored,
and values stored for another provider are not kept (they mean something else there).

The model needs a `provider` (slug) and a `credentials` (encrypted JSON) field;
`credential_form()` builds the form class per request, because the inputs depend on the
providers registered.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Protocol

from django import forms
from django.db import models
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

PREFIX = "credential_"
REMOVE_PREFIX = "remove_credential_"

# Words that read as capitals in a label ("api_key" → "API key").
ACRONYMS = {"api": "API", "id": "ID", "url": "URL", "sms": "SMS", "pbx": "PBX"}


class CredentialProvider(Protocol):
    slug: ClassVar[str]
    name: ClassVar[str]
    credential_keys: ClassVar[tuple[str, ...]]  # required
    optional_credential_keys: ClassVar[tuple[str, ...]]


# Labels of the keys the providers use, translated; other keys read as words ("api_key" →
# "API key").
KNOWN_LABELS = {
    "api_key": gettext_lazy("API key"),
    "api_salt": gettext_lazy("API salt (the signing key)"),
    "token": gettext_lazy("token"),
    "login": gettext_lazy("login"),
    "password": gettext_lazy("password"),
    "secret": gettext_lazy("secret"),
    "previous_secret": gettext_lazy("previous secret"),
    "client_id": gettext_lazy("client ID"),
}


def label(key: str) -> str:
    if key in KNOWN_LABELS:
        text = str(KNOWN_LABELS[key])
        return text[:1].upper() + text[1:]
    words = [ACRONYMS.get(word, word) for word in key.split("_")]
    return " ".join([words[0][:1].upper() + words[0][1:], *words[1:]]) if words else key


def _takes(provider: CredentialProvider) -> tuple[str, ...]:
    return (*provider.credential_keys, *provider.optional_credential_keys)


class CredentialsForm(forms.ModelForm):
    """Base of the generated forms; subclass it with the model's own fields."""

    providers: ClassVar[dict[str, CredentialProvider]] = {}  # slug → provider

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # Taken now: ModelForm copies the cleaned fields onto the instance after clean().
        self.stored_provider = getattr(self.instance, "provider", "")
        self.stored = dict(getattr(self.instance, "credentials", None) or {})
        for key in credential_keys(self.providers.values()):
            state = _("stored; leave empty to keep it") if self.stored.get(key) else _("not set")
            self.fields[PREFIX + key].help_text = f"{self._who_takes(key)} — {state}"

    def _who_takes(self, key: str) -> str:
        return ", ".join(
            f"{p.name}: {_('required') if key in p.credential_keys else _('optional')}"
            for p in self.providers.values()
            if key in _takes(p)
        )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        provider = self.providers.get(cleaned.get("provider") or "")
        if provider is None:
            return cleaned  # the provider field has its own error
        stored = self.stored if provider.slug == self.stored_provider else {}
        credentials = {}
        for key in _takes(provider):
            typed = cleaned.get(PREFIX + key)
            if typed:
                credentials[key] = typed
            elif stored.get(key) and not cleaned.get(REMOVE_PREFIX + key):
                credentials[key] = stored[key]
        for key in provider.credential_keys:
            if not credentials.get(key):
                self.add_error(
                    PREFIX + key, _("%(provider)s needs this key") % {"provider": provider.name}
                )
        self.credentials_to_store = credentials
        return cleaned

    def save(self, commit: bool = True) -> models.Model:
        self.instance.credentials = self.credentials_to_store
        return super().save(commit)


def credential_keys(providers: Iterable[CredentialProvider]) -> list[str]:
    """Every key any of the providers takes, in the order they declare them."""
    return list(dict.fromkeys(key for p in providers for key in _takes(p)))


def optional_keys(providers: Iterable[CredentialProvider]) -> set[str]:
    """Keys some provider takes without needing them: these can be removed in the form."""
    return {key for p in providers for key in p.optional_credential_keys}


def credential_fields(providers: Iterable[CredentialProvider]) -> tuple:
    """The fieldset entries: each key's input, with its "remove" box beside it if optional."""
    providers = list(providers)
    optional = optional_keys(providers)
    return tuple(
        (PREFIX + key, REMOVE_PREFIX + key) if key in optional else PREFIX + key
        for key in credential_keys(providers)
    )


def credential_form(
    base: type[CredentialsForm], providers: Iterable[CredentialProvider]
) -> type[CredentialsForm]:
    """`base` with an input per credential key of `providers` (and "remove" boxes)."""
    providers = list(providers)
    inputs: dict[str, forms.Field] = {
        PREFIX + key: forms.CharField(
            label=label(key),
            required=False,
            widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        )
        for key in credential_keys(providers)
    }
    for key in optional_keys(providers):
        inputs[REMOVE_PREFIX + key] = forms.BooleanField(
            label=_("remove the stored %(key)s") % {"key": label(key).lower()}, required=False
        )
    attrs = {**inputs, "providers": {p.slug: p for p in providers}}
    return type(base.__name__, (base,), attrs)
