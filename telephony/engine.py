"""The call engine: (call state, normalized event) -> (new state, intents). Pure.

No Django, no I/O: the tasks load the state, call `apply`, turn the
intents into outbox commands and save the state. Impossible transitions are ignored, never
crashed on; events of a leg older than one already seen (by `seq`) change nothing.

Bitrix24 side, in short: `register` creates the call (and its card when SHOW=1), `show`/`hide`
open and close cards for users, `finish` writes statistics and the CRM activity and closes the
card; `attachRecord` needs a finished call.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from bitrixapp.phones import digits
from telephony.providers.base import CallEvent, Direction, Kind

# A call processed this long after it happened gets no cards (they would pop up stale).
LATE_AFTER_S = 120

# Bitrix24 call TYPE by direction (Bitrix24 REST docs: telephony.externalCall.register);
# callbacks are TYPE 4.
CALL_TYPES = {Direction.INBOUND: 2, Direction.OUTBOUND: 1, Direction.INTERNAL: 2}
CALLBACK_TYPE = 4

MISSED = "304"
SUCCESS = "200"
FAILED = "OTHER"  # the call was never placed: "undefined" in Bitrix24's list, with a reason


# ---------------------------------------------------------------- policy and state


@dataclass(frozen=True)
class Policy:
    """What the engine needs of a connection's settings."""

    external_id_prefix: str
    default_user: int | None = None
    show_card: bool = True
    crm_create: bool = True
    min_talk_s: int = 0
    users: dict[str, int] = field(default_factory=dict)  # extension -> Bitrix24 user
    lines: dict[str, str] = field(default_factory=dict)  # PBX number -> Bitrix24 LINE_NUMBER
    default_line: str = ""  # LINE_NUMBER of numbers not in `lines` ("": the number itself)
    log_internal: bool = False
    only_mapped_lines: bool = False
    sends_summary: bool = True
    route_to_responsible: bool = False

    def user_of(self, extension: str) -> int | None:
        """The user behind an extension; an unmapped extension's calls go to the default user."""
        if not extension:
            return None  # IVR, queue: nobody in particular yet
        return self.users.get(extension, self.default_user)

    def line_of(self, number: str) -> str:
        if not number:
            return ""
        return self.lines.get(digits(number)) or self.default_line or number


@dataclass
class Leg:
    extension: str = ""
    user: int | None = None
    status: str = "ringing"  # ringing | answered | held | ended
    seq: int = 0


@dataclass
class CallState:
    origin: str = "pbx"  # pbx | click_to_call | callback
    b24_call_id: str = ""  # known up front for click-to-call (Bitrix24 registered it)
    registered: bool = False
    ignored: str = ""  # why the call is not logged ("internal", "unmapped line"), or ""
    late: bool = False
    direction: str = ""
    client_number: str = ""
    line_number: str = ""
    line_mapped: bool = False
    started_at: float | None = None
    answered_at: float | None = None
    register_user: int | None = None
    answered_user: int | None = None
    last_ringing_user: int | None = None
    responsible: int | None = None
    awaiting_responsible: bool = False
    legs: dict[str, Leg] = field(default_factory=dict)
    shown: list[int] = field(default_factory=list)
    recordings: list[str] = field(default_factory=list)
    finished: bool = False
    status_code: str = ""
    duration: int | None = None
    problem: str = ""  # why the call could not be logged, for the admin

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CallState:
        values = dict(data or {})
        values["legs"] = {k: Leg(**v) for k, v in (values.get("legs") or {}).items()}
        return cls(**values)

    @property
    def ringing_users(self) -> list[int]:
        return _unique(leg.user for leg in self.legs.values() if leg.status == "ringing")

    @property
    def active_users(self) -> set[int]:
        return {leg.user for leg in self.legs.values() if leg.status != "ended" and leg.user}


# ---------------------------------------------------------------- intents


@dataclass(frozen=True)
class Register:
    user_id: int
    phone: str
    call_type: int
    line_number: str
    start: str  # ISO-8601 with offset
    show: bool
    crm_create: bool
    external_call_id: str


@dataclass(frozen=True)
class Show:
    users: tuple[int, ...]


@dataclass(frozen=True)
class Hide:
    users: tuple[int, ...]


@dataclass(frozen=True)
class Finish:
    user_id: int
    duration: int
    status_code: str
    reason: str = ""


@dataclass(frozen=True)
class FetchRecording:
    recording_id: str


