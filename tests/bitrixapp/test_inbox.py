"""The inbox every inbound request goes through: bounded retries ending in `failed` with the
error visible, rejected and ignored rows, redaction from parsed fields, the one sweeper, and
start-up errors for anything registered twice."""

import base64
import json
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from bitrixapp import events, inbox, outbox, tasks
from bitrixapp.models import BitrixEvent
from telephony import providers

pytestmark = pytest.mark.django_db


@pytest.fixture
def failing_handler():
    def handler(event: BitrixEvent) -> None:
        raise RuntimeError("the CRM said no")

    events.EVENT_HANDLERS["ONTESTFAIL"] = handler
    yield
    del events.EVENT_HANDLERS["ONTESTFAIL"]


def stored(portal, name: str = "ONTESTFAIL") -> BitrixEvent:
    return BitrixEvent.objects.create(
        portal=portal, source=name, body="{}", content_type="application/json"
    )


def test_a_failing_event_is_retried_with_backoff_then_failed_with_the_error_kept(
    make_portal, failing_handler, admin_client
):
    portal, _ = make_portal()
    event = stored(portal)
    box = inbox.inbox_of(BitrixEvent)
    delays = []
    for attempt in range(1, box.max_attempts + 1):
        before = timezone.now()
        inbox.process(BitrixEvent, event.pk)
        event.refresh_from_db()
        assert event.attempts == attempt and "the CRM said no" in event.error
        if attempt < box.max_attempts:
            assert event.state == BitrixEvent.State.RECEIVED
            delays.append((event.next_attempt_at - before).total_seconds())
    assert event.state == BitrixEvent.State.FAILED
    assert event.error.startswith(f"gave up after attempt {box.max_attempts}")
    assert delays == sorted(delays) and delays[0] >= box.backoff_s * 0.9  # growing backoff
    # Not re-queued any more, however old it gets; and the admin shows why it failed.
    BitrixEvent.objects.filter(pk=event.pk).update(
        next_attempt_at=timezone.now() - timedelta(hours=1)
    )
    assert tasks.sweep()["inbound"] == {}
    page = admin_client.get(f"/admin/bitrixapp/bitrixevent/{event.pk}/change/").content.decode()
    assert "the CRM said no" in page and "gave up after attempt" in page


def test_the_sweeper_requeues_only_rows_overdue_for_their_next_attempt(make_portal):
    portal, _ = make_portal()
    due = stored(portal, "ONCRMLEADADD")
    waiting = stored(portal, "ONCRMLEADADD")
    BitrixEvent.objects.filter(pk=due.pk).update(
        next_attempt_at=timezone.now() - timedelta(minutes=5)
    )
    BitrixEvent.objects.filter(pk=waiting.pk).update(
        next_attempt_at=timezone.now() + timedelta(minutes=5)
    )
    assert tasks.sweep()["inbound"] == {"bitrixapp.bitrixevent": 1}


def test_a_permanent_failure_ends_failed_at_once(make_portal):
    portal, _ = make_portal()

    def handler(event):
        raise inbox.Permanent("no PBX connection to place the call with")

    events.EVENT_HANDLERS["ONTESTPERMANENT"] = handler
    try:
        event = stored(portal, "ONTESTPERMANENT")
        assert inbox.process(BitrixEvent, event.pk) == BitrixEvent.State.FAILED
    finally:
        del events.EVENT_HANDLERS["ONTESTPERMANENT"]
    event.refresh_from_db()
    assert (event.attempts, event.error) == (1, "no PBX connection to place the call with")


def test_a_stored_body_that_no_longer_parses_is_rejected_not_retried(make_portal):
    portal, _ = make_portal()
    seen = []
    events.EVENT_HANDLERS["ONTESTPARSE"] = lambda e: seen.append(e.payload)
    try:
        event = BitrixEvent.objects.create(
            portal=portal, source="ONTESTPARSE", body="[1, 2", content_type="application/json"
        )
        assert inbox.process(BitrixEvent, event.pk) == BitrixEvent.State.REJECTED
    finally:
        del events.EVENT_HANDLERS["ONTESTPARSE"]
    assert seen == [] and BitrixEvent.objects.get(pk=event.pk).error


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"auth%5Baccess_token%5D=secret-1&auth%5Bmember_id%5D=m1&vpbx_api_key=secret-2", "form"),
        (
            b'{"auth": {"access_token": "secret-1", "member_id": "m1"}, '
            b'"vpbx_api_key": "secret-2"}',
            "json",
        ),
    ],
)
def test_redaction_masks_parsed_fields_whatever_their_encoding(body, content_type):
    kinds = {"form": "application/x-www-form-urlencoded", "json": "application/json"}
    kept = inbox.redact(body, kinds[content_type], ("auth[access_token]", "vpbx_api_key"))
    assert "secret-1" not in kept and "secret-2" not in kept and "m1" in kept
    # A lower-case percent-encoding of the field name is the same field.
    sneaky = b"vpbx%5fapi%5fkey=secret-3&json=%7b%7d"
    kept = inbox.redact(sneaky, kinds["form"], ("vpbx_api_key",))
    # Only the secret's value changes; every other byte is kept as sent (not re-encoded).
    assert kept == "vpbx%5fapi%5fkey=***&json=%7b%7d"


