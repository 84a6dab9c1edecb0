"""Did every call reach Bitrix24 exactly once? What went twice, and was it allowed to?

The one documented exception to exactly-once is the at-least-once window of the outbox: a
command whose request was sent but whose answer was never recorded (the dispatcher died, or
could not write the answer) is sent again once its lease expires. `InFlight` snapshots, at
each crash, the commands in that state; `Ledger` then reads the live Bitrix24 fake and checks
that only those commands were executed twice, and that every call has exactly one register
and one finish otherwise.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from django.db.models import Max
from django.utils import timezone

from bitrixapp.models import B24Command
from telephony.models import Call, PbxConnection, PbxEvent
from tests.fakes.bitrix24 import FakeBitrix24, FakePortal

PREFIX = "telephony.externalcall."
Key = tuple[str, str]  # (method without the prefix, Mango entry_id)


def external_call_id(connection: PbxConnection, entry_id: str) -> str:
    """EXTERNAL_CALL_ID the bridge registers a call with (telephony.pipeline.policy_of)."""
    return f"{connection.webhook_uuid.hex[:12]}:{entry_id}"


@dataclass
class InFlight:
    """Commands that were in `sending` at the moment of a crash: the at-least-once window."""

    keys: set[Key] = field(default_factory=set)
    crashes: int = 0

    def snapshot(self) -> int:
        """Call right after a crash (this process reads PostgreSQL directly)."""
        self.crashes += 1
        calls = dict(Call.objects.values_list("id", "call_key"))
        rows = B24Command.objects.filter(state=B24Command.State.SENDING)
        taken = {
            (method.lower().removeprefix(PREFIX), calls.get(_call_pk(owner), owner))
            for method, owner in rows.values_list("method", "owner_key")
        }
        self.keys |= taken
        return len(taken)


def _call_pk(owner_key: str) -> int | None:
    kind, _, pk = owner_key.partition(":")
    return int(pk) if kind == "call" and pk.isdigit() else None


@dataclass
class Ledger:
    """Executions of telephony methods in the fake, per (method, call)."""

    executions: Counter = field(default_factory=Counter)  # Key -> times Bitrix24 ran it
    finished: Counter = field(default_factory=Counter)  # entry_id -> statistics records

    @classmethod
    def read(cls, fake: FakeBitrix24, remote: FakePortal, connection: PbxConnection) -> Ledger:
        prefix = f"{connection.webhook_uuid.hex[:12]}:"
        entry_of_call: dict[str, str] = {}
        ledger = cls()
        for call in fake.calls:
            method = call.method.lower()
            if call.member_id != remote.member_id or not method.startswith(PREFIX):
                continue
            method = method.removeprefix(PREFIX)
            if method == "register":
                entry = str(call.params.get("EXTERNAL_CALL_ID", "")).removeprefix(prefix)
                if call.ok:
                    entry_of_call[call.result["CALL_ID"]] = entry
            else:
                entry = entry_of_call.get(str(call.params.get("CALL_ID")), "?")
            ledger.executions[(method, entry)] += 1
        for record in remote.statistics.values():
            ledger.finished[str(record["EXTERNAL_CALL_ID"]).removeprefix(prefix)] += 1
        return ledger

    def resent(self) -> dict[Key, int]:
        """(method, call) -> extra executions beyond the first."""
        return {key: n - 1 for key, n in self.executions.items() if n > 1}


def all_done(connection: PbxConnection, entries: list[str]) -> bool:
    """Every webhook stored and handled, every call finished, nothing left to send."""
    return (
        PbxEvent.objects.filter(connection=connection, state=PbxEvent.State.PROCESSED).count()
        == 3 * len(entries)
        and Call.objects.filter(connection=connection, phase="finished").count() == len(entries)
        and not B24Command.objects.filter(state__in=B24Command.OPEN_STATES).exists()
    )


def progress(connection: PbxConnection) -> str:
    events = Counter(PbxEvent.objects.filter(connection=connection).values_list("state", flat=True))
    commands = Counter(B24Command.objects.values_list("state", flat=True))
    leases = B24Command.objects.filter(state=B24Command.State.SENDING).aggregate(
        until=Max("lease_until")
    )["until"]
    held = (
        f"; 'sending' held by a lease until {leases:%H:%M:%S} (now {timezone.now():%H:%M:%S})"
        if leases
        else ""
    )
    return f"events {dict(events)}, commands {dict(commands)}{held}"


def verify(
    fake: FakeBitrix24,
    remote: FakePortal,
    connection: PbxConnection,
    entries: list[str],
    window: InFlight,
    bound_per_crash: int,
) -> dict[Key, int]:
    """Assert nothing was lost and nothing doubled outside the window; return what doubled."""
    assert PbxEvent.objects.filter(connection=connection).count() == 3 * len(entries)
    assert not PbxEvent.objects.exclude(state=PbxEvent.State.PROCESSED).exists()
    calls = Call.objects.filter(connection=connection)
    assert sorted(calls.values_list("call_key", flat=True)) == sorted(entries)
    assert not calls.exclude(phase="finished").exists()
    assert not calls.filter(b24_call_id="").exists()

    ledger = Ledger.read(fake, remote, connection)
    resent = ledger.resent()
    outside = set(resent) - window.keys
    assert not outside, f"sent twice without having been in flight at a crash: {outside}"
    doubled_calls = {entry for _, entry in resent}
    for entry in entries:
        once = entry not in doubled_calls
        assert ledger.executions[("register", entry)] == 1 or not once, entry
        assert ledger.executions[("finish", entry)] == 1 or not once, entry
        # Bitrix24's statistics (what users see): one record per call, or, if the call was
        # in the window, at least one.
        assert ledger.finished[entry] == 1 or (not once and ledger.finished[entry] >= 1), entry
    extra = sum(resent.values())
    assert extra <= bound_per_crash * max(window.crashes, 1), (extra, window.crashes)

    # A command that failed may only be a repeat Bitrix24 refused (finish twice: "Call is
    # not found"); everything else went through.
    failed = B24Command.objects.filter(state=B24Command.State.FAILED)
    calls_by_pk = dict(calls.values_list("id", "call_key"))
    for method, owner, error in failed.values_list("method", "owner_key", "error_description"):
        key = (method.lower().removeprefix(PREFIX), calls_by_pk.get(_call_pk(owner), owner))
        assert key in resent, f"{key} failed for good: {error}"
    return resent
