"""SQL written once per model (bitrixapp.prepared): the same rows and instances as the ORM."""

from datetime import timedelta

import pytest
from django.db import DataError, IntegrityError, connections, transaction
from django.utils import timezone

from bitrixapp import prepared
from bitrixapp.models import B24Command, Portal
from telephony.models import Call, PbxConnection, PbxEvent

pytestmark = pytest.mark.django_db


def concrete_values(row) -> dict:
    return {f.attname: getattr(row, f.attname) for f in type(row)._meta.concrete_fields}


def test_a_lookup_builds_what_the_orm_builds_with_skipped_fields_deferred(make_portal):
    portal, _ = make_portal()
    conn = PbxConnection.objects.create(
        portal=portal, name="Office", provider="mango", credentials={"api_key": "k"}
    )
    lookup = prepared.RowLookup(
        PbxConnection, "webhook_uuid", related=["portal"], skip=["portal__refresh_token"]
    )
    row = lookup.get(conn.webhook_uuid)
    assert concrete_values(row) == concrete_values(PbxConnection.objects.get(pk=conn.pk))
    assert row.credentials == {"api_key": "k"}  # the field's converter (decrypt) applied
    assert row.portal.get_deferred_fields() == {"refresh_token"}
    assert row.portal.refresh_token == Portal.objects.get(pk=portal.pk).refresh_token  # on access
    assert row.portal.access_token == portal.access_token
    assert lookup.get("00000000-0000-0000-0000-000000000000") is None


@pytest.mark.parametrize(
    ("state", "due_in_s", "expected"),
    [("pending", -1, True), ("pending", 60, False), ("done", -1, False)],
)
def test_a_lookup_loads_whether_a_row_of_another_table_waits(
    make_portal, state, due_in_s, expected
):
    portal, _ = make_portal()
    other, _ = make_portal()
    now = timezone.now()
    B24Command.objects.create(
        portal=portal,
        method="profile",
        state=state,
        next_attempt_at=now + timedelta(seconds=due_in_s),
    )
    B24Command.objects.create(portal=other, method="profile", next_attempt_at=now)  # not ours
    due = prepared.Conditions(B24Command, equal=["state"], not_after="next_attempt_at")
    lookup = prepared.RowLookup(
        Portal, "id", has=prepared.HasWaiting("has_due", B24Command, "portal", due)
    )
    row = lookup.get(portal.pk, ["pending", now])
    assert row.has_due is expected
    assert concrete_values(row) == concrete_values(Portal.objects.get(pk=portal.pk))
    assert lookup.get(0, ["pending", now]) is None


def test_insert_sets_the_key_and_the_defaults_and_refuses_a_duplicate(make_portal):
    portal, _ = make_portal()
    conn = PbxConnection.objects.create(portal=portal, name="Office", provider="mango")
    row = PbxEvent(portal=portal, connection=conn, source="events/call", dedupe_key="d1")
    prepared.insert(row)
    stored = PbxEvent.objects.get(pk=row.pk)
    assert concrete_values(stored) == concrete_values(row)
    assert stored.state == PbxEvent.State.RECEIVED and stored.received_at is not None
    assert not row._state.adding
    twice = PbxEvent(portal=portal, connection=conn, source="events/call", dedupe_key="d1")
    with pytest.raises(IntegrityError), transaction.atomic():  # the inbox's duplicate check
        prepared.insert(twice)


def test_a_guarded_insert_writes_the_row_only_while_its_condition_holds(make_portal):
    """Every column cast to its type (JSON, text, timestamps, keys) and the same row as an
    unguarded INSERT; a false condition writes nothing; a duplicate is still refused."""
    portal, _ = make_portal()
    conn = PbxConnection.objects.create(portal=portal, name="Office", provider="mango")
    holds = prepared.Guard("SELECT 1 FROM telephony_pbxconnection WHERE id = %s", [conn.pk])
    row = PbxEvent(
        portal=portal, connection=conn, source="s", dedupe_key="g1", headers={"X-A": "1"}
    )
    prepared.insert(row, only_if=holds)
    assert concrete_values(PbxEvent.objects.get(pk=row.pk)) == concrete_values(row)
    fails = prepared.Guard("SELECT 1 FROM telephony_pbxconnection WHERE id = %s", [-1])
    with pytest.raises(prepared.NotInserted):
        prepared.insert(
            PbxEvent(portal=portal, connection=conn, source="s", dedupe_key="g2"), fails
        )
    assert not PbxEvent.objects.filter(dedupe_key="g2").exists()
    twice = PbxEvent(portal=portal, connection=conn, source="s", dedupe_key="g1")
    with pytest.raises(IntegrityError), transaction.atomic():
        prepared.insert(twice, only_if=holds)
    # A value too long for its column is refused as by an unguarded INSERT, not cut short.
    too_long = PbxEvent(portal=portal, connection=conn, source="s" * 101, dedupe_key="g3")
    with pytest.raises(DataError), transaction.atomic():
        prepared.insert(too_long, only_if=holds)


def waiting_events() -> prepared.WaitingRows:
    return prepared.WaitingRows(
        PbxEvent,
        equal=["connection_id", "state"],
        not_after="next_attempt_at",
        related=["connection", "connection__portal"],
        skip=["connection__portal__refresh_token"],
    )


