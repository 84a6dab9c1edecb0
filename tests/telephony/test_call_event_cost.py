"""What a call event costs the worker, in statements (issue 11), and that bursts keep the
inbox's per-row guarantees. Times are measured by bench/, never here."""

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext

from bitrixapp import inbox, outbox
from bitrixapp.models import B24Command
from telephony import engine, pipeline
from telephony.models import Call, PbxConnection, PbxEvent, PbxExtension

pytestmark = pytest.mark.django_db


def waiting() -> list[int]:
    return list(
        PbxEvent.objects.filter(state="received").order_by("pk").values_list("pk", flat=True)
    )


def ring(pbx, *entries: str) -> list[int]:
    for entry in entries:
        assert pbx.deliver("call__appeared_inbound", entry=entry).status_code == 200
    return waiting()


def statements(fn) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        fn()
    return [q["sql"] for q in captured]


def test_a_lone_ringing_event_costs_six_statements_in_its_drain(pbx):
    ring(pbx, "warm")
    pbx.settle()  # the policy is cached from here on
    [pk] = ring(pbx, "L1")
    lane = pbx.connection.pk
    sql = statements(lambda: inbox.drain("telephony.pbxevent", lane))
    # In savepoints (the test's transaction): the lane's waiting rows with connection and
    # portal, locked (this one: fewer than a batch, so the lane is done); INSERT the call (new,
    # so held by this transaction without a lock of its own); INSERT register; UPDATE call;
    # UPDATE row; then the last look after the flag is cleared finds nothing waiting. The two
    # looks are SQL written once (bitrixapp.prepared), not compiled by the ORM each time, and
    # the last one needs no transaction of its own.
    core = [
        s.split(" (")[0].split(" SET ")[0][:40]
        for s in sql
        if not s.startswith(("SAVEPOINT", "RELEASE"))
    ]
    # The step's transaction is the test's one savepoint; the batch has none of its own (it
    # would cost two round trips on every step).
    assert sum(s.startswith("SAVEPOINT") for s in sql) == 1, sql
    assert core == [
        'SELECT t0."id", t0."source", t0."body", ',
        'INSERT INTO "telephony_call"',
        'INSERT INTO "bitrixapp_b24command"',
        'UPDATE "telephony_call"',
        'UPDATE "telephony_pbxevent"',
        'SELECT t0."id" FROM "telephony_pbxevent"',
    ], core
    assert not any("telephony_pbxline" in s or "telephony_pbxextension" in s for s in sql)
    assert not any('FROM "bitrixapp_portal"' in s for s in sql)  # loaded with the row
    assert PbxEvent.objects.get(pk=pk).state == "processed"


def test_a_lone_event_processed_by_its_own_task_costs_ten_statements(pbx):
    """A retry or "process again" takes one row by its id."""
    ring(pbx, "warm")
    pbx.settle()
    [pk] = ring(pbx, "L2")
    sql = statements(lambda: inbox.process(PbxEvent, pk))
    # SAVEPOINT; the row locked; other waiting rows (none); SAVEPOINT; the call locked (none
    # yet); INSERT it; lock it; INSERT register; UPDATE call; RELEASE; UPDATE row; RELEASE.
    assert len(sql) == 12, sql
    assert PbxEvent.objects.get(pk=pk).state == "processed"


def test_a_burst_of_50_ringing_events_costs_at_most_4_statements_each(pbx):
    ring(pbx, "warm")
    pbx.settle()
    pks = ring(pbx, *[f"B{n}" for n in range(50)])
    sql = statements(lambda: inbox.process(PbxEvent, pks[0]))
    # One transaction: the row, its 49 neighbours, INSERT calls (new: held without a lock of
    # their own), 50 ids drawn for the registers, one INSERT of the 50, UPDATE calls, UPDATE
    # rows; the test's SAVEPOINT, RELEASE.
    assert len(sql) == 9, [s[:60] for s in sql]
    assert sum('INSERT INTO "bitrixapp_b24command"' in s for s in sql) == 1
    assert PbxEvent.objects.filter(pk__in=pks, state="processed").count() == 50
    assert PbxEvent.objects.filter(pk__in=pks, attempts=1).count() == 50
    registers = B24Command.objects.filter(method="telephony.externalCall.register")
    assert registers.count() == 51
    calls = Call.objects.filter(call_key__in=[f"B{n}" for n in range(50)])
    assert calls.count() == 50 and not calls.filter(register_command=None).exists()
    # The other 49 queued tasks find their rows done: one statement each.
    assert inbox.process(PbxEvent, pks[1]) is None


@pytest.mark.parametrize("taken_by", ["drain", "own task"])
def test_one_failing_event_in_a_burst_does_not_fail_its_neighbours(pbx, monkeypatch, taken_by):
    pks = ring(pbx, "N1", "BAD", "N3")
    real = engine.apply

    def apply(state, event, *args):
        if event.call_key == "BAD":
            raise RuntimeError("engine bug")
        return real(state, event, *args)

    monkeypatch.setattr(engine, "apply", apply)
    if taken_by == "drain":
        inbox.drain("telephony.pbxevent", pbx.connection.pk)
    else:
        inbox.process(PbxEvent, pks[0])
    rows = {r.pk: r for r in PbxEvent.objects.filter(pk__in=pks)}
    assert [rows[pk].state for pk in pks] == ["processed", "received", "processed"]
    assert [rows[pk].attempts for pk in pks] == [1, 1, 1]
    assert "engine bug" in rows[pks[1]].error
    assert rows[pks[1]].next_attempt_at > rows[pks[0]].processed_at  # retried with backoff
    keys = set(Call.objects.exclude(register_command=None).values_list("call_key", flat=True))
    assert keys == {"N1", "N3"}  # nothing of the failed event's transaction was kept


