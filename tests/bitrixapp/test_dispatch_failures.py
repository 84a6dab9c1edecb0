"""The dispatcher when something goes wrong inside the app: every crash is classified per
command, nothing is left `sending`, one bad command never holds up the others; portals that
Bitrix24 refuses as a whole are parked and their commands expire after the retry horizon.
In-process dispatch; real HTTP to the live Bitrix24 fake, real PostgreSQL and Redis."""

from datetime import timedelta

import pytest
from django.db import DataError, InterfaceError, OperationalError
from django.utils import timezone

from bitrixapp import outbox, tasks
from bitrixapp.models import B24Command, Portal
from bitrixapp.rest import Outcome
from tests.conftest import drain

pytestmark = pytest.mark.django_db

State = B24Command.State
NUL_NAME = "Anna\x00"  # PostgreSQL's jsonb refuses \u0000: storing this result raises DataError


def row(command: B24Command) -> B24Command:
    return B24Command.objects.get(pk=command.pk)


def nothing_sending() -> bool:
    return not B24Command.objects.filter(state=State.SENDING).exists()


@pytest.fixture
def nul_method(fake):
    """A method whose answer the app cannot store (Bitrix24 ran it and answered fine)."""
    fake.set_handler("user.nul", lambda portal, params: {"NAME": NUL_NAME})
    yield "user.nul"
    fake.set_handler("user.nul", None)


def test_an_answer_that_cannot_be_stored_fails_that_command_alone(fake, make_portal, nul_method):
    portal, remote = make_portal()
    command = outbox.enqueue(portal, nul_method)
    drain(portal)
    failed = row(command)
    assert failed.state == State.FAILED and failed.error_code == outbox.APP_EXCEPTION
    assert "recording the answer of Bitrix24: DataError" in failed.error_description
    assert len(fake.calls_of(nul_method)) == 1  # failed for good: not sent again
    assert nothing_sending()


def test_inside_a_batch_only_the_unstorable_answer_fails(fake, make_portal, nul_method):
    portal, remote = make_portal()
    before = outbox.enqueue(portal, "profile", owner_key="a")
    bad = outbox.enqueue(portal, nul_method, owner_key="b")
    after = outbox.enqueue(portal, "app.info", owner_key="c")
    drain(portal)
    assert [m for _, m, _ in fake.http_requests] == ["batch"]
    assert [row(c).state for c in (before, bad, after)] == [State.DONE, State.FAILED, State.DONE]
    assert row(before).result["ADMIN"] is True  # its answer was kept
    assert "DataError" in row(bad).error_description
    assert nothing_sending()


def test_a_resolver_bug_fails_that_command_and_the_others_go(fake, make_portal):
    portal, remote = make_portal()
    first = outbox.enqueue(portal, "profile", owner_key="a")
    broken = outbox.enqueue(portal, "profile", {"X": {"$ref": "not-an-id"}}, owner_key="b")
    last = outbox.enqueue(portal, "app.info", owner_key="c")
    drain(portal)
    assert [row(c).state for c in (first, broken, last)] == [State.DONE, State.FAILED, State.DONE]
    assert row(broken).error_code == outbox.APP_EXCEPTION
    assert "preparing the request: ValueError" in row(broken).error_description
    assert len(fake.calls_of("profile")) == 1  # the broken one never left
    assert nothing_sending()


def test_a_reference_to_a_deleted_command_fails_with_the_reason(fake, make_portal):
    portal, remote = make_portal()
    gone = outbox.enqueue(portal, "profile")
    drain(portal)
    orphan = outbox.enqueue(portal, "profile", {"X": outbox.ref(gone, "ID")})
    B24Command.objects.filter(pk=gone.pk).delete()  # e.g. removed in the admin
    drain(portal)
    assert row(orphan).state == State.FAILED
    assert row(orphan).error_code == "DEPENDENCY_RESULT_MISSING"
    assert "no longer exists" in row(orphan).error_description
    assert nothing_sending()


def test_a_crash_while_sending_is_classified_and_the_next_command_goes(
    fake, make_portal, monkeypatch, settings
):
    # Bitrix24 answers a `time` object the client cannot read: the crash happens outside
    # settling, after the request reached Bitrix24, so the command fails (no resend).
    settings.BITRIX24_BATCH_MAX = 1
    real_time_object = fake._time_object
    answers = iter([{"operating_reset_at": "soon", "operating": "?"}])
    monkeypatch.setattr(
        fake, "_time_object", lambda *a: next(answers, None) or real_time_object(*a)
    )
    portal, remote = make_portal()
    crashed = outbox.enqueue(portal, "profile", owner_key="a")
    fine = outbox.enqueue(portal, "profile", owner_key="b")
    drain(portal)
    assert [row(c).state for c in (crashed, fine)] == [State.FAILED, State.DONE]
    assert row(crashed).error_code == outbox.APP_EXCEPTION
    assert "may have reached Bitrix24" in row(crashed).error_description
    assert "ValueError" in row(crashed).error_description
    assert nothing_sending()


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (OperationalError("server closed the connection"), Outcome.TRANSIENT),
        (InterfaceError("connection already closed"), Outcome.TRANSIENT),
        (ConnectionResetError(), Outcome.TRANSIENT),
        (DataError("unsupported Unicode escape sequence"), Outcome.PERMANENT),
        (KeyError("CALL_ID"), Outcome.PERMANENT),
    ],
)
def test_infrastructure_errors_are_retried_bugs_are_not(exc, outcome):
    assert outbox._outcome_of(exc) is outcome


