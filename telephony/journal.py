"""The call journal: one call's story in an admin's words, to answer "why didn't the card show?"
without reading logs.

It reads what is stored anyway — the PBX events (normalized), the Bitrix24 requests the call
caused with Bitrix24's answers, the engine's state — and says, first, a verdict about the card
and the record, then every step in time order (bitrixapp.timeline renders the table).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop as N_

from bitrixapp import timeline, users
from bitrixapp.models import B24Command, Portal
from bitrixapp.timeline import when
from telephony import engine
from telephony.engine import CallState
from telephony.models import Call, PbxEvent
from telephony.providers.base import CallEvent, Kind


@dataclass(frozen=True)
class Journal:
    verdict: list[str]  # the answer first: card, record, what to do
    entries: list[timeline.Entry]


def of_call(call: Call) -> Journal:
    commands = list(
        B24Command.objects.filter(
            portal_id=call.portal_id, owner_key__in=(call.owner_key, f"{call.owner_key}:crm")
        ).order_by("pk")
    )
    events = list(call.events.order_by("pk"))
    name = _namer(call, commands)
    entries = [_event_entry(e) for e in events] + [_command_entry(c, name) for c in commands]
    return Journal(_verdict(call, commands, name), entries)


def render(journal: Journal) -> SafeString:
    head = (_("time"), _("from"), _("what happened"), _("state"))
    verdict = format_html(
        '<ul class="call-verdict" style="list-style:none;margin:0 0 1em;padding:.6em 1em;'
        "text-align:left;font-size:1.1em;background:var(--darkened-bg);"
        'border-left:4px solid var(--primary)">{}</ul>',
        format_html_join("", "<li>{}</li>", ((line,) for line in journal.verdict)),
    )
    return format_html("{}{}", verdict, timeline.table(head, timeline.rows(journal.entries)))


# ---------------------------------------------------------------- the verdict


def _verdict(call: Call, commands: list[B24Command], name: Callable[[int], str]) -> list[str]:
    state = CallState.from_json(call.state)
    register = next((c for c in commands if c.method.endswith(".register")), None)
    out = [_card_verdict(call, state, register, commands, name)]
    if call.portal.status != Portal.Status.ACTIVE:
        out.append(
            _("The portal is %(status)s: requests wait until a portal admin opens the app.")
            % {"status": call.portal.get_status_display()}
        )
    failed = [c for c in commands if c.state == B24Command.State.FAILED]
    out += [
        _("Bitrix24 refused %(method)s: %(error)s") % {"method": c.method, "error": _error(c)}
        for c in failed
    ]
    if call.last_error:
        out.append(call.last_error)
    return out


def _card_verdict(
    call: Call,
    state: CallState,
    register: B24Command | None,
    commands: list[B24Command],
    name: Callable[[int], str],
) -> str:
    """Why the card did or did not show, the first reason that applies."""
    if not call.events.exists() and call.origin == Call.Origin.PBX:
        return _("No event from the PBX belongs to this call.")
    if state.ignored:
        return _("Not logged in Bitrix24: %(why)s.") % {"why": _ignored(state.ignored)}
    if register is None and call.origin == Call.Origin.PBX:
        return _(
            "Bitrix24 was never asked to log the call: no mapped extension rang and no default "
            "employee is set (PBX connection → extensions, default employee)."
        )
    opened = _opened(commands)
    if opened:
        return _("The card was opened for %(users)s.") % {
            "users": ", ".join(name(u) for u in opened)
        }
    if register is not None and register.state in B24Command.OPEN_STATES:
        return _("The request to log the call has not been sent to Bitrix24 yet.")
    if state.late:
        return _(
            "No card: the PBX's events came more than %(s)s s after the call happened, too "
            "late for a card; the call is logged without one."
        ) % {"s": engine.LATE_AFTER_S}
    if call.connection.show_card is False:
        return _("No card: “show the call card” is off on the PBX connection.")
    return _("No card: nobody whose extension is mapped was ringing when the call was logged.")


def _opened(commands: list[B24Command]) -> list[int]:
    """Users whose card Bitrix24 accepted to open (register with SHOW=1, show)."""
    users_: list[int] = []
    for c in commands:
        if c.state != B24Command.State.DONE:
            continue
        if c.method.endswith(".register") and c.params.get("SHOW"):
            users_.append(c.params.get("USER_ID"))
        elif c.method.endswith(".show"):
            users_ += list(c.params.get("USER_ID") or [])
    return list(dict.fromkeys(u for u in users_ if u))


def _ignored(reason: str) -> str:
    return {
        "internal call": _("a call between employees (“log calls between employees” is off)"),
        "line not mapped": _("the number dialed is not among the lines and only those are logged"),
        "no line": _("the PBX gave no line and only the listed lines are logged"),
    }.get(reason, reason)


def _error(command: B24Command) -> str:
    text = " ".join(filter(None, (command.error_code, command.error_description)))
    return text or _("no reason given")


# ---------------------------------------------------------------- the steps


def _event_entry(row: PbxEvent) -> timeline.Entry:
    said = [_event_words(CallEvent.from_json(e)) for e in row.events] or [row.source]
    cells = (
        when(row.received_at),
        _("PBX"),
        timeline.lines(*said),
        timeline.lines(row.get_state_display(), row.error),
    )
    return timeline.Entry(row.received_at, timeline.INBOUND, row.pk, cells)


EVENT_WORDS: dict[Kind, str] = {
    Kind.RINGING: N_("Extension %(ext)s rings (client %(client)s, line %(line)s)"),
    Kind.ANSWERED: N_("Extension %(ext)s answers"),
    Kind.TRANSFERRED: N_("Transferred to extension %(ext)s"),
    Kind.HELD: N_("Extension %(ext)s puts the call on hold"),
    Kind.ENDED: N_("Extension %(ext)s hangs up"),
    Kind.SUMMARY: N_("The call is over: %(outcome)s"),
    Kind.RECORDING_READY: N_("A recording is ready"),
    Kind.UNKNOWN: N_("An event the app does not use (%(raw)s)"),
}


def _event_words(event: CallEvent) -> str:
    outcome = (
        _("talked %(s)s s") % {"s": event.talk_seconds or 0}
        if event.answered
        else _("not answered")
    )
    values = {
        "ext": event.extension or "—",
        "client": event.client_number or "—",
        "line": event.line_number or "—",
        "outcome": outcome,
        "raw": event.raw_type or "?",
    }
    return _(EVENT_WORDS[event.kind]) % values


# Keyed by the lower-case method: Bitrix24 method names are case-insensitive.
COMMAND_WORDS: dict[str, str] = {
    "telephony.externalcall.register": N_("Log the call in Bitrix24 for %(user)s%(card)s"),
    "telephony.externalcall.show": N_("Open the card for %(users)s"),
    "telephony.externalcall.hide": N_("Close the card for %(users)s"),
    "telephony.externalcall.finish": N_("Finish the call for %(user)s: %(status)s, %(duration)s s"),
    "telephony.externalcall.attachrecord": N_("Attach the recording %(file)s"),
    "telephony.externalcall.searchcrmentities": N_("Ask who owns the client in the CRM"),
}

STATE_WORDS: dict[str, str] = {
    B24Command.State.PENDING: N_("waiting to be sent"),
    B24Command.State.SENDING: N_("being sent"),
    B24Command.State.DONE: N_("Bitrix24 accepted it"),
    B24Command.State.FAILED: N_("Bitrix24 refused it"),
    B24Command.State.CANCELLED: N_("cancelled"),
}


def _command_entry(command: B24Command, name: Callable[[int], str]) -> timeline.Entry:
    params = command.params or {}
    words = COMMAND_WORDS.get(command.method.lower())
    what = command.method
    if words:
        who = ", ".join(name(u) for u in _as_list(params.get("USER_ID"))) or name(None)
        what = _(words) % {
            "user": who,
            "users": who,
            "card": _(", the card opens") if params.get("SHOW") else _(", no card"),
            "status": _status(params.get("STATUS_CODE", "")),
            "duration": params.get("DURATION", 0),
            "file": params.get("FILENAME", ""),
        }
    answer = _answer(command)
    cells = (
        when(command.created_at),
        _("app → Bitrix24"),
        timeline.lines(what, answer),
        timeline.lines(_(STATE_WORDS.get(command.state, command.state)), _error_or_empty(command)),
    )
    return timeline.Entry(command.created_at, timeline.COMMAND, command.pk, cells)


def _answer(command: B24Command) -> str:
    result = command.result if isinstance(command.result, dict) else {}
    if command.method.endswith(".register") and result.get("CALL_ID"):
        return _("Bitrix24's call ID: %(id)s") % {"id": result["CALL_ID"]}
    if command.method.endswith(".searchCrmEntities") and command.state == B24Command.State.DONE:
        return _("Bitrix24 answered: %(n)s match(es) in the CRM") % {"n": _count(command.result)}
    return ""


def _error_or_empty(command: B24Command) -> str:
    return _error(command) if command.state == B24Command.State.FAILED else ""


def _count(result: object) -> int:
    return len(result) if isinstance(result, list) else 0


def _status(code: str) -> str:
    return {
        engine.SUCCESS: _("answered"),
        engine.MISSED: _("missed"),
        engine.FAILED: _("failed"),
    }.get(code, code)


def _as_list(value: object) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _namer(call: Call, commands: list[B24Command]) -> Callable[[int], str]:
    ids = {u for c in commands for u in _as_list((c.params or {}).get("USER_ID"))}
    known = users.names(call.portal_id, [u for u in ids if isinstance(u, int)])

    def name(user_id: object) -> str:
        if user_id is None:
            return _("nobody")
        return known.get(user_id, _("user #%(id)s") % {"id": user_id})

    return name