@dataclass(frozen=True)
class FindResponsible:
    phone: str


Intent = Register | Show | Hide | Finish | FetchRecording | FindResponsible


# ---------------------------------------------------------------- entry points


def apply(
    state: CallState, event: CallEvent, policy: Policy, now: float, call_key: str = ""
) -> tuple[CallState, list[Intent]]:
    """Apply one event; returns the new state (the given one is not changed) and intents."""
    new = CallState.from_json(state.to_json())
    out: list[Intent] = []
    if event.kind is Kind.RECORDING_READY:
        _on_recording(new, event, out)
        return new, out
    if new.finished or new.ignored or _stale(new, event):
        return new, out
    _learn(new, event, policy, now)
    if _filtered(new, event, policy):
        return new, out
    HANDLERS.get(event.kind, _ignore)(new, event, policy, out, call_key)
    return new, out


def responsible_found(
    state: CallState, user_id: int | None, policy: Policy, call_key: str
) -> tuple[CallState, list[Intent]]:
    """The CRM owner of the client's number is known (or None): register and show now."""
    new = CallState.from_json(state.to_json())
    out: list[Intent] = []
    new.awaiting_responsible = False
    new.responsible = user_id
    if not new.finished and not new.ignored:
        _register_if_due(new, policy, out, call_key)
        _show(new, policy, new.ringing_users, out)
    return new, out


def click_to_call(
    b24_call_id: str, user_id: int, phone: str, line_number: str, origin: str = "click_to_call"
) -> CallState:
    """State of a call Bitrix24 already registered (ONEXTERNALCALLSTART): never register again."""
    return CallState(
        origin=origin,
        b24_call_id=b24_call_id,
        registered=True,
        register_user=user_id,
        direction=Direction.OUTBOUND.value,
        client_number=phone,
        line_number=line_number,
        shown=[user_id],  # Bitrix24 opened the card for the user who clicked
    )


def callback_requested(phone: str, line_number: str) -> tuple[CallState, list[Intent]]:
    """A CRM callback form (ONEXTERNALCALLBACKSTART): first ask Bitrix24 who owns the client,
    whose extension rings first (the tasks pick the extension once the answer is in)."""
    state = CallState(
        origin="callback", client_number=phone, line_number=line_number, awaiting_responsible=True
    )
    return state, [FindResponsible(phone)]


def originate_failed(
    state: CallState,
    reason: str,
    policy: Policy | None = None,
    call_key: str = "",
    user: int | None = None,
) -> tuple[CallState, list[Intent]]:
    """The call could not be placed (the PBX refused it, or nobody can ring): finish it as
    failed with the reason. A callback Bitrix24 has no call for yet is registered first,
    without a card (the offline recipe of telephony.externalCall.finish in the Bitrix24 REST
    docs), for `user` or the default user, so the client's request still shows up in the CRM."""
    new = CallState.from_json(state.to_json())
    out: list[Intent] = []
    if new.finished:
        return new, out
    if not new.registered and policy is not None:
        owner = user or policy.default_user
        if owner is not None and new.client_number:
            _register(new, owner, False, policy, out, call_key)
    new.finished, new.status_code, new.duration = True, FAILED, 0
    if new.register_user is None:
        new.problem = f"{reason}; no Bitrix24 user to log it for: set a default user"
        return new, out
    out.append(Finish(new.register_user, 0, FAILED, reason[:250]))
    return new, out


def cards_still_due(state: CallState, users: list[int]) -> list[int]:
    """Of the users a queued register or show meant to open a card for, those it is still
    worth opening it for now that the command leaves (it may have waited out a Bitrix24
    outage): nobody once the call has ended, and nobody whose card was closed meanwhile."""
    if state.finished or state.ignored:
        return []
    return [user for user in users if user in state.shown]


# ---------------------------------------------------------------- event handling


def _stale(state: CallState, event: CallEvent) -> bool:
    """Mango sends notifications in parallel: an older seq of a leg arrives after a newer one."""
    leg = state.legs.get(event.leg) if event.leg else None
    return bool(leg and event.seq and event.seq <= leg.seq)


def _learn(state: CallState, event: CallEvent, policy: Policy, now: float) -> None:
    if event.direction and not state.direction:
        state.direction = event.direction.value
    if event.client_number and not state.client_number:
        state.client_number = event.client_number
    if event.line_number and not state.line_number:
        state.line_number = policy.line_of(event.line_number)
        state.line_mapped = digits(event.line_number) in policy.lines
    first_time = event.started_at or event.at
    if first_time and (state.started_at is None or first_time < state.started_at):
        state.started_at = first_time
    if event.at and now - event.at > LATE_AFTER_S:
        state.late = True


