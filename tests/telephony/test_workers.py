"""Calls through real worker processes: parallel calls, per-call order, duplicate deliveries."""

import pytest

from tests.conftest import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

EVENTS = (
    "call__appeared_inbound",
    "call__connected",
    "call__disconnected",
    "summary__inbound_answered",
)


def test_parallel_calls_with_duplicates_make_one_record_each(pbx, start_worker):
    start_worker("t1")
    start_worker("t2")
    calls = [f"P{n}" for n in range(10)]
    for event in EVENTS:  # interleaved: every call's first event, then every second ...
        for entry in calls:
            for _ in range(2):  # each delivered twice
                assert pbx.deliver(event, entry=entry).status_code == 200

    def finished() -> int:
        return len([c for c in pbx.fake.calls_of("telephony.externalCall.finish") if c.ok])

    wait_until(lambda: finished() >= len(calls), timeout=60, what="all calls finished")
    registers = {
        c.result["CALL_ID"]: c.params["EXTERNAL_CALL_ID"].split(":")[1]
        for c in pbx.fake.calls_of("telephony.externalCall.register")
        if c.ok
    }
    assert sorted(registers.values()) == sorted(calls)  # one register per call, none merged
    finishes = [
        registers[c.params["CALL_ID"]]
        for c in pbx.fake.calls_of("telephony.externalCall.finish")
        if c.ok
    ]
    # One finish per call; the fake refuses a finish for a CALL_ID not yet registered.
    assert sorted(finishes) == sorted(calls)
    assert all(
        c.params["STATUS_CODE"] == "200" for c in pbx.fake.calls_of("telephony.externalCall.finish")
    )
