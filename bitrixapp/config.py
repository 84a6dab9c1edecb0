"""Configuration as code (docs/configuration.md): a portal's setup as one YAML or JSON file.

The file names its `portal` and has one top-level section per app: telephony registers `pbx`,
the SMS app registers `sms`. This module is the frame every section shares:

- `load()` reads YAML or JSON; `parse()` checks the whole document without touching the
  database and names every bad value by its path (`pbx[0].lines[1].number: required`);
- `apply()` runs every section's changes for the portal in one transaction: all or nothing;
- `export()` gives the same shape back, credentials shown as "***" unless secrets are asked
  for; a "***" credential on import keeps the stored value (`resolve_credentials`).

A section (see `Section`) checks, applies and exports its own part; `register()` adds it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Protocol

import yaml
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.db.models import Q

from bitrixapp.models import Portal

MASK = "***"  # stands for a credential value in exports

# Top-level keys that belong to an app this version does not have yet: a file that has them
# is still imported (its other sections), with a warning, until an app registers the key.
PLANNED_SECTIONS: dict[str, str] = {}

Check = Callable[[Any], Any]  # a value check: the cleaned value, or Invalid


class ConfigError(Exception):
    """The file cannot be applied; each line of the message names a path and the problem."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


class Invalid(ValueError):
    """One value is wrong; the message says what is expected."""


# ---------------------------------------------------------------- sections


class Section(Protocol):
    """One top-level key of the file, owned by one app."""

    key: str

    def parse(self, checker: Checker, path: str, data: Any) -> Any:
        """Check the section's value; report problems to `checker`; return what apply() takes."""

    def apply(self, portal: Portal, spec: Any, path: str) -> list[str]:
        """Bring the portal in step (inside apply's transaction); what changed, in words.
        Raise ConfigError for what only the database can tell (e.g. a "***" with no value)."""

    def export(self, portal: Portal, with_secrets: bool) -> Any:
        """The section's value for this portal, in the import format."""


SECTIONS: dict[str, Section] = {}  # key → section, in registration (= apply) order


def register(section: Section) -> Section:
    """Add an app's section (at import of its config module, from AppConfig.ready())."""
    if section.key == "portal" or section.key in SECTIONS:
        raise ImproperlyConfigured(
            f"configuration section {section.key!r} is registered twice "
            f"(registered: portal, {', '.join(SECTIONS)})"
        )
    SECTIONS[section.key] = section
    return section


# ---------------------------------------------------------------- value checks


def text(max_length: int, blank: bool = False) -> Check:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid("must be a string (quote numbers in YAML)")
        value = value.strip()
        if not value and not blank:
            raise Invalid("must not be empty")
        if len(value) > max_length:
            raise Invalid(f"must be at most {max_length} characters")
        return value

    return check


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid("must be true or false")
    return value


def count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Invalid("must be a whole number, 0 or more")
    return value


