"""Configuration as code (DESIGN.md §5): a portal's PBX connections as one YAML or JSON file.

`parse()` checks the whole file without touching the database and names every bad value by
its path (`pbx[0].lines[1].number: required`). `apply()` brings the portal in step with it in
one transaction: connections are matched by name, lines by their PBX number, extensions by
extension. What the file says is applied; what it leaves out is left alone: an omitted setting
keeps its current value (the model default for a new connection), an omitted `lines` or
`extensions` leaves those rows as they are, and connections missing from the file stay.
Unchanged rows are not written and enqueue nothing, so re-importing the same file is a no-op.

`export()` gives the same shape back, plus each connection's `webhook_url` (ignored on import)
and with every credential value replaced by "***" unless secrets are asked for. A "***"
credential on import keeps the stored value, so a secret-less export can be edited and
re-imported on the same deployment.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.db.models import Q

from bitrixapp.models import Portal
from telephony import directory, providers
from telephony.models import PbxConnection, PbxExtension, PbxLine

MASK = "***"  # stands for a credential value in exports
SMS_SKIPPED = "sms: section skipped: SMS gateways are not supported by this version"

TOP_LEVEL_KEYS = {"portal", "pbx", "sms"}
PBX_KEYS = {"name", "provider", "credentials", "lines", "extensions", "webhook_url"}
LINE_KEYS = {"number", "line_number", "name", "crm_auto_create"}


class ConfigError(Exception):
    """The file cannot be applied; each line of the message names a path and the problem."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


class Invalid(ValueError):
    """One value is wrong; the message says what is expected."""


# ---------------------------------------------------------------- value checks


def _text(max_length: int, blank: bool = False) -> Callable[[Any], str]:
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


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid("must be true or false")
    return value


def _count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Invalid("must be a whole number, 0 or more")
    return value