def _filtered(state: CallState, event: CallEvent, policy: Policy) -> bool:
    """Internal calls and calls on unmapped lines are not logged unless the connection says so."""
    if state.registered and not state.ignored:
        return False  # already in Bitrix24: see it through
    reason = ""
    if state.direction == Direction.INTERNAL and not policy.log_internal:
        reason = "internal call"
    elif policy.only_mapped_lines and state.line_number and not state.line_mapped:
        reason = "line not mapped"
    elif policy.only_mapped_lines and event.kind is Kind.SUMMARY and not state.line_number:
        reason = "no line"
    state.ignored = reason
    return bool(reason)


def _on_ringing(state: CallState, event: CallEvent, policy: Policy, out: list, key: str) -> None:
    leg = state.legs.setdefault(event.leg or event.extension or "_", Leg())
    leg.extension = event.extension or leg.extension
    leg.user = policy.user_of(leg.extension)
    leg.status, leg.seq = "ringing", max(leg.seq, event.seq)
    if leg.user:
        state.last_ringing_user = leg.user
    _start_lookup(state, policy, out)
    _register_if_due(state, policy, out, key)
    _show(state, policy, [leg.user] if leg.user else [], out)


def _on_answered(state: CallState, event: CallEvent, policy: Policy, out: list, key: str) -> None:
    leg = state.legs.setdefault(event.leg or event.extension or "_", Leg())
    leg.extension = event.extension or leg.extension
    leg.user = policy.user_of(leg.extension) or leg.user
    leg.status, leg.seq = "answered", max(leg.seq, event.seq)
    for other in state.legs.values():  # the others of a ring group stop ringing
        if other is not leg and other.status == "ringing":
            other.status = "ended"
    if leg.user:
        state.answered_user = leg.user  # a pickup or a transfer: whoever really talks
    state.answered_at = state.answered_at or event.at
    _start_lookup(state, policy, out)
    _register_if_due(state, policy, out, key)
    keep = [leg.user] if leg.user else []
    _hide(state, [u for u in state.shown if u not in keep], out)
    _show(state, policy, keep, out)


def _on_held(state: CallState, event: CallEvent, policy: Policy, out: list, key: str) -> None:
    leg = state.legs.get(event.leg)
    if leg is not None:
        leg.status, leg.seq = "held", max(leg.seq, event.seq)


def _on_ended(state: CallState, event: CallEvent, policy: Policy, out: list, key: str) -> None:
    leg = state.legs.setdefault(event.leg or event.extension or "_", Leg(extension=event.extension))
    leg.user = leg.user or policy.user_of(event.extension)
    leg.status, leg.seq = "ended", max(leg.seq, event.seq)
    # Sequential queue: the card of whoever stopped ringing closes, unless another leg of
    # the same user is still alive.
    _hide(
        state,
        [u for u in state.shown if u not in state.active_users and u != state.answered_user],
        out,
    )
    if not policy.sends_summary and not state.active_users:
        _finish(state, event, policy, out, key)


def _on_summary(state: CallState, event: CallEvent, policy: Policy, out: list, key: str) -> None:
    if event.answered and not state.answered_user:
        state.answered_user = policy.user_of(event.extension)
    if not state.answered_user and event.extension:
        state.last_ringing_user = state.last_ringing_user or policy.user_of(event.extension)
    _finish(state, event, policy, out, key)


def _on_recording(state: CallState, event: CallEvent, out: list) -> None:
    if state.ignored or not event.recording_id or event.recording_id in state.recordings:
        return
    state.recordings.append(event.recording_id)
    out.append(FetchRecording(event.recording_id))


def _ignore(state: CallState, event: CallEvent, policy: Policy, out: list, key: str) -> None:
    return None


HANDLERS = {
    Kind.RINGING: _on_ringing,
    Kind.ANSWERED: _on_answered,
    Kind.TRANSFERRED: _on_answered,
    Kind.HELD: _on_held,
    Kind.ENDED: _on_ended,
    Kind.SUMMARY: _on_summary,
}


# ---------------------------------------------------------------- building blocks


