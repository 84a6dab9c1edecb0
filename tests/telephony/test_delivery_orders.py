"""Property-based: MTT and generic PBXs give no delivery guarantees, so the events of one call
arrive in any order, some of them twice. Whatever the order, the engine must register the call
exactly once, finish it exactly once, for the right user with the right status."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from telephony import engine
from telephony.engine import CallState, Policy
from telephony.providers.base import Webhook
from telephony.providers.generic import GenericJson
from telephony.providers.mtt import Mtt

NOW = 1718600100.0
POLICY = Policy(
    external_id_prefix="p",
    default_user=1,
    min_talk_s=3,
    users={"101": 11, "102": 12},
    lines={"74951234567": "74951234567"},
)
BASE_MTT = {"call_id": "c", "from_number": "79161234567", "to_number": "74951234567"}
BASE_GENERIC = {"call_id": "c", "client_number": "+79161234567", "line": "+74951234567"}

# Each call: its events, and the (user, status) it must be finished with.
CALLS = {
    "mtt group answered by another": (
        Mtt(),
        [
            {**BASE_MTT, "type": "incoming_call", "extension": "101", "timestamp": 1718600000},
            {**BASE_MTT, "type": "answer_call", "extension": "102", "timestamp": 1718600005},
            {**BASE_MTT, "type": "end_call", "extension": "102", "duration": 30},
        ],
        (12, "200"),
    ),
    "mtt missed": (
        Mtt(),
        [
            {**BASE_MTT, "type": "incoming_call", "extension": "101", "timestamp": 1718600000},
            {**BASE_MTT, "type": "miss_call", "extension": "101", "timestamp": 1718600020},
        ],
        (1, "304"),
    ),
    "mtt short answered call": (
        Mtt(),
        [
            {**BASE_MTT, "type": "incoming_call", "extension": "101", "timestamp": 1718600000},
            {**BASE_MTT, "type": "answer_call", "extension": "101", "timestamp": 1718600005},
            {**BASE_MTT, "type": "end_call", "extension": "101", "duration": 2},
        ],
        (11, "304"),
    ),
    "generic ring group": (
        GenericJson(),
        [
            {**BASE_GENERIC, "event": "ringing", "extension": ["101", "102"], "seq": 1},
            {**BASE_GENERIC, "event": "answered", "extension": "102", "seq": 2},
            {**BASE_GENERIC, "event": "ended", "extension": "102", "duration": 42, "seq": 3},
        ],
        (12, "200"),
    ),
    "generic busy": (
        GenericJson(),
        [
            {**BASE_GENERIC, "event": "ringing", "extension": "101", "seq": 1},
            {**BASE_GENERIC, "event": "ended", "extension": "101", "status": "busy", "seq": 2},
        ],
        (1, "486"),
    ),
}


def deliveries(events: list[dict]) -> st.SearchStrategy[list[dict]]:
    """Every event at least once (lost ones are other tests), some twice, in any order."""
    repeats = st.lists(st.sampled_from(events), max_size=len(events) + 2)
    return repeats.flatmap(lambda extra: st.permutations(events + extra))


@settings(max_examples=60, deadline=None)
@given(data=st.data(), name=st.sampled_from(sorted(CALLS)))
def test_any_order_with_duplicates_registers_once_and_finishes_once_correctly(data, name):
    provider, events, (user, status) = CALLS[name]
    order = data.draw(deliveries(events))
    state, intents = CallState(), []
    for payload in order:
        body = json.dumps(payload).encode()
        for event in provider.parse(Webhook("", body, "application/json")):
            state, out = engine.apply(state, event, POLICY, NOW, "c")
            intents += out
    registers = [i for i in intents if isinstance(i, engine.Register)]
    finishes = [i for i in intents if isinstance(i, engine.Finish)]
    assert len(registers) == 1 and len(finishes) == 1
    assert (finishes[0].user_id, finishes[0].status_code) == (user, status)
    shown = set()
    for intent in intents:  # cards opened and closed in a consistent order
        if isinstance(intent, engine.Register) and intent.show:
            shown.add(intent.user_id)
        elif isinstance(intent, engine.Show):
            shown |= set(intent.users)
        elif isinstance(intent, engine.Hide):
            assert set(intent.users) <= shown
            shown -= set(intent.users)