def user_id(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise Invalid("must be a Bitrix24 user id (a positive whole number)")
    return value


def optional_user_id(value: Any) -> int | None:
    return None if value is None else user_id(value)


def url(value: Any) -> str:
    value = text(200, blank=True)(value)
    if value:
        try:
            URLValidator(schemes=["http", "https"])(value)
        except ValidationError:
            raise Invalid("must be an http(s) URL") from None
    return value


# ---------------------------------------------------------------- the checker


class Checker:
    """Collects every problem of a file, each with the path of the bad value."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def value(self, path: str, check: Check, value: Any) -> Any:
        try:
            return check(value)
        except Invalid as exc:
            self.fail(path, str(exc))
            return None

    def mapping(self, path: str, data: Any, allowed: Iterable[str]) -> dict[str, Any] | None:
        if not isinstance(data, dict):
            self.fail(path or "(file)", "must be a mapping")
            return None
        allowed = set(allowed)
        for key in data:
            if key not in allowed:
                self.fail(
                    join(path, str(key)), f"unknown key (known: {', '.join(sorted(allowed))})"
                )
        return data

    def required(self, path: str, data: dict[str, Any], key: str, check: Check) -> Any:
        if data.get(key) is None:
            self.fail(join(path, key), "required")
            return None
        return self.value(join(path, key), check, data[key])

    def optional(self, path: str, data: dict[str, Any], checks: Mapping[str, Check]) -> dict:
        """The checked values of the keys present in `data` (a settings table's keys)."""
        return {
            key: self.value(join(path, key), check, data[key])
            for key, check in checks.items()
            if key in data
        }

    def entries(
        self, path: str, data: Any, parse_one: Callable[[str, Any], Any], identity: str
    ) -> list[Any] | None:
        """A list whose entries are told apart by their `identity` attribute (a name, a
        number): each parsed by `parse_one(path_of_entry, entry)`, repeats named.
        None when the list is absent; the entries that parsed otherwise."""
        if data is None:
            return None
        if not isinstance(data, list):
            self.fail(path, "must be a list")
            return None
        parsed = [parse_one(f"{path}[{i}]", entry) for i, entry in enumerate(data)]
        seen: set[Any] = set()
        for i, entry in enumerate(parsed):
            key = getattr(entry, identity, None)
            if key is not None and key in seen:
                self.fail(f"{path}[{i}].{identity}", f"{key!r} is given twice")
            seen.add(key)
        return [entry for entry in parsed if entry is not None]


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# ---------------------------------------------------------------- credentials


def parse_credentials(checker: Checker, path: str, data: Any) -> dict[str, str]:
    if data is None:
        checker.fail(path, "required")
        return {}
    if not isinstance(data, dict):
        checker.fail(path, "must be a mapping of key: value")
        return {}
    return {
        str(key): checker.value(join(path, str(key)), text(1000, blank=True), value) or ""
        for key, value in data.items()
    }


def registered_in(registry: Mapping[str, Any], what: str = "provider") -> Check:
    """A check that the value is a slug of `registry` (an app's providers)."""

    def check(value: Any) -> str:
        slug = text(32)(value)
        if slug not in registry:
            raise Invalid(f"unknown {what} {slug!r}; known: {', '.join(sorted(registry))}")
        return slug

    return check


def check_provider_credentials(
    checker: Checker, path: str, credentials: dict[str, str], slug: str, provider: Any
) -> None:
    """The credentials fit the provider: `credential_keys` all given, nothing it does not take
    (`optional_credential_keys` may be given)."""
    check_credential_keys(
        checker,
        path,
        credentials,
        slug,
        provider.credential_keys,
        getattr(provider, "optional_credential_keys", ()),
    )


def check_credential_keys(
    checker: Checker,
    path: str,
    credentials: dict[str, str],
    provider: str,
    required: Iterable[str],
    optional: Iterable[str] = (),
) -> None:
    """Every required key given, and no key the provider does not take (a typo would be
    stored silently and the real key would stay unset)."""
    required, optional = tuple(required), tuple(optional)
    missing = [key for key in required if not credentials.get(key)]
    if missing:
        checker.fail(path, f"missing {', '.join(missing)} ({provider} needs {', '.join(required)})")
    for key in credentials:
        if key not in required and key not in optional:
            checker.fail(
                join(path, key), f"unknown key ({provider} takes {', '.join(required + optional)})"
            )


def resolve_credentials(
    stored: Mapping[str, str] | None, given: dict[str, str], path: str
) -> dict[str, str]:
    """The file's credentials, with "***" (from a secret-less export) keeping the stored value.
    The caller passes no `stored` values when they belong to another provider."""
    stored = stored or {}
    resolved, errors = {}, []
    for key, value in given.items():
        if value == MASK:
            value = stored.get(key, "")
            if not value:
                errors.append(
                    f"{join(path, key)}: {MASK!r} keeps the stored value, "
                    "but none is stored: give the real value"
                )
        resolved[key] = value
    if errors:
        raise ConfigError(errors)
    return resolved


def export_credentials(credentials: Mapping[str, str] | None, with_secrets: bool) -> dict:
    return {
        key: value if with_secrets else MASK for key, value in sorted((credentials or {}).items())
    }


# ---------------------------------------------------------------- settings tables


def export_settings(obj: Any, table: Mapping[str, Check]) -> dict[str, Any]:
    return {key: getattr(obj, key) for key in table}


def update_fields(obj: Any, values: Mapping[str, Any]) -> list[str]:
    """Set the values that differ on `obj` (not saved); their names, sorted."""
    changed = sorted(key for key, value in values.items() if getattr(obj, key) != value)
    for key in changed:
        setattr(obj, key, values[key])
    return changed


# ---------------------------------------------------------------- the whole file


@dataclass
class ConfigSpec:
    portal: str
    sections: dict[str, Any] = field(default_factory=dict)  # key → its section's parse()
    warnings: list[str] = field(default_factory=list)


def load(content: str, filename: str = "-") -> Any:
    """The document in `content`: JSON for *.json, YAML for *.yaml/*.yml, else by its content."""
    suffix = PurePath(filename).suffix.lower()
    as_json = suffix == ".json" or (
        suffix not in (".yaml", ".yml") and content.lstrip().startswith("{")
    )
    try:
        return json.loads(content) if as_json else yaml.safe_load(content)
    except ValueError as exc:
        raise ConfigError([f"not valid JSON: {exc}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"]) from None


def parse(document: Any) -> ConfigSpec:
    """Check a loaded document; ConfigError listing every problem, before any change is made."""
    checker = Checker()
    planned = {key: why for key, why in PLANNED_SECTIONS.items() if key not in SECTIONS}
    data = checker.mapping("", document, {"portal", *SECTIONS, *planned})
    if data is None:
        raise ConfigError(checker.errors)
    spec = ConfigSpec(portal=checker.required("", data, "portal", text(255)) or "")
    for key, section in SECTIONS.items():
        if key in data:
            spec.sections[key] = section.parse(checker, key, data[key])
    spec.warnings = [
        f"{key}: section skipped: {why}" for key, why in planned.items() if key in data
    ]
    if checker.errors:
        raise ConfigError(checker.errors)
    return spec


def find_portal(reference: str) -> Portal:
    """An installed portal by domain or member_id; ConfigError if there is none (or several)."""
    portals = list(
        Portal.objects.filter(Q(member_id=reference) | Q(domain=reference)).exclude(
            status=Portal.Status.UNINSTALLED
        )
    )
    if not portals:
        raise ConfigError(
            [f"portal: no installed portal has the domain or member_id {reference!r}"]
        )
    if len(portals) > 1:
        exact = [p for p in portals if p.member_id == reference]
        if len(exact) != 1:
            raise ConfigError([f"portal: {reference!r} is ambiguous; give the member_id"])
        return exact[0]
    return portals[0]


def apply(spec: ConfigSpec) -> list[str]:
    """Bring the portal in step with the file, all or nothing; returns what changed, in words.
    A section the file leaves out is left alone."""
    with transaction.atomic():
        portal = find_portal(spec.portal)
        report: list[str] = []
        for key, section in SECTIONS.items():
            if key in spec.sections:
                report += section.apply(portal, spec.sections[key], key)
        return report


def export(portal: Portal, with_secrets: bool = False) -> dict[str, Any]:
    """The portal's configuration in the import format (what each section exports)."""
    document: dict[str, Any] = {"portal": portal.member_id}
    for key, section in SECTIONS.items():
        document[key] = section.export(portal, with_secrets)
    return document
