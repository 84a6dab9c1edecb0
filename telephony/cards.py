"""Call cards are decided when the command leaves, not only when it was queued.

While Bitrix24 is unreachable a call's commands wait in the outbox; the call may ring and end
meanwhile. When Bitrix24 comes back, a register with SHOW=1 or a show for that call would pop
up a card for a call that is long over. So just before sending, these hooks look at the call
as it is now (the engine's `cards_still_due`): register goes with SHOW=0 and a show is dropped
when the card is no longer due; a call still ringing keeps its card.
"""

import functools
from typing import Any

from bitrixapp import prepared
from bitrixapp.models import B24Command
from bitrixapp.outbox import Outgoing, before_send
from telephony import engine
from telephony.engine import CallState
from telephony.models import Call


def call_states_of(commands: list[B24Command]) -> dict[int, CallState]:
    """The current engine state of the calls these commands belong to, by call id, in one
    statement (a batch of 50 registers looks once, not 50 times)."""
    ids = sorted({c.context["call"] for c in commands if c.context.get("call") is not None})
    return {pk: CallState.from_json(state) for pk, state in _states().rows([], [ids])}


@functools.cache
def _states() -> prepared.Select:
    return prepared.Select(Call, ["id", "state"], among=["id"])


def _state(states: dict[int, CallState], command: B24Command) -> CallState | None:
    return states.get(command.context.get("call"))


@before_send("telephony.externalCall.register")
def register_show(outgoing: Outgoing) -> list[dict[str, Any] | None]:
    states = call_states_of([c for c, params in outgoing if int(params.get("SHOW") or 0)])
    return [_register_params(_state(states, c), params) for c, params in outgoing]


def _register_params(state: CallState | None, params: dict[str, Any]) -> dict[str, Any]:
    if state is None or not int(params.get("SHOW") or 0):
        return params
    due = engine.cards_still_due(state, [int(params["USER_ID"])])
    return {**params, "SHOW": 1 if due else 0}


@before_send("telephony.externalCall.show")
def show_users(outgoing: Outgoing) -> list[dict[str, Any] | None]:
    states = call_states_of([c for c, _ in outgoing])
    return [_show_params(_state(states, c), params) for c, params in outgoing]


def _show_params(state: CallState | None, params: dict[str, Any]) -> dict[str, Any] | None:
    if state is None:
        return params
    users = params.get("USER_ID")
    due = engine.cards_still_due(
        state, [int(u) for u in (users if isinstance(users, list) else [users])]
    )
    return {**params, "USER_ID": due} if due else None