def _user_id(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise Invalid("must be a Bitrix24 user id (a positive whole number)")
    return value


def _optional_user_id(value: Any) -> int | None:
    return None if value is None else _user_id(value)


def _url(value: Any) -> str:
    value = _text(200, blank=True)(value)
    if value:
        try:
            URLValidator(schemes=["http", "https"])(value)
        except ValidationError:
            raise Invalid("must be an http(s) URL") from None
    return value


# Connection settings a pbx entry may set, with their checks (all optional).
PBX_SETTINGS: dict[str, Callable[[Any], Any]] = {
    "api_url": _url,
    "default_user_id": _optional_user_id,
    "show_card": _bool,
    "crm_create": _bool,
    "missed_call_min_duration_s": _count,
    "route_to_responsible": _bool,
    "log_internal_calls": _bool,
    "only_mapped_lines": _bool,
    "callback_extension": _text(64, blank=True),
}


# ---------------------------------------------------------------- parsed file


@dataclass(frozen=True)
class LineSpec:
    number: str
    line_number: str
    name: str | None = None  # None: keep ("" for a new line)
    crm_auto_create: bool | None = None  # None: keep (True for a new line)


@dataclass
class PbxSpec:
    name: str
    provider: str
    credentials: dict[str, str]
    settings: dict[str, Any] = field(default_factory=dict)
    lines: list[LineSpec] | None = None  # None: leave the lines alone
    extensions: dict[str, int] | None = None  # None: leave the extensions alone


@dataclass
class ConfigSpec:
    portal: str
    pbx: list[PbxSpec]
    warnings: list[str] = field(default_factory=list)


class _Checker:
    """Collects every problem of a file, each with the path of the bad value."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def value(self, path: str, check: Callable[[Any], Any], value: Any) -> Any:
        try:
            return check(value)
        except Invalid as exc:
            self.fail(path, str(exc))
            return None

    def mapping(self, path: str, data: Any, allowed: set[str]) -> dict[str, Any] | None:
        if not isinstance(data, dict):
            self.fail(path or "(file)", "must be a mapping")
            return None
        for key in data:
            if key not in allowed:
                self.fail(
                    _join(path, str(key)), f"unknown key (known: {', '.join(sorted(allowed))})"
                )
        return data

    def required(self, path: str, data: dict[str, Any], key: str, check: Callable) -> Any:
        if data.get(key) is None:
            self.fail(_join(path, key), "required")
            return None
        return self.value(_join(path, key), check, data[key])


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# ---------------------------------------------------------------- reading and checking


def load(text: str, filename: str = "-") -> Any:
    """The document in `text`: JSON for *.json, YAML for *.yaml/*.yml, else by its content."""
    suffix = PurePath(filename).suffix.lower()
    as_json = suffix == ".json" or (
        suffix not in (".yaml", ".yml") and text.lstrip().startswith("{")
    )
    try:
        return json.loads(text) if as_json else yaml.safe_load(text)
    except ValueError as exc:
        raise ConfigError([f"not valid JSON: {exc}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"]) from None


def parse(document: Any) -> ConfigSpec:
    """Check a loaded document; ConfigError listing every problem, before any change is made."""
    checker = _Checker()
    data = checker.mapping("", document, TOP_LEVEL_KEYS)
    if data is None:
        raise ConfigError(checker.errors)
    portal = checker.required("", data, "portal", _text(255))
    spec = ConfigSpec(portal=portal or "", pbx=_parse_pbx_list(checker, data.get("pbx")))
    if "sms" in data:
        spec.warnings.append(SMS_SKIPPED)
    if checker.errors:
        raise ConfigError(checker.errors)
    return spec


def _parse_pbx_list(checker: _Checker, entries: Any) -> list[PbxSpec]:
    if entries is None:
        return []
    if not isinstance(entries, list):
        checker.fail("pbx", "must be a list")
        return []
    specs = [_parse_pbx(checker, f"pbx[{i}]", entry) for i, entry in enumerate(entries)]
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        if spec is not None and spec.name in seen:
            checker.fail(f"pbx[{i}].name", f"{spec.name!r} is given twice")
        seen.add(spec.name if spec else "")
    return [spec for spec in specs if spec is not None]


def _parse_pbx(checker: _Checker, path: str, entry: Any) -> PbxSpec | None:
    data = checker.mapping(path, entry, PBX_KEYS | PBX_SETTINGS.keys())
    if data is None:
        return None
    errors_before = len(checker.errors)
    credentials = _parse_credentials(checker, f"{path}.credentials", data.get("credentials"))
    credentials_ok = len(checker.errors) == errors_before
    spec = PbxSpec(
        name=checker.required(path, data, "name", _text(100)),
        provider=checker.required(path, data, "provider", _provider),
        credentials=credentials,
        settings={
            key: checker.value(f"{path}.{key}", check, data[key])
            for key, check in PBX_SETTINGS.items()
            if key in data
        },
        lines=_parse_lines(checker, f"{path}.lines", data.get("lines")),
        extensions=_parse_extensions(checker, f"{path}.extensions", data.get("extensions")),
    )
    if spec.provider and credentials_ok:
        _check_credential_keys(checker, f"{path}.credentials", spec)
    return spec


def _provider(value: Any) -> str:
    slug = _text(32)(value)
    if slug not in providers.REGISTRY:
        raise Invalid(f"unknown provider {slug!r}; known: {', '.join(sorted(providers.REGISTRY))}")
    return slug


def _parse_credentials(checker: _Checker, path: str, data: Any) -> dict[str, str]:
    if data is None:
        checker.fail(path, "required")
        return {}
    if not isinstance(data, dict):
        checker.fail(path, "must be a mapping of key: value")
        return {}
    return {
        str(key): checker.value(f"{path}.{key}", _text(1000, blank=True), value) or ""
        for key, value in data.items()
    }


def _check_credential_keys(checker: _Checker, path: str, spec: PbxSpec) -> None:
    provider = providers.get(spec.provider)
    missing = [key for key in provider.credential_keys if not spec.credentials.get(key)]
    if missing:
        checker.fail(
            path,
            f"missing {', '.join(missing)} ({spec.provider} needs "
            f"{', '.join(provider.credential_keys)})",
        )


def _parse_lines(checker: _Checker, path: str, entries: Any) -> list[LineSpec] | None:
    if entries is None:
        return None
    if not isinstance(entries, list):
        checker.fail(path, "must be a list")
        return None
    lines = [_parse_line(checker, f"{path}[{i}]", entry) for i, entry in enumerate(entries)]
    numbers: set[str] = set()
    for i, line in enumerate(lines):
        if line is not None and line.number in numbers:
            checker.fail(f"{path}[{i}].number", f"{line.number!r} is given twice")
        numbers.add(line.number if line else "")
    return [line for line in lines if line is not None]


def _parse_line(checker: _Checker, path: str, entry: Any) -> LineSpec | None:
    data = checker.mapping(path, entry, LINE_KEYS)
    if data is None:
        return None
    optional = {"name": _text(100, blank=True), "crm_auto_create": _bool}
    return LineSpec(
        number=checker.required(path, data, "number", _text(64)),
        line_number=checker.required(path, data, "line_number", _text(64)),
        **{
            key: checker.value(f"{path}.{key}", check, data[key])
            for key, check in optional.items()
            if key in data
        },
    )


def _parse_extensions(checker: _Checker, path: str, data: Any) -> dict[str, int] | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        checker.fail(path, 'must be a mapping of extension: user id, e.g. {"101": 12}')
        return None
    extensions = {}
    for extension, user_id in data.items():
        name = checker.value(f"{path}.{extension}", _text(32), extension)
        user = checker.value(f"{path}.{extension}", _user_id, user_id)
        if name is not None and user is not None:
            extensions[name] = user
    return extensions


# ---------------------------------------------------------------- applying


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
    """Bring the portal in step with the file, all or nothing; returns what changed, in words."""
    with transaction.atomic():
        portal = find_portal(spec.portal)
        report: list[str] = []
        for index, pbx in enumerate(spec.pbx):
            report += _apply_connection(portal, pbx, f"pbx[{index}]")
        return report


def _apply_connection(portal: Portal, spec: PbxSpec, path: str) -> list[str]:
    connection = (
        PbxConnection.objects.select_for_update().filter(portal=portal, name=spec.name).first()
    )
    created = connection is None
    if connection is None:
        connection = PbxConnection(portal=portal, name=spec.name)
    values = {
        "provider": spec.provider,
        "credentials": _resolve_credentials(connection, spec, f"{path}.credentials"),
        **spec.settings,
    }
    changed = sorted(key for key, value in values.items() if getattr(connection, key) != value)
    for key in changed:
        setattr(connection, key, values[key])
    if created or changed:
        connection.save()
    report = [f"{spec.name}: created"] if created else []
    if changed and not created:
        report.append(f"{spec.name}: updated {', '.join(changed)}")
    if spec.lines is not None:
        report += sync_lines(connection, spec.lines)
    if spec.extensions is not None:
        report += sync_extensions(connection, spec.extensions)
    return report


def _resolve_credentials(connection: PbxConnection, spec: PbxSpec, path: str) -> dict[str, str]:
    """The file's credentials, with "***" (from a secret-less export) keeping the stored value."""
    # A stored value of another provider means something else: it is not kept.
    stored = connection.credentials if connection.provider == spec.provider else {}
    resolved, errors = {}, []
    for key, value in spec.credentials.items():
        if value == MASK:
            value = (stored or {}).get(key, "")
            if not value:
                errors.append(
                    f"{path}.{key}: {MASK!r} keeps the stored value, "
                    "but none is stored: give the real value"
                )
        resolved[key] = value
    if errors:
        raise ConfigError(errors)
    return resolved


def sync_lines(connection: PbxConnection, wanted: list[LineSpec]) -> list[str]:
    """Create/update/delete the connection's lines to match `wanted`; register in Bitrix24 the
    new and changed ones and remove the Bitrix24 lines nothing maps to any more."""
    current = {line.number: line for line in connection.lines.all()}
    report, retired = [], set()
    for spec in wanted:
        line = current.pop(spec.number, None)
        old_line_number = line.line_number if line else ""
        line, changed = _update_line(connection, line, spec)
        if changed:
            directory.register_line(line)
            report.append(f"{connection.name}: line {line.number} → {line.line_number} registered")
        if old_line_number and old_line_number != line.line_number:
            retired.add(old_line_number)
    for line in current.values():
        line.delete()
        retired.add(line.line_number)
        report.append(f"{connection.name}: line {line.number} removed")
    for line_number in sorted(retired):
        directory.remove_line(connection, line_number)
    return report


def _update_line(
    connection: PbxConnection, line: PbxLine | None, spec: LineSpec
) -> tuple[PbxLine, bool]:
    if line is None:
        line = PbxLine(connection=connection, number=spec.number)
    values = {"line_number": spec.line_number, "name": spec.name}
    values["crm_auto_create"] = spec.crm_auto_create
    values = {key: value for key, value in values.items() if value is not None}
    changed = [key for key, value in values.items() if getattr(line, key) != value]
    for key in changed:
        setattr(line, key, values[key])
    if line.pk is None or changed:
        line.save()
        return line, True
    return line, False


def sync_extensions(connection: PbxConnection, wanted: dict[str, int]) -> list[str]:
    """Make the admin-set (manual) rows exactly `wanted`; rows read from Bitrix24 stay unless
    the file gives the same extension, which then becomes a manual row."""
    manual = PbxExtension.Source.MANUAL
    rows = {row.extension: row for row in connection.extensions.all()}
    changed = 0
    for extension, user_id in wanted.items():
        row = rows.get(extension)
        if row is None:
            PbxExtension.objects.create(
                connection=connection, extension=extension, user_id=user_id, source=manual
            )
            changed += 1
        elif (row.user_id, row.source) != (user_id, manual):
            row.user_id, row.source = user_id, manual
            row.save(update_fields=["user_id", "source"])
            changed += 1
    stale = [r.pk for r in rows.values() if r.source == manual and r.extension not in wanted]
    changed += PbxExtension.objects.filter(pk__in=stale).delete()[0]
    return [f"{connection.name}: {changed} extension(s) changed"] if changed else []


# ---------------------------------------------------------------- exporting


def export(portal: Portal, with_secrets: bool = False) -> dict[str, Any]:
    """The portal's configuration in the import format, plus each connection's webhook_url."""
    connections = portal.pbx_connections.order_by("name").prefetch_related("lines", "extensions")
    return {
        "portal": portal.member_id,
        "pbx": [_export_connection(c, with_secrets) for c in connections],
    }


def _export_connection(connection: PbxConnection, with_secrets: bool) -> dict[str, Any]:
    credentials = connection.credentials or {}
    return {
        "name": connection.name,
        "provider": connection.provider,
        "webhook_url": connection.webhook_url,
        "credentials": {
            key: value if with_secrets else MASK for key, value in sorted(credentials.items())
        },
        **{key: getattr(connection, key) for key in PBX_SETTINGS},
        "lines": [
            {
                "number": line.number,
                "line_number": line.line_number,
                "name": line.name,
                "crm_auto_create": line.crm_auto_create,
            }
            for line in sorted(connection.lines.all(), key=lambda line: line.number)
        ],
        # Rows read from Bitrix24 are not configuration: they are refilled from the users.
        "extensions": {
            row.extension: row.user_id
            for row in sorted(connection.extensions.all(), key=lambda row: row.extension)
            if row.source == PbxExtension.Source.MANUAL
        },
    }