def test_registering_anything_twice_is_a_start_up_error():
    with pytest.raises(RuntimeError, match="registered twice"):
        inbox.register(BitrixEvent, events.handle)
    with pytest.raises(RuntimeError, match="registered already"):
        events.event_handler("ONEXTERNALCALLSTART")(lambda e: None)
    with pytest.raises(RuntimeError, match="registered twice"):
        outbox.result_handler("telephony.registered")(lambda c: None)
    with pytest.raises(RuntimeError, match="registered twice"):
        outbox.before_send("telephony.externalCall.register")(lambda outgoing: [])
    with pytest.raises(RuntimeError, match="registered twice"):
        providers.register("mango", "telephony.providers.mango:Mango")


def test_install_binds_exactly_the_events_some_app_handles():
    assert events.events_to_bind() == (
        "ONEXTERNALCALLSTART",
        "ONEXTERNALCALLBACKSTART",
        "ONAPPUNINSTALL",
    )


# --- lanes: one drain task per portal or connection, not one task per row -------------------


@pytest.fixture
def recorded_handler():
    seen: list[int] = []

    def handler(event: BitrixEvent) -> str:
        seen.append(event.pk)
        return BitrixEvent.State.PROCESSED

    events.EVENT_HANDLERS["ONTESTLANE"] = handler
    yield seen
    del events.EVENT_HANDLERS["ONTESTLANE"]


@pytest.fixture(autouse=True)
def _empty_queue() -> None:
    """Portal ids repeat from one test session to the next: drain tasks an earlier session
    left in the queue would be counted as this test's."""
    redis.Redis.from_url(settings.REDIS_URL).delete(inbox.inbox_of(BitrixEvent).queue)


def drains(portal) -> list[tuple]:
    """The drain tasks for the portal's lane waiting in the real broker (Redis; nothing
    consumes the queue in these tests), oldest first, as (inbox label, lane)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    found = []
    for raw in reversed(client.lrange(inbox.inbox_of(BitrixEvent).queue, 0, -1)):
        message = json.loads(raw)
        if message["headers"]["task"] != inbox.DRAIN_TASK:
            continue
        args = json.loads(base64.b64decode(message["body"]))[0]
        if args[1] == portal.pk:
            found.append(tuple(args))
    return found


def store(portal, name: str = "ONTESTLANE") -> BitrixEvent:
    return inbox.store(BitrixEvent, portal=portal, source=name, body="{}", content_type="x")


def test_a_burst_queues_one_drain_per_lane_which_processes_every_row_in_order(
    make_portal, recorded_handler, django_capture_on_commit_callbacks
):
    (a, _), (b, _) = make_portal(), make_portal()
    with django_capture_on_commit_callbacks(execute=True):
        rows = [store(a) for _ in range(5)] + [store(b)] + [store(a) for _ in range(3)]
    label = "bitrixapp.bitrixevent"
    assert drains(a) == [(label, a.pk)] and drains(b) == [(label, b.pk)]  # two tasks, not nine

    assert inbox.drain(label, a.pk) == 8
    assert recorded_handler == [r.pk for r in rows if r.portal_id == a.pk]
    with django_capture_on_commit_callbacks(execute=True):
        store(a)
    assert len(drains(a)) == 2  # the lane's flag went with its drain: a new row kicks again


def test_a_row_stored_while_its_lane_drains_is_picked_up_by_that_drain(
    make_portal, recorded_handler, django_capture_on_commit_callbacks
):
    portal, _ = make_portal()
    late: list[BitrixEvent] = []

    def handler(event: BitrixEvent) -> str:
        recorded_handler.append(event.pk)
        if not late:  # a webhook answered while the first row is processed
            with django_capture_on_commit_callbacks(execute=True):
                late.append(store(portal))
        return BitrixEvent.State.PROCESSED

    events.EVENT_HANDLERS["ONTESTLANE"] = handler
    first = stored(portal, "ONTESTLANE")
    assert inbox.drain("bitrixapp.bitrixevent", portal.pk) == 2
    assert recorded_handler == [first.pk, late[0].pk]
    assert drains(portal) == []  # the running drain held the flag: no task for the late row


def test_a_drain_stops_after_its_slice_and_queues_its_continuation(make_portal, recorded_handler):
    portal, _ = make_portal()
    rows = [stored(portal, "ONTESTLANE") for _ in range(3)]
    assert inbox.drain("bitrixapp.bitrixevent", portal.pk, slice_s=0) == 0
    assert drains(portal) == [("bitrixapp.bitrixevent", portal.pk)]
    assert inbox.drain("bitrixapp.bitrixevent", portal.pk) == 3
    assert recorded_handler == [r.pk for r in rows]


def test_a_lost_drain_task_is_made_good_by_the_sweeper(
    make_portal, django_capture_on_commit_callbacks
):
    portal, _ = make_portal()
    with django_capture_on_commit_callbacks(execute=True):
        row = store(portal, "ONCRMLEADADD")  # its drain is queued and holds the lane's flag...
    BitrixEvent.objects.filter(pk=row.pk).update(
        next_attempt_at=timezone.now() - timedelta(minutes=5)
    )  # ...but never runs: the row is overdue
    assert tasks.sweep()["inbound"] == {"bitrixapp.bitrixevent": 1}
    assert len(drains(portal)) == 2  # the sweeper queued one despite the flag
