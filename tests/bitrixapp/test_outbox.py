"""The dispatcher against the live Bitrix24 fake: single vs batch, order, references,
token refresh, and every class of error. In-process dispatch; real HTTP, DB and Redis."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from bitrixapp import outbox, ratelimit, rest
from bitrixapp.models import B24Command, Portal
from tests.conftest import drain

pytestmark = pytest.mark.django_db

State = B24Command.State


def executed(fake):
    """Methods Bitrix24 ran successfully, in order (batch sub-calls, not the batch itself)."""
    return [m for m in fake.methods() if m != "batch"]


def states(*commands):
    return [B24Command.objects.get(pk=c.pk).state for c in commands]


def test_one_command_when_idle_is_one_plain_request(fake, make_portal):
    portal, remote = make_portal()
    command = outbox.enqueue(portal, "profile")
    drain(portal)
    assert [m for _, m, _ in fake.http_requests] == ["profile"]
    command.refresh_from_db()
    assert command.state == State.DONE
    assert command.result["ADMIN"] is True
    assert command.http_status == 200 and command.attempts == 1 and not command.batch_id
    assert command.created_at <= command.sent_at <= command.finished_at


def test_an_idle_command_costs_the_dispatcher_one_query_and_one_decrypt_before_its_claim(
    fake, make_portal, monkeypatch
):
    """The dispatcher's start (issue 11): the portal and whether it has a command ready in
    one query, with only the access token decrypted (the request carries nothing else)."""
    from django.test.utils import CaptureQueriesContext

    from bitrixapp import crypto

    portal, remote = make_portal()
    command = outbox.enqueue(portal, "profile")
    decrypted = []
    real = crypto.decrypt
    monkeypatch.setattr(crypto, "decrypt", lambda token: decrypted.append(1) or real(token))
    claims = []
    real_claim = outbox.claim
    monkeypatch.setattr(
        outbox,
        "claim",
        lambda *a, **k: claims.append((len(queries), len(decrypted))) or real_claim(*a, **k),
    )
    with CaptureQueriesContext(connection) as queries:
        outbox.dispatch(portal.pk)
    statements, decrypts = claims[0]
    assert statements == 1, [q["sql"][:60] for q in queries][:statements]
    assert 'FROM "bitrixapp_portal"' in queries[0]["sql"] and "EXISTS" in queries[0]["sql"]
    assert decrypts == 1  # the access token
    command.refresh_from_db()
    assert command.state == State.DONE


def test_an_idle_run_ends_with_one_look_after_its_flag_is_cleared(fake, make_portal):
    """After the send: the portal again (nothing ready), then one statement that both finds
    a command committed after that look and times the run for one waiting on a backoff."""
    from django.test.utils import CaptureQueriesContext

    portal, remote = make_portal()
    outbox.enqueue(portal, "profile")
    with CaptureQueriesContext(connection) as queries:
        outbox.dispatch(portal.pk)
    sql = [q["sql"] for q in queries]
    # In the test's transaction the settle's commit is a savepoint's release.
    settled = max(i for i, s in enumerate(sql) if s.startswith(("COMMIT", "RELEASE")))
    after = sql[settled + 1 :]
    assert len(after) == 2, after
    assert 'FROM "bitrixapp_portal"' in after[0]
    assert after[1].startswith('SELECT "bitrixapp_b24command"."next_attempt_at"')


@pytest.mark.parametrize(
    ("due_in_s", "countdown"),
    [(0, (0, 0)), (30, (29, 30))],
    ids=["committed after the last look: kicked now", "on a backoff: a timed run"],
)
def test_the_end_of_a_run_kicks_for_what_is_left(make_portal, monkeypatch, due_in_s, countdown):
    """A command the run did not see (committed after its last look, while the flag still
    kept its own kick away) is sent by a new run at once; one on a backoff by a timed run."""
    portal, _ = make_portal()
    command = outbox.enqueue(portal, "profile")
    due = timezone.now() + timedelta(seconds=due_in_s) - timedelta(milliseconds=1)
    B24Command.objects.filter(pk=command.pk).update(next_attempt_at=due)
    kicks = []
    monkeypatch.setattr(
        outbox, "kick", lambda portal_id, countdown=0: kicks.append((portal_id, countdown))
    )
    outbox._end_run(portal.pk, portal)
    [(portal_id, seconds)] = kicks
    assert portal_id == portal.pk and countdown[0] <= seconds <= countdown[1]


def test_a_claim_stores_the_send_counts_the_attempt_and_keeps_the_first_send_time(make_portal):
    portal, _ = make_portal()
    fresh = outbox.enqueue(portal, "profile")
    earlier = timezone.now() - timedelta(seconds=30)
    retried = outbox.enqueue(portal, "user.current")
    B24Command.objects.filter(pk=retried.pk).update(attempts=2, first_sent_at=earlier)
    claimed = outbox.claim(portal)
    assert {c.pk for c in claimed} == {fresh.pk, retried.pk}
    stored = {c.pk: c for c in B24Command.objects.filter(pk__in=[fresh.pk, retried.pk])}
    for command in claimed:  # what the dispatcher holds is what the table says
        row = stored[command.pk]
        assert row.state == State.SENDING == command.state
        assert row.sent_at == command.sent_at and row.lease_until == row.sent_at + outbox.LEASE
        assert row.attempts == command.attempts
    assert (stored[fresh.pk].attempts, stored[fresh.pk].first_sent_at) == (
        1,
        stored[fresh.pk].sent_at,
    )
    assert (stored[retried.pk].attempts, stored[retried.pk].first_sent_at) == (3, earlier)


def test_many_commands_in_one_transaction_register_one_kick(
    fake, make_portal, django_capture_on_commit_callbacks
):
    portal, remote = make_portal()
    other, _ = make_portal()
    with django_capture_on_commit_callbacks() as callbacks:
        for i in range(100):
            outbox.enqueue(portal, "profile", {"n": i})
        outbox.enqueue(other, "profile")
    assert len(callbacks) == 2  # one per portal, not one per command


def test_commands_enqueued_together_are_one_insert_with_ids_in_order_and_working_refs(
    fake, make_portal
):
    portal, remote = make_portal()
    remote.add_user(12, NAME="Anna", UF_PHONE_INNER="101")
    before = outbox.enqueue(portal, "profile", owner_key="call:1")
    with (
        transaction.atomic(),
        CaptureQueriesContext(connection) as captured,
        outbox.inserted_together(2),
    ):
        register = outbox.enqueue(
            portal,
            "telephony.externalCall.register",
            {"USER_ID": 12, "PHONE_NUMBER": "+74951234567", "TYPE": 2, "EXTERNAL_CALL_ID": "c"},
            owner_key="call:1",
        )
        with outbox.inserted_together(1):  # joins the outer block
            show = outbox.enqueue(
                portal,
                "telephony.externalCall.show",
                {"CALL_ID": outbox.ref(register, "CALL_ID"), "USER_ID": [12]},
                depends_on=register,
            )
        finish = outbox.enqueue(  # one more than expected: a second draw of ids
            portal,
            "telephony.externalCall.finish",
            {"CALL_ID": outbox.ref(register, "CALL_ID"), "USER_ID": 12, "DURATION": 5},
            depends_on=show,
        )
        assert not B24Command.objects.filter(pk=register.pk).exists()  # not yet inserted
    sql = [q["sql"] for q in captured]
    assert sum(s.startswith("SELECT nextval") for s in sql) == 2
    assert sum(s.startswith('INSERT INTO "bitrixapp_b24command"') for s in sql) == 1
    assert before.pk < register.pk < show.pk < finish.pk  # the owner's order is the id order
    drain(portal)
    assert executed(fake) == [
        "profile",
        "telephony.externalCall.register",
        "telephony.externalCall.show",
        "telephony.externalCall.finish",
    ]
    call_id = B24Command.objects.get(pk=register.pk).result["CALL_ID"]
    assert fake.calls_of("telephony.externalCall.finish")[0].params["CALL_ID"] == call_id


def test_a_block_that_fails_inserts_nothing_and_the_next_enqueue_inserts_at_once(make_portal):
    portal, _ = make_portal()
    with pytest.raises(RuntimeError), transaction.atomic(), outbox.inserted_together(5):
        outbox.enqueue(portal, "profile")
        raise RuntimeError("the batch broke")
    assert not B24Command.objects.exists()
    command = outbox.enqueue(portal, "profile")
    assert B24Command.objects.filter(pk=command.pk).exists()


def test_a_backlog_goes_out_as_one_batch(fake, make_portal):
    portal, remote = make_portal()
    commands = [outbox.enqueue(portal, "profile", owner_key=f"o{i}") for i in range(10)]
    drain(portal)
    assert [m for _, m, _ in fake.http_requests] == ["batch"]
    assert all(c.via_batch for c in fake.calls_of("profile"))
    assert states(*commands) == [State.DONE] * 10
    assert len({B24Command.objects.get(pk=c.pk).batch_id for c in commands}) == 1


def test_more_than_50_ready_commands_are_split_into_batches_of_50(fake, make_portal):
    portal, remote = make_portal()
    for _ in range(120):
        outbox.enqueue(portal, "profile")
    drain(portal)
    assert [m for _, m, _ in fake.http_requests] == ["batch", "batch", "batch"]
    assert len(fake.calls_of("profile")) == 120


def test_results_flow_into_later_commands_inside_a_batch(fake, make_portal):
    portal, remote = make_portal()
    remote.add_user(12, NAME="Anna", UF_PHONE_INNER="101")
    register = outbox.enqueue(
        portal,
        "telephony.externalCall.register",
        {"USER_ID": 12, "PHONE_NUMBER": "+74951234567", "TYPE": 2, "EXTERNAL_CALL_ID": "c1"},
        owner_key="call:1",
    )
    show = outbox.enqueue(
        portal,
        "telephony.externalCall.show",
        {"CALL_ID": outbox.ref(register, "CALL_ID"), "USER_ID": [12]},
        depends_on=register,
    )
    finish = outbox.enqueue(
        portal,
        "telephony.externalCall.finish",
        {"CALL_ID": outbox.ref(register, "CALL_ID"), "USER_ID": 12, "DURATION": 5},
        depends_on=show,
    )
    drain(portal)
    assert executed(fake) == [
        "telephony.externalCall.register",
        "telephony.externalCall.show",
        "telephony.externalCall.finish",
    ]
    call_id = B24Command.objects.get(pk=register.pk).result["CALL_ID"]
    assert fake.calls_of("telephony.externalCall.show")[0].params["CALL_ID"] == call_id
    assert fake.calls_of("telephony.externalCall.finish")[0].params["CALL_ID"] == call_id
    assert states(register, show, finish) == [State.DONE] * 3


def test_a_reference_to_an_earlier_finished_command_is_sent_as_its_value(fake, make_portal):
    portal, remote = make_portal()
    remote.add_user(12, NAME="Anna")
    register = outbox.enqueue(
        portal,
        "telephony.externalCall.register",
        {"USER_ID": 12, "PHONE_NUMBER": "+74951234567", "TYPE": 2},
        owner_key="call:1",
    )
    drain(portal)
    hide = outbox.enqueue(
        portal,
        "telephony.externalCall.hide",
        {"CALL_ID": outbox.ref(register, "CALL_ID"), "USER_ID": 12},
        depends_on=register,
    )
    drain(portal)
    call_id = B24Command.objects.get(pk=register.pk).result["CALL_ID"]
    hides = fake.calls_of("telephony.externalCall.hide")
    assert [(c.via_batch, c.params["CALL_ID"]) for c in hides] == [(False, call_id)]
    assert states(hide) == [State.DONE]


def test_one_owner_waits_behind_its_failed_command_while_others_go(fake, make_portal):
    portal, remote = make_portal()
    fake.fail_next("profile", error="INTERNAL_SERVER_ERROR", status=500)
    first = outbox.enqueue(portal, "profile", owner_key="call:A")
    second = outbox.enqueue(portal, "app.info", owner_key="call:A")
    other = outbox.enqueue(portal, "app.info", owner_key="call:B")
    outbox.dispatch(portal.pk, slice_s=5)
    assert states(first, second, other) == [State.PENDING, State.PENDING, State.DONE]
    assert B24Command.objects.get(pk=first.pk).error_code == "INTERNAL_SERVER_ERROR"
    B24Command.objects.filter(pk=first.pk).update(next_attempt_at=timezone.now())
    drain(portal)
    assert states(first, second) == [State.DONE, State.DONE]
    a_calls = [c.method for c in fake.calls if c.method in ("profile", "app.info")]
    assert a_calls == ["profile", "app.info", "profile", "app.info"]


def test_expired_token_is_refreshed_once_persisted_and_the_call_retried(fake, make_portal):
    portal, remote = make_portal()
    old_refresh = remote.refresh_token
    remote.expire_access_token()
    command = outbox.enqueue(portal, "profile")
    drain(portal)
    assert states(command) == [State.DONE]
    assert len(fake.oauth_requests) == 1
    assert fake.oauth_requests[0]["refresh_token"] == old_refresh
    stored = Portal.objects.get(pk=portal.pk)
    assert stored.access_token == remote.access_token
    assert stored.refresh_token == remote.refresh_token != old_refresh
    assert B24Command.objects.get(pk=command.pk).attempts == 1  # the refresh is not a retry


@pytest.mark.django_db(transaction=True)
def test_concurrent_refreshes_of_one_portal_make_one_oauth_request(fake, make_portal):
    portal, remote = make_portal()
    fake.oauth_delay = 0.5
    stale = portal.access_token
    results = []

    def refresh():
        try:
            results.append(rest.refresh_tokens(portal.pk, stale).access_token)
        finally:
            connection.close()

    threads = [threading.Thread(target=refresh) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(fake.oauth_requests) == 1
    assert results == [remote.access_token] * 4


def test_invalid_grant_parks_the_portal_and_keeps_its_commands(fake, make_portal):
    portal, remote = make_portal()
    remote.expire_access_token()
    remote.revoke_refresh_token()
    commands = [outbox.enqueue(portal, "profile", owner_key=f"o{i}") for i in range(3)]
    outbox.dispatch(portal.pk, slice_s=5)
    portal.refresh_from_db()
    assert portal.status == Portal.Status.NEEDS_REAUTH
    assert "invalid_grant" in portal.last_error
    assert states(*commands) == [State.PENDING] * 3
    assert all(B24Command.objects.get(pk=c.pk).attempts == 0 for c in commands)
    requests_before = len(fake.http_requests)
    outbox.dispatch(portal.pk, slice_s=5)  # a parked portal sends nothing
    assert len(fake.http_requests) == requests_before


def test_rate_limit_refusal_waits_and_is_not_counted(fake, make_portal):
    portal, remote = make_portal()
    fake.fail_next("profile", error="QUERY_LIMIT_EXCEEDED", status=503, description="Too many")
    command = outbox.enqueue(portal, "profile")
    outbox.dispatch(portal.pk, slice_s=5)
    row = B24Command.objects.get(pk=command.pk)
    assert row.state == State.PENDING and row.attempts == 0
    assert row.next_attempt_at > timezone.now()
    B24Command.objects.filter(pk=command.pk).update(next_attempt_at=timezone.now())
    drain(portal)
    assert states(command) == [State.DONE]


def test_operating_limit_pauses_only_that_method_until_reset(fake, make_portal):
    portal, remote = make_portal()
    fake.fail_next(
        "crm.item.list",
        error="OPERATION_TIME_LIMIT",
        status=429,
        description="Method is blocked due to operation time limit.",
    )
    slow = outbox.enqueue(portal, "crm.item.list", {"entityTypeId": 3}, owner_key="a")
    drain(portal)
    other = outbox.enqueue(portal, "profile", owner_key="b")
    again = outbox.enqueue(portal, "crm.item.list", {"entityTypeId": 3}, owner_key="c")
    outbox.dispatch(portal.pk, slice_s=5)
    portal.refresh_from_db()
    until = portal.paused_methods["crm.item.list"]
    assert until > time.time() + 60
    assert states(slow, other, again) == [State.PENDING, State.DONE, State.PENDING]
    assert B24Command.objects.get(pk=slow.pk).attempts == 0


def test_operating_budget_near_its_limit_pauses_before_bitrix_refuses(fake, make_portal, settings):
    portal, remote = make_portal()
    settings.BITRIX24_OPERATING_LIMIT_S = 10.0
    fake.operating_cost["profile"] = 9.5
    outbox.enqueue(portal, "profile")
    drain(portal)
    portal.refresh_from_db()
    assert "profile" in portal.active_pauses()


def test_transient_errors_back_off_then_give_up_after_the_horizon(fake, make_portal, settings):
    portal, remote = make_portal()
    fake.fail_next("profile", error="INTERNAL_SERVER_ERROR", status=500, times=3)
    command = outbox.enqueue(portal, "profile")
    outbox.dispatch(portal.pk, slice_s=5)
    first = B24Command.objects.get(pk=command.pk)
    assert first.state == State.PENDING and first.attempts == 1
    assert first.next_attempt_at > timezone.now() + timedelta(seconds=1)
    settings.BITRIX24_RETRY_HORIZON_S = 0
    B24Command.objects.filter(pk=command.pk).update(
        next_attempt_at=timezone.now(), first_sent_at=timezone.now() - timedelta(seconds=5)
    )
    outbox.dispatch(portal.pk, slice_s=5)
    final = B24Command.objects.get(pk=command.pk)
    assert final.state == State.FAILED
    assert "gave up after 2 attempts" in final.error_description


def test_permanent_error_is_recorded_and_reported_to_the_handler(fake, make_portal):
    portal, remote = make_portal()
    seen = []
    outbox.RESULT_HANDLERS["test.seen"] = lambda c: seen.append((c.state, c.error_code))
    try:
        command = outbox.enqueue(
            portal,
            "telephony.externalCall.finish",
            {"CALL_ID": "externalCall.nope", "USER_ID": 1},
            handler="test.seen",
        )
        drain(portal)
    finally:
        del outbox.RESULT_HANDLERS["test.seen"]
    row = B24Command.objects.get(pk=command.pk)
    assert row.state == State.FAILED and row.error_code == "ERROR_CORE"
    assert "Call is not found" in row.error_description
    assert seen == [(State.FAILED, "ERROR_CORE")]


def test_batch_sub_errors_are_per_command_and_dependents_wait(fake, make_portal):
    portal, remote = make_portal()
    bad = outbox.enqueue(
        portal,
        "telephony.externalCall.register",
        {"USER_ID": 1, "PHONE_NUMBER": "+7495", "TYPE": 9},
        owner_key="call:1",
    )
    dependent = outbox.enqueue(
        portal,
        "telephony.externalCall.show",
        {"CALL_ID": outbox.ref(bad, "CALL_ID"), "USER_ID": 1},
        depends_on=bad,
    )
    fine = outbox.enqueue(portal, "profile", owner_key="x")
    drain(portal)
    assert fake.http_requests[0][1] == "batch"
    bad_row = B24Command.objects.get(pk=bad.pk)
    assert (bad_row.state, bad_row.error_code) == (State.FAILED, "ERROR_CORE")
    assert "Unknown TYPE" in bad_row.error_description
    dep_row = B24Command.objects.get(pk=dependent.pk)
    assert (dep_row.state, dep_row.error_code) == (State.FAILED, "DEPENDENCY_FAILED")
    assert states(fine) == [State.DONE]


def test_bitrix_down_then_back_commands_go_out_in_order_exactly_once(fake, make_portal):
    portal, remote = make_portal()
    fake.outage("close")
    commands = [outbox.enqueue(portal, "profile", {"n": i}, owner_key="call:1") for i in range(3)]
    outbox.dispatch(portal.pk, slice_s=5)
    assert states(*commands)[0] == State.PENDING
    assert B24Command.objects.get(pk=commands[0].pk).error_code == "NETWORK_ERROR"
    fake.outage("500")
    B24Command.objects.update(next_attempt_at=timezone.now())
    outbox.dispatch(portal.pk, slice_s=5)
    fake.restore()
    B24Command.objects.update(next_attempt_at=timezone.now())
    drain(portal)
    assert states(*commands) == [State.DONE] * 3
    assert [c.params["n"] for c in fake.calls_of("profile")] == ["0", "1", "2"]


def test_slow_answers_are_waited_for_not_resent(fake, make_portal):
    portal, remote = make_portal()
    fake.method_delay["profile"] = 1.5
    command = outbox.enqueue(portal, "profile")
    drain(portal)
    assert states(command) == [State.DONE]
    assert len(fake.calls_of("profile")) == 1
    assert B24Command.objects.get(pk=command.pk).duration_ms >= 1500


def test_enterprise_plan_is_detected_from_app_info(fake, make_portal):
    portal, remote = make_portal(plan="enterprise")
    outbox.enqueue(portal, "app.info", handler="bitrixapp.app_info")
    drain(portal)
    assert Portal.objects.get(pk=portal.pk).plan == Portal.Plan.ENTERPRISE


def test_plan_override_wins_over_detection(fake, make_portal):
    portal, remote = make_portal(plan="enterprise", plan_override=Portal.Plan.STANDARD)
    outbox.enqueue(portal, "app.info", handler="bitrixapp.app_info")
    drain(portal)
    portal.refresh_from_db()
    assert portal.detected_plan == Portal.Plan.ENTERPRISE
    assert portal.plan == Portal.Plan.STANDARD


def test_expired_leases_return_to_the_queue(fake, make_portal):
    portal, remote = make_portal()
    command = outbox.enqueue(portal, "profile")
    claimed = outbox.claim(portal)
    assert [c.pk for c in claimed] == [command.pk]
    assert outbox.release_expired_leases() == 0
    B24Command.objects.filter(pk=command.pk).update(lease_until=timezone.now() - timedelta(1))
    assert outbox.release_expired_leases() == 1
    drain(portal)
    assert states(command) == [State.DONE]


def test_uninstalled_portal_sends_nothing(fake, make_portal):
    portal, remote = make_portal(status=Portal.Status.UNINSTALLED)
    outbox.enqueue(portal, "profile")
    outbox.dispatch(portal.pk, slice_s=2)
    assert fake.http_requests == []


def test_wakeup_is_timed_for_the_head_of_a_lane_not_a_blocked_follower(fake, make_portal):
    from django.core.cache import cache

    portal, remote = make_portal()
    head = outbox.enqueue(portal, "profile", owner_key="call:1")
    follower = outbox.enqueue(portal, "profile", owner_key="call:1")
    now = timezone.now()
    B24Command.objects.filter(pk=head.pk).update(next_attempt_at=now + timedelta(seconds=30))
    B24Command.objects.filter(pk=follower.pk).update(next_attempt_at=now + timedelta(seconds=3))
    outbox.dispatch(portal.pk, slice_s=2)
    assert abs(cache.get(f"b24:wake:{portal.pk}") - (now.timestamp() + 30)) < 2
    # A later wake-up request does not replace the earlier one on its way.
    outbox.kick(portal.pk, countdown=60)
    assert abs(cache.get(f"b24:wake:{portal.pk}") - (now.timestamp() + 30)) < 2


@pytest.mark.django_db(transaction=True)
def test_settling_does_not_block_a_command_that_depends_on_the_one_being_settled(make_portal):
    """The dispatcher's settle lock (NO KEY UPDATE) lets a call event insert a command that
    depends on a command being settled; with FOR UPDATE the insert's foreign-key check waited,
    which deadlocked with the result handler waiting for the event's call lock."""
    portal, _ = make_portal()
    now = timezone.now()
    register = B24Command.objects.create(
        portal=portal, method="profile", owner_key="call:1", state="sending", sent_at=now
    )
    held, release = threading.Event(), threading.Event()

    def dispatcher() -> None:
        try:
            with transaction.atomic():
                assert outbox._lock_ours([register]) == {register.pk}
                held.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=dispatcher)
    thread.start()
    try:
        assert held.wait(10)
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '2s'")
            B24Command.objects.create(
                portal=portal, method="profile", owner_key="call:1", depends_on=register
            )
    finally:
        release.set()
        thread.join()


