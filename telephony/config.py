"""The `pbx` section of the configuration file: a portal's PBX connections (docs/configuration.md).

Connections are matched by name, lines by their PBX number, extensions by extension. What the
file says is applied; what it leaves out is left alone: an omitted setting keeps its current
value (the model default for a new connection), an omitted `lines` or `extensions` leaves those
rows as they are, and connections missing from the file stay. Unchanged rows are not written
and enqueue nothing, so re-importing the same file is a no-op. The frame (loading, paths in
errors, the one transaction, the "***" mask) is bitrixapp.config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bitrixapp import config
from bitrixapp.config import Checker
from bitrixapp.models import Portal
from telephony import directory, providers
from telephony.models import PbxConnection, PbxExtension, PbxLine

# Each connection setting once: its name (the model field, whose label and help text the admin
# shows) and the check of its value in a configuration file. The admin's "Call handling"
# fieldset, the import and the export all read this table.
CONNECTION_SETTINGS: dict[str, config.Check] = {
    "api_url": config.url,
    "default_user_id": config.optional_user_id,
    "show_card": config.boolean,
    "crm_create": config.boolean,
    "missed_call_min_duration_s": config.count,
    "route_to_responsible": config.boolean,
    "log_internal_calls": config.boolean,
    "only_mapped_lines": config.boolean,
    "default_line_number": config.text(64, blank=True),
    "callback_extension": config.text(64, blank=True),
}

PBX_KEYS = {"name", "provider", "credentials", "lines", "extensions", "webhook_url"}
LINE_KEYS = {"number", "line_number", "name", "crm_auto_create"}
LINE_SETTINGS: dict[str, config.Check] = {
    "name": config.text(100, blank=True),
    "crm_auto_create": config.boolean,
}


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


# ---------------------------------------------------------------- checking


def parse(checker: Checker, path: str, entries: Any) -> list[PbxSpec]:
    return checker.entries(path, entries, lambda p, e: _parse_pbx(checker, p, e), "name") or []


def _parse_pbx(checker: Checker, path: str, entry: Any) -> PbxSpec | None:
    data = checker.mapping(path, entry, PBX_KEYS | CONNECTION_SETTINGS.keys())
    if data is None:
        return None
    errors_before = len(checker.errors)
    credentials = config.parse_credentials(checker, f"{path}.credentials", data.get("credentials"))
    credentials_ok = len(checker.errors) == errors_before
    spec = PbxSpec(
        name=checker.required(path, data, "name", config.text(100)),
        provider=checker.required(path, data, "provider", config.registered_in(providers.REGISTRY)),
        credentials=credentials,
        settings=checker.optional(path, data, CONNECTION_SETTINGS),
        lines=checker.entries(
            f"{path}.lines", data.get("lines"), lambda p, e: _parse_line(checker, p, e), "number"
        ),
        extensions=_parse_extensions(checker, f"{path}.extensions", data.get("extensions")),
    )
    if spec.provider and credentials_ok:
        config.check_provider_credentials(
            checker,
            f"{path}.credentials",
            spec.credentials,
            spec.provider,
            providers.get(spec.provider),
        )
    return spec


def _parse_line(checker: Checker, path: str, entry: Any) -> LineSpec | None:
    data = checker.mapping(path, entry, LINE_KEYS)
    if data is None:
        return None
    return LineSpec(
        number=checker.required(path, data, "number", config.text(64)),
        line_number=checker.required(path, data, "line_number", config.text(64)),
        **checker.optional(path, data, LINE_SETTINGS),
    )


def _parse_extensions(checker: Checker, path: str, data: Any) -> dict[str, int] | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        checker.fail(path, 'must be a mapping of extension: user id, e.g. {"101": 12}')
        return None
    extensions = {}
    for extension, user in data.items():
        name = checker.value(f"{path}.{extension}", config.text(32), extension)
        user = checker.value(f"{path}.{extension}", config.user_id, user)
        if name is not None and user is not None:
            extensions[name] = user
    return extensions


# ---------------------------------------------------------------- applying


def apply(portal: Portal, specs: list[PbxSpec], path: str) -> list[str]:
    report: list[str] = []
    for index, spec in enumerate(specs):
        report += _apply_connection(portal, spec, f"{path}[{index}]")
    return report


def _apply_connection(portal: Portal, spec: PbxSpec, path: str) -> list[str]:
    connection = (
        PbxConnection.objects.select_for_update().filter(portal=portal, name=spec.name).first()
    )
    created = connection is None
    if connection is None:
        connection = PbxConnection(portal=portal, name=spec.name)
    # A stored value of another provider means something else: "***" does not keep it.
    stored = connection.credentials if connection.provider == spec.provider else {}
    changed = config.update_fields(
        connection,
        {
            "provider": spec.provider,
            "credentials": config.resolve_credentials(
                stored, spec.credentials, f"{path}.credentials"
            ),
            **(providers.setting_defaults(spec.provider) if created else {}),
            **spec.settings,
        },
    )
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
    values = {
        "line_number": spec.line_number,
        "name": spec.name,
        "crm_auto_create": spec.crm_auto_create,
    }
    changed = config.update_fields(line, {k: v for k, v in values.items() if v is not None})
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


def export(portal: Portal, with_secrets: bool) -> list[dict[str, Any]]:
    """The portal's connections in the import format, plus each one's webhook_url."""
    connections = portal.pbx_connections.order_by("name").prefetch_related("lines", "extensions")
    return [_export_connection(c, with_secrets) for c in connections]


def _export_connection(connection: PbxConnection, with_secrets: bool) -> dict[str, Any]:
    return {
        "name": connection.name,
        "provider": connection.provider,
        "webhook_url": connection.webhook_url,
        "credentials": config.export_credentials(connection.credentials, with_secrets),
        **config.export_settings(connection, CONNECTION_SETTINGS),
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


class PbxSection:
    key = "pbx"
    parse = staticmethod(parse)
    apply = staticmethod(apply)
    export = staticmethod(export)


SECTION = config.register(PbxSection())