def test_a_drain_survives_its_one_by_one_fallback_breaking_too(pbx, monkeypatch):
    """The batch fails, then so does the database under the one-by-one fallback: the drain
    still ends, and every row of the step has its attempt counted and a retry scheduled."""
    pks = ring(pbx, "B1", "B2")

    def broken_engine(*args):
        raise RuntimeError("engine bug")

    def broken_database(inbox_, pks_):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(engine, "apply", broken_engine)
    monkeypatch.setattr(inbox, "_one_by_one", broken_database)
    assert inbox.drain("telephony.pbxevent", pbx.connection.pk) == 2
    rows = PbxEvent.objects.filter(pk__in=pks).order_by("pk")
    assert [(r.state, r.attempts) for r in rows] == [("received", 1), ("received", 1)]
    assert all("server closed" in r.error for r in rows)


def test_a_malformed_row_in_a_burst_is_rejected_alone(pbx):
    pks = ring(pbx, "M1", "M2")
    PbxEvent.objects.filter(pk=pks[0]).update(body="json=%7Bbroken")
    inbox.process(PbxEvent, pks[1])
    rows = {r.pk: r for r in PbxEvent.objects.filter(pk__in=pks)}
    assert rows[pks[0]].state == "rejected" and rows[pks[0]].error
    assert rows[pks[1]].state == "processed" and rows[pks[1]].call is not None


def test_the_policy_is_read_once_and_again_after_a_mapping_changes(pbx):
    conn = PbxConnection.objects.get(pk=pbx.connection.pk)
    assert "105" not in pipeline.policy_of(conn).users
    with CaptureQueriesContext(connection) as captured:
        pipeline.policy_of(PbxConnection.objects.get(pk=conn.pk))
    assert len(captured) == 1  # the connection itself; lines and extensions are cached
    PbxExtension.objects.create(connection=conn, extension="105", user_id=15)
    assert pipeline.policy_of(PbxConnection.objects.get(pk=conn.pk)).users["105"] == 15
    PbxExtension.objects.filter(connection=conn, extension="105").delete()
    assert "105" not in pipeline.policy_of(PbxConnection.objects.get(pk=conn.pk)).users


def test_a_batch_of_50_registers_looks_once_and_settles_in_eight_statements(pbx):
    pks = ring(pbx, *[f"S{n}" for n in range(50)])
    inbox.process(PbxEvent, pks[0])
    sql = statements(lambda: outbox.dispatch(pbx.portal.pk))
    ours = 'SELECT "bitrixapp_b24command"."id" AS "id" FROM'  # _lock_ours, after the request
    lock = next(i for i, s in enumerate(sql) if s.startswith(ours) and "NO KEY UPDATE" in s)
    end = next(i for i, s in enumerate(sql) if i > lock and 'FROM "bitrixapp_portal"' in s)
    settle = sql[lock:end]
    # Before the request, the registers' send-time hook looks at their 50 calls once.
    looks = [s for s in sql[:lock] if 'FROM "telephony_call"' in s]
    assert len(looks) == 1 and 'FROM "telephony_call" WHERE "id" IN (' in looks[0], looks
    # Lock our rows; SAVEPOINT, one UPDATE of the 50 commands, RELEASE; SAVEPOINT, lock the
    # 50 calls in id order, one UPDATE of their CALL_IDs (the `many` result handler),
    # RELEASE; RELEASE.
    assert len(settle) == 9, [s[:80] for s in settle]
    assert (len(settle) - 1) / 50 <= 0.2
    assert B24Command.objects.filter(state="done").count() == 50
    stored = {c.pk: c.result["CALL_ID"] for c in B24Command.objects.all()}  # a dict, as sent
    assert {c.b24_call_id for c in Call.objects.all()} == set(stored.values())
    assert len(pbx.fake.calls_of("telephony.externalCall.register")) == 50


def test_a_batch_with_a_click_to_call_event_inserts_its_commands_one_by_one(pbx):
    """A click-to-call event's call is locked on the way, after a batch's ids would have been
    drawn: such a batch does not draw ids ahead (outbox.inserted_together), so each of its
    calls' commands keeps its place in id order."""
    from tests.telephony.test_click_to_call import click, crm_registered_call

    click(pbx, crm_registered_call(pbx), EXTENSION="", CALL_LIST_ID="0")
    started = Call.objects.get()
    pbx.settle()
    pbx.deliver("call__appeared_callback", command_id=started.command_id, entry="C1")
    [first, *_] = ring(pbx, "R1", "R2")
    sql = statements(lambda: inbox.process(PbxEvent, first))
    assert not any(s.startswith("SELECT nextval") for s in sql)
    assert sum(s.startswith('INSERT INTO "bitrixapp_b24command"') for s in sql) == 2  # R1, R2
    assert PbxEvent.objects.filter(state="processed").count() == 3


def test_a_burst_draws_its_command_ids_after_locking_its_calls(pbx):
    ring(pbx, "warm")
    pbx.settle()
    pks = ring(pbx, "D1", "D2", "D3")
    sql = statements(lambda: inbox.process(PbxEvent, pks[0]))
    drawn = next(i for i, s in enumerate(sql) if s.startswith("SELECT nextval"))
    created = next(i for i, s in enumerate(sql) if s.startswith('INSERT INTO "telephony_call"'))
    assert created < drawn
