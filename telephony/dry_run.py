"""Routing dry run: "what would happen if this call came in now?", answered by the real engine.

The admin types a client number, the number dialed and the extensions that ring; this builds
the provider-neutral events a PBX would send (ringing per extension, then the end of the call,
answered or not) and feeds them to `engine.apply` with the connection's real `policy_of`. The
intents that come out are turned into sentences instead of outbox commands: nothing is written,
nothing is queued, Bitrix24 is not asked. Where the engine would ask Bitrix24 who owns the
client (CRM-owner routing) the dry run says so and goes on as if the answer were "nobody".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from django.utils.translation import gettext as _

from bitrixapp import users
from bitrixapp.phones import digits
from telephony import engine
from telephony.engine import CallState, Policy
from telephony.models import PbxConnection
from telephony.pipeline import policy_of
from telephony.providers.base import CallEvent, Direction, Kind

CALL_KEY = "dry-run"


@dataclass(frozen=True)
class Question:
    client_number: str
    dialed_number: str
    ringing: tuple[str, ...]  # extensions, in the order they ring
    answered_by: str = ""  # extension that picks up ("" = nobody answers)
    talk_seconds: int = 60


@dataclass
class Decision:
    line: str = ""
    ignored: str = ""  # why the call would not be logged at all
    steps: list[tuple[str, list[str]]] = field(default_factory=list)  # (event, what follows)
    card_users: list[str] = field(default_factory=list)
    crm_owner: str = ""
    outcome: str = ""


def simulate(connection: PbxConnection, question: Question) -> Decision:
    """The engine's decision for `question` on `connection`'s current settings."""
    policy = policy_of(connection)
    name = _namer(connection, policy, question)
    decision = Decision(line=_line_text(policy, question.dialed_number))
    state, now, shown, finished_for = CallState(), time.time(), [], None
    for event, said in _events(question, policy.sends_summary, now):
        state, intents = engine.apply(state, event, policy, now, CALL_KEY)
        if state.awaiting_responsible:
            decision.crm_owner = _crm_owner_text(question.client_number)
            # Bitrix24 is not asked: go on as if the number had no CRM owner.
            state, more = engine.responsible_found(state, None, policy, CALL_KEY)
            intents = [*intents, *more]
        decision.steps.append((said, [_say(i, name) for i in intents]))
        shown += [u for i in intents for u in _opened(i)]
        finished_for = next(
            (i.user_id for i in intents if isinstance(i, engine.Finish)), finished_for
        )
    decision.ignored = _ignored_text(state.ignored)
    decision.card_users = [name(u) for u in dict.fromkeys(shown)]
    decision.outcome = _outcome(state, question, policy, name(finished_for))
    return decision


def _events(question: Question, sends_summary: bool, now: float) -> list[tuple[CallEvent, str]]:
    base = {
        "call_key": CALL_KEY,
        "direction": Direction.INBOUND,
        "client_number": question.client_number,
        "line_number": question.dialed_number,
        "at": now,
    }
    out = [
        (
            CallEvent(Kind.RINGING, leg=ext, extension=ext, seq=1, **base),
            _("Extension %(ext)s rings") % {"ext": ext},
        )
        for ext in question.ringing
    ]
    if question.answered_by:
        answered = CallEvent(
            Kind.ANSWERED, leg=question.answered_by, extension=question.answered_by, seq=2, **base
        )
        out.append((answered, _("Extension %(ext)s answers") % {"ext": question.answered_by}))
    end = _("The call ends after %(s)s s of talk") % {"s": question.talk_seconds}
    if not question.answered_by:
        end = _("Nobody answers; the client hangs up")
    if sends_summary:
        summary = CallEvent(
            Kind.SUMMARY,
            extension=question.answered_by,
            answered=bool(question.answered_by),
            talk_seconds=question.talk_seconds if question.answered_by else 0,
            **base,
        )
        out.append((summary, end))
    else:  # a PBX without a summary: the last leg that ends finishes the call
        legs = list(dict.fromkeys((*question.ringing, question.answered_by))) or ["_"]
        ended = [
            CallEvent(Kind.ENDED, leg=leg, extension=leg, seq=3, **{**base, "at": now + 1})
            for leg in legs
            if leg
        ]
        out += [(e, end) for e in ended]
    return out


def _namer(connection: PbxConnection, policy: Policy, question: Question):
    ids = [*policy.users.values(), policy.default_user]
    known = users.names(connection.portal_id, [i for i in ids if i])

    def name(user_id: int | None) -> str:
        if user_id is None:
            return _("nobody")
        return known.get(user_id, _("user #%(id)s") % {"id": user_id})

    return name


def _line_text(policy: Policy, dialed: str) -> str:
    if not dialed:
        return _("no number dialed: no line")
    line = policy.line_of(dialed)
    if digits(dialed) not in policy.lines:  # the engine's own test (CallState.line_mapped)
        suffix = (
            _("not in the list: the call is ignored")
            if policy.only_mapped_lines
            else _("not in the list: logged under the number itself")
        )
        return f"{dialed} — {suffix}"
    return _("Bitrix24 line %(line)s") % {"line": line}


def _crm_owner_text(number: str) -> str:
    return _(
        "Bitrix24 would be asked who owns %(number)s in the CRM; the call waits for the answer, "
        "then that employee gets the card too and the call is logged for them. This dry run "
        "does not ask Bitrix24 and goes on as if nobody owned the number."
    ) % {"number": number}


def _ignored_text(reason: str) -> str:
    texts = {
        "": "",
        "internal call": _(
            "a call between employees: not logged (see “log calls between employees”)"
        ),
        "line not mapped": _("the dialed number is not among the lines and only those are logged"),
        "no line": _("the PBX gave no line and only listed lines are logged"),
    }
    return texts.get(reason, reason)


def _opened(intent: engine.Intent) -> list[int]:
    if isinstance(intent, engine.Register) and intent.show:
        return [intent.user_id]
    if isinstance(intent, engine.Show):
        return list(intent.users)
    return []


def _say(intent: engine.Intent, name) -> str:
    """One intent in the admin's words (the Bitrix24 method in brackets for the curious)."""
    if isinstance(intent, engine.Register):
        card = _("and the card opens") if intent.show else _("without a card")
        return _(
            "Register the call in Bitrix24 for %(user)s on line %(line)s, %(card)s; "
            "%(crm)s (telephony.externalCall.register)"
        ) % {
            "user": name(intent.user_id),
            "line": intent.line_number or "—",
            "card": card,
            "crm": _("a lead is created for an unknown number")
            if intent.crm_create
            else _("no lead is created"),
        }
    if isinstance(intent, engine.Show):
        who = ", ".join(name(u) for u in intent.users)
        return _("Open the card for %(users)s (telephony.externalCall.show)") % {"users": who}
    if isinstance(intent, engine.Hide):
        who = ", ".join(name(u) for u in intent.users)
        return _("Close the card for %(users)s (telephony.externalCall.hide)") % {"users": who}
    if isinstance(intent, engine.Finish):
        return _(
            "Finish the call for %(user)s: %(status)s, %(s)s s (telephony.externalCall.finish)"
        ) % {
            "user": name(intent.user_id),
            "status": _status_text(intent.status_code),
            "s": intent.duration,
        }
    if isinstance(intent, engine.FindResponsible):
        return _("Ask Bitrix24 who owns %(number)s in the CRM") % {"number": intent.phone}
    return str(intent)


def _status_text(code: str) -> str:
    return {
        engine.SUCCESS: _("answered"),
        engine.MISSED: _("missed"),
        engine.FAILED: _("failed"),
    }.get(code, code)


def _outcome(state: CallState, question: Question, policy: Policy, user: str) -> str:
    if state.ignored:
        return _("Not logged in Bitrix24.")
    if state.problem:
        return state.problem
    if state.status_code == engine.MISSED:
        short = question.answered_by and question.talk_seconds < policy.min_talk_s
        why = (
            _("the conversation was shorter than %(s)s s") % {"s": policy.min_talk_s}
            if short
            else _("nobody answered")
        )
        return _("Logged as a missed call (%(why)s) for %(user)s.") % {"why": why, "user": user}
    return _("Logged as answered by %(user)s, %(s)s s.") % {"user": user, "s": state.duration}