def stored_events(portal, n: int) -> tuple[PbxConnection, list[PbxEvent]]:
    conn = PbxConnection.objects.create(
        portal=portal, name="Office", provider="mango", credentials={"api_key": "k"}
    )
    rows = [
        PbxEvent.objects.create(portal=portal, connection=conn, source="s", dedupe_key=f"d{i}")
        for i in range(n)
    ]
    return conn, rows


def test_insert_new_inserts_only_the_rows_no_constraint_holds_yet(make_portal):
    portal, _ = make_portal()
    conn = PbxConnection.objects.create(portal=portal, name="Office", provider="mango")
    older = Call.objects.create(portal=portal, connection=conn, call_key="k2")
    rows = [Call(portal=portal, connection=conn, call_key=k) for k in ("k3", "k2", "k1")]
    new = prepared.insert_new(rows, key="call_key")
    assert [c.call_key for c in new] == ["k3", "k1"]  # in the order given, k2 left out
    assert rows[1].pk is None
    for call in new:
        assert concrete_values(Call.objects.get(pk=call.pk)) == concrete_values(call)
    assert Call.objects.get(call_key="k2").pk == older.pk
    assert (
        prepared.insert_new([Call(portal=portal, connection=conn, call_key="k1")], "call_key") == []
    )


def test_select_gives_what_the_orm_gives_for_lists_of_values(make_portal):
    portal, _ = make_portal()
    other, _ = make_portal()
    for owner, state in [("a", "pending"), ("b", "sending"), ("a", "done"), ("c", "pending")]:
        B24Command.objects.create(portal=portal, method="profile", owner_key=owner, state=state)
    B24Command.objects.create(portal=other, method="profile", owner_key="a")
    select = prepared.Select(
        B24Command, ["owner_key", "id", "params"], equal=["portal"], among=["owner_key", "state"]
    )
    rows = select.rows([portal.pk], [["a", "b"], ["pending", "sending"]])
    expected = B24Command.objects.filter(
        portal=portal, owner_key__in=["a", "b"], state__in=["pending", "sending"]
    ).order_by("id")
    assert rows == list(expected.values_list("owner_key", "id", "params"))
    assert len(rows) == 2 and rows[0][2] == {}  # a JSON column comes back decoded
    assert select.rows([portal.pk], [[], ["pending"]]) == []  # an empty list matches nothing


def test_waiting_rows_are_what_the_orm_selects_with_their_related_rows(make_portal):
    portal, _ = make_portal()
    conn, rows = stored_events(portal, 4)
    PbxEvent.objects.filter(pk=rows[1].pk).update(state=PbxEvent.State.PROCESSED)
    PbxEvent.objects.filter(pk=rows[2].pk).update(next_attempt_at=timezone.now() + timedelta(1))
    took = waiting_events().take([conn.pk, "received", timezone.now()], 10)
    orm = (
        PbxEvent.objects.filter(
            connection=conn, state="received", next_attempt_at__lte=timezone.now()
        )
        .select_related("connection__portal")
        .order_by("pk")
    )
    assert [concrete_values(r) for r in took] == [concrete_values(r) for r in orm]
    assert [r.pk for r in took] == [rows[0].pk, rows[3].pk]  # waiting, in id order
    first = took[0]
    assert concrete_values(first.connection) == concrete_values(conn)
    assert first.connection.credentials == {"api_key": "k"}
    assert first.connection.portal.get_deferred_fields() == {"refresh_token"}
    assert first.connection.portal.access_token == portal.access_token
    # The limit, and ids left out (rows a drain took already).
    assert [r.pk for r in waiting_events().take([conn.pk, "received", timezone.now()], 1)] == [
        rows[0].pk
    ]
    left = waiting_events().take([conn.pk, "received", timezone.now()], 10, {rows[0].pk})
    assert [r.pk for r in left] == [rows[3].pk]


@pytest.mark.django_db(transaction=True)
def test_waiting_rows_skip_a_row_another_connection_holds(make_portal):
    portal, _ = make_portal()
    conn, rows = stored_events(portal, 3)
    other = connections.create_connection("default")
    try:
        other.set_autocommit(False)
        with other.cursor() as cursor:  # another worker has taken the first row
            cursor.execute(
                "SELECT id FROM telephony_pbxevent WHERE id = %s FOR UPDATE", [rows[0].pk]
            )
        with transaction.atomic():
            took = waiting_events().take([conn.pk, "received", timezone.now()], 10)
        assert [r.pk for r in took] == [rows[1].pk, rows[2].pk]
        # Outside a transaction too (the drain's last look): the held row is still skipped.
        assert [r.pk for r in waiting_events().take([conn.pk, "received", timezone.now()], 1)] == [
            rows[1].pk
        ]
        other.rollback()
        took = waiting_events().take([conn.pk, "received", timezone.now()], 10)
        assert [r.pk for r in took] == [r.pk for r in rows]
    finally:
        other.close()


def test_only_required_foreign_keys_are_joined():
    # An event's call may be empty: joining it would drop the event (an inner join).
    with pytest.raises(ValueError, match="call may be empty"):
        prepared.WaitingRows(PbxEvent, ["connection_id"], "next_attempt_at", related=["call"])
