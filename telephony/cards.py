"""Call cards are decided when the command leaves, not only when it was queued.

While Bitrix24 is unreachable a call's commands wait in the outbox; the call may ring and end
meanwhile. When Bitrix24 comes back, a register with SHOW=1 or a show for that call would pop
up a card for a call that is long over. So just before sending, these hooks look at the call
as it is now (the engine's `cards_still_due`): register goes with SHOW=0 and a show is dropped
when the card is no longer due; a call still ringing keeps its card.
"""

from typing import Any

from bitrixapp.models import B24Command
from bitrixapp.outbox import before_send
from telephony import engine
from telephony.engine import CallState
from telephony.models import Call


def call_state_of(command: B24Command) -> CallState | None:
    """The current engine state of the call a command belongs to, if it belongs to one."""
    pk = command.context.get("call")
    if pk is None:
        return None
    state = Call.objects.filter(pk=pk).values_list("state", flat=True).first()
    return None if state is None else CallState.from_json(state)


@before_send("telephony.externalCall.register")
def register_show(command: B24Command, params: dict[str, Any]) -> dict[str, Any]:
    state = call_state_of(command)
    if state is None or not int(params.get("SHOW") or 0):
        return params
    due = engine.cards_still_due(state, [int(params["USER_ID"])])
    return {**params, "SHOW": 1 if due else 0}


@before_send("telephony.externalCall.show")
def show_users(command: B24Command, params: dict[str, Any]) -> dict[str, Any] | None:
    state = call_state_of(command)
    if state is None:
        return params
    users = params.get("USER_ID")
    due = engine.cards_still_due(
        state, [int(u) for u in (users if isinstance(users, list) else [users])]
    )
    return {**params, "USER_ID": due} if due else None