def test_a_transient_crash_is_retried_with_backoff(fake, make_portal, monkeypatch):
    # A database hiccup while recording the answer (the bulk record, then the command's own
    # record it falls back to): the command is retried later, counted.
    portal, remote = make_portal()
    command = outbox.enqueue(portal, "profile")
    real_settle, real_bulk = outbox.settle, outbox.bulk.bulk_update
    hiccups = iter([OperationalError("server closed the connection unexpectedly")] * 2)

    def flaky(real):
        def call(*args, **kwargs):
            if real is real_settle or args[1] == outbox.DONE_FIELDS:
                exc = next(hiccups, None)
                if exc is not None:
                    raise exc
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(outbox, "settle", flaky(real_settle))
    monkeypatch.setattr(outbox.bulk, "bulk_update", flaky(real_bulk))
    outbox.dispatch(portal.pk, slice_s=5)
    waiting = row(command)
    assert waiting.state == State.PENDING and waiting.error_code == outbox.APP_EXCEPTION
    assert waiting.attempts == 1 and waiting.next_attempt_at > timezone.now()
    B24Command.objects.filter(pk=command.pk).update(next_attempt_at=timezone.now())
    drain(portal)
    assert row(command).state == State.DONE


def test_a_slow_dispatcher_does_not_settle_a_command_it_lost(fake, make_portal):
    # Its lease ran out (the heartbeat could not reach the database) and the row went to
    # another dispatcher: the late answer must not overwrite the new owner's work.
    portal, remote = make_portal()
    command = outbox.enqueue(portal, "profile")
    claimed = outbox.claim(portal)
    B24Command.objects.filter(pk=command.pk).update(
        sent_at=timezone.now() + timedelta(seconds=1)  # re-claimed by someone else
    )
    outbox.send(portal, claimed)
    assert row(command).state == State.SENDING  # left to its current dispatcher
    assert len(fake.calls_of("profile")) == 1


# ---------------------------------------------------------------- parked portals


def test_portal_deleted_parks_the_portal_instead_of_resending(fake, make_portal):
    portal, remote = make_portal()
    fake.fail_next("profile", error="PORTAL_DELETED", times=100)
    command = outbox.enqueue(portal, "profile")
    outbox.dispatch(portal.pk, slice_s=3)
    parked = Portal.objects.get(pk=portal.pk)
    assert parked.status == Portal.Status.NEEDS_REAUTH
    assert parked.last_error.startswith("PORTAL_DELETED") and parked.last_error_at
    assert len(fake.calls_of("profile")) == 1  # not resent in a loop
    waiting = row(command)
    assert waiting.state == State.PENDING and waiting.error_code == "PORTAL_DELETED"
    outbox.dispatch(portal.pk, slice_s=1)
    assert len(fake.calls_of("profile")) == 1


def test_commands_of_a_parked_portal_fail_after_the_horizon(fake, make_portal, settings):
    portal, remote = make_portal()
    fake.fail_next("profile", error="PORTAL_DELETED", times=100)
    old = outbox.enqueue(portal, "profile", owner_key="call:1")
    outbox.dispatch(portal.pk, slice_s=3)
    recent = outbox.enqueue(portal, "app.info", owner_key="call:2")
    settings.BITRIX24_RETRY_HORIZON_S = 60
    assert tasks.expire_parked() == 0  # within the horizon: kept for a re-install
    B24Command.objects.filter(pk=old.pk).update(
        first_sent_at=timezone.now() - timedelta(seconds=61)
    )
    assert tasks.expire_parked() == 1
    expired = row(old)
    assert (expired.state, expired.error_code) == (State.FAILED, "PORTAL_PARKED")
    assert "parked since" in expired.error_description
    assert "PORTAL_DELETED" in expired.error_description
    assert expired.finished_at is not None
    assert row(recent).state == State.PENDING


def test_an_active_portals_old_commands_are_not_expired_as_parked(fake, make_portal, settings):
    portal, remote = make_portal()
    command = outbox.enqueue(portal, "profile")
    B24Command.objects.filter(pk=command.pk).update(
        created_at=timezone.now() - timedelta(days=2), next_attempt_at=timezone.now()
    )
    assert tasks.expire_parked() == 0
    assert row(command).state == State.PENDING


def test_admin_shows_why_and_since_when_a_portal_is_parked(admin_client, fake, make_portal):
    portal, remote = make_portal()
    fake.fail_next("profile", error="PORTAL_DELETED", times=100)
    outbox.enqueue(portal, "profile")
    outbox.dispatch(portal.pk, slice_s=3)
    since = f"{Portal.objects.get(pk=portal.pk).last_error_at:%Y-%m-%d %H:%M} UTC"
    listing = admin_client.get("/admin/bitrixapp/portal/").content.decode()
    detail = admin_client.get(f"/admin/bitrixapp/portal/{portal.pk}/change/").content.decode()
    for page in (listing, detail):
        assert f"since {since}: PORTAL_DELETED: Portal was deleted" in page