def _start_lookup(state: CallState, policy: Policy, out: list) -> None:
    """Route to responsible: ask Bitrix24 who owns the client, hold registration meanwhile."""
    wants = policy.route_to_responsible and state.direction == Direction.INBOUND
    undecided = not state.registered and not state.awaiting_responsible
    if wants and undecided and state.responsible is None and state.client_number:
        state.awaiting_responsible = True
        out.append(FindResponsible(state.client_number))


def _register_if_due(
    state: CallState, policy: Policy, out: list, key: str, at_end: bool = False
) -> None:
    """Register once someone is ringing or talking (at the end: whoever can own the record)."""
    if state.registered or state.awaiting_responsible:
        return
    user = state.responsible or _first(state.ringing_users) or state.answered_user
    if user is None and at_end:
        user = state.last_ringing_user or policy.default_user
    if user is None or not state.client_number:
        return  # still in the IVR or a queue: wait for an employee (or the end)
    ringing_now = user in state.ringing_users or user == state.answered_user
    _register(state, user, policy.show_card and not state.late and ringing_now, policy, out, key)


def _register(state: CallState, user: int, show: bool, policy: Policy, out: list, key: str) -> None:
    call_type = (
        CALLBACK_TYPE
        if state.origin == "callback"
        else CALL_TYPES.get(Direction(state.direction) if state.direction else Direction.INBOUND, 2)
    )
    out.append(
        Register(
            user_id=user,
            phone=state.client_number,
            call_type=call_type,
            line_number=state.line_number,
            start=_iso(state.started_at),
            show=show,
            crm_create=policy.crm_create,
            external_call_id=f"{policy.external_id_prefix}:{key}",
        )
    )
    state.registered, state.register_user = True, user
    if show:
        state.shown.append(user)


def _show(state: CallState, policy: Policy, users: list[int], out: list) -> None:
    if not state.registered or not policy.show_card or state.late or state.finished:
        return
    if state.responsible and state.responsible not in state.shown:
        users = [*users, state.responsible]  # the CRM owner sees known clients' calls
    new = [u for u in _unique(users) if u not in state.shown]
    if new:
        state.shown.extend(new)
        out.append(Show(tuple(new)))


def _hide(state: CallState, users: list[int], out: list) -> None:
    gone = [u for u in _unique(users) if u in state.shown]
    if gone and state.registered:
        state.shown = [u for u in state.shown if u not in gone]
        out.append(Hide(tuple(gone)))


def _finish(state: CallState, event: CallEvent, policy: Policy, out: list, key: str) -> None:
    state.awaiting_responsible = False  # too late to wait for the CRM lookup
    if not state.registered:
        state.late = True  # an end with no ringing seen: a complete record, but no card
        _register_if_due(state, policy, out, key, at_end=True)
    user = _finish_user(state, event, policy)
    if user is None or not state.registered:
        state.problem = "no Bitrix24 user to log the call for: set a default user"
        state.finished = True
        return
    answered = bool(state.answered_user) or bool(event.answered)
    talk = _talk_seconds(state, event) if answered else 0
    status = _status(answered, talk, event, policy)
    _hide(state, [u for u in state.shown if u != user], out)
    state.finished, state.status_code, state.duration = True, status, talk
    # A disconnect reason explains a call that did not connect, not a short conversation.
    out.append(Finish(user, talk, status, "" if answered else event.reason))


def _finish_user(state: CallState, event: CallEvent, policy: Policy) -> int | None:
    if state.answered_user:
        return state.answered_user
    if state.origin != "pbx":
        return state.register_user  # the employee who clicked (or the callback's owner)
    return policy.default_user or state.last_ringing_user or state.register_user


def _talk_seconds(state: CallState, event: CallEvent) -> int:
    if event.talk_seconds is not None:
        return max(0, int(event.talk_seconds))
    if state.answered_at and event.at:
        return max(0, int(event.at - state.answered_at))
    return 0


def _status(answered: bool, talk: int, event: CallEvent, policy: Policy) -> str:
    if answered:
        return SUCCESS if talk >= policy.min_talk_s and talk > 0 else MISSED
    if event.status_code and event.status_code != SUCCESS:
        return event.status_code  # busy, unavailable... from the provider's table
    return MISSED


def _iso(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat() if ts else ""


def _unique(values: Any) -> list:
    seen: list = []
    for value in values:
        if value is not None and value not in seen:
            seen.append(value)
    return seen


def _first(values: list) -> Any:
    return values[0] if values else None