def test_an_unreachable_bitrix24_is_tried_less_and_less_often_until_it_answers(fake, make_portal):
    """Requests failing as a whole (network, 5xx) several times in a row pause the portal's
    sending for a growing while, so an outage does not spend the request budget the backlog
    needs once Bitrix24 is back; the first answer ends the pause."""
    portal, remote = make_portal()
    fake.outage("500")
    command = outbox.enqueue(portal, "profile")
    for _ in range(outbox.OUTAGE_AFTER_FAILURES):
        B24Command.objects.update(next_attempt_at=timezone.now())
        outbox.dispatch(portal.pk, slice_s=5)
    assert 0.5 < ratelimit.take(portal.member_id, portal.plan) <= 1.0  # held, nothing taken
    tried = len(fake.rejected)
    B24Command.objects.update(next_attempt_at=timezone.now())
    outbox.dispatch(portal.pk, slice_s=5)  # due, but the portal waits out its pause
    assert len(fake.rejected) == tried and states(command) == [State.PENDING]

    fake.restore()
    drain(portal)  # drain keeps calling the dispatcher: the pause ends within a second
    assert states(command) == [State.DONE]
    assert ratelimit.take(portal.member_id, portal.plan) == 0


@pytest.mark.parametrize(
    ("flagged_s_ago", "sets_its_flag"),
    [
        (None, True),  # a timed run: no kick set the flag
        (0.0, False),  # queued by a kick moments ago: the kick's flag outlives this run
        (outbox.KICK_FLAG_S, True),  # queued long ago: the kick's flag is about to expire
    ],
)
def test_a_dispatcher_sets_its_flag_unless_a_kick_just_did(
    fake, make_portal, monkeypatch, flagged_s_ago, sets_its_flag
):
    """Every run must hold the flag for its whole slice; a fresh kick's flag already does,
    and setting it again was a Redis round trip on the path of an idle command."""
    from django.core.cache import cache

    portal, _ = make_portal()
    outbox.enqueue(portal, "profile")
    flag, set_keys = outbox._kick_key(portal.pk), []
    real_set = cache.set
    monkeypatch.setattr(
        cache, "set", lambda key, *a, **k: set_keys.append(key) or real_set(key, *a, **k)
    )
    flagged_at = None if flagged_s_ago is None else time.time() - flagged_s_ago
    outbox.dispatch(portal.pk, slice_s=2, flagged_at=flagged_at)
    assert (flag in set_keys) is sets_its_flag
    assert executed(fake) == ["profile"]
