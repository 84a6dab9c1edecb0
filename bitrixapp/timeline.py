"""Admin building blocks for a record's timeline: what came in (PBX events, delivery reports)
and the Bitrix24 commands it caused, merged in time order into one table.

An app gives its own rows (`Entry` with the cells of its inbound rows); the commands come
from `command_entries()`, found by the owner key the app gave them in the outbox.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from bitrixapp.models import B24Command

JSON_SHOWN_CHARS = 4000  # longer params/results are cut (the full text: the command's page)
HEAD = ("time", "what", "state", "detail")

# Rows at the same moment: what came in before what it caused.
INBOUND, COMMAND = 0, 1


@dataclass(frozen=True, order=True)
class Entry:
    at: datetime
    source: int  # INBOUND or COMMAND
    pk: int
    cells: tuple = field(compare=False)  # one per HEAD column


def as_json(value: Any) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return text if len(text) <= JSON_SHOWN_CHARS else text[:JSON_SHOWN_CHARS] + "\n…"


def when(moment: datetime | None) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if moment else ""


def lines(*texts: str) -> SafeString:
    """The non-empty texts, one per line, escaped."""
    return format_html_join(mark_safe("<br>"), "{}", ((t,) for t in texts if t))


def table(head: Iterable[str], rows: Iterable[tuple]) -> SafeString:
    """An admin table; every cell escaped unless it is already safe HTML."""
    head = tuple(head)
    row_format = "<tr>" + "<td>{}</td>" * len(head) + "</tr>"
    return format_html(
        '<table class="timeline-table"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>',
        format_html_join("", "<th>{}</th>", ((h,) for h in head)),
        format_html_join("", row_format, rows),
    )


def command_cells(command: B24Command) -> tuple:
    link = reverse("admin:bitrixapp_b24command_change", args=[command.pk])
    error = " ".join(filter(None, (command.error_code, command.error_description)))
    return (
        when(command.created_at),
        format_html('<a href="{}">Bitrix24 #{}</a><br>{}', link, command.pk, command.method),
        lines(
            command.state,
            f"HTTP {command.http_status}" if command.http_status else "",
            f"sent {when(command.sent_at)}" if command.sent_at else "",
            f"finished {when(command.finished_at)}" if command.finished_at else "",
        ),
        format_html(
            "<pre>{}</pre>{}<pre>{}</pre>",
            as_json(command.params),
            error,
            as_json(command.result) if command.result is not None else "",
        ),
    )


def command_entries(portal_id: int, owner_key: str) -> list[Entry]:
    """The Bitrix24 commands a record caused (the outbox's owner_key names the record)."""
    commands = B24Command.objects.filter(portal_id=portal_id, owner_key=owner_key)
    return [Entry(c.created_at, COMMAND, c.pk, command_cells(c)) for c in commands.order_by("pk")]


def rows(entries: Iterable[Entry]) -> list[tuple]:
    """The entries' cells in time order."""
    return [entry.cells for entry in sorted(entries)]


def render(entries: Iterable[Entry]) -> SafeString:
    return table(HEAD, rows(entries))
