"""Send-time hooks: a command's params get their last word when it leaves, not when it was
queued. In-process dispatch against the live Bitrix24 fake."""

import pytest

from bitrixapp import outbox
from bitrixapp.models import B24Command
from tests.conftest import drain

pytestmark = pytest.mark.django_db

State = B24Command.State


@pytest.fixture
def hook(monkeypatch):
    """Register a before-send hook for `profile` for this test only."""

    def register(fn):
        """`fn(command, params)` applied to each command of the request."""
        seen = []

        def each(outgoing):
            seen.append([c.pk for c, _ in outgoing])
            return [fn(c, params) for c, params in outgoing]

        monkeypatch.setitem(outbox.BEFORE_SEND, "profile", each)
        return seen

    return register


def sent_params(fake):
    return [c.params for c in fake.calls_of("profile")]


@pytest.mark.parametrize("backlog", [1, 3], ids=["single", "batch"])
def test_a_hook_decides_the_params_when_the_command_leaves(fake, make_portal, hook, backlog):
    portal, _ = make_portal()
    seen = hook(lambda command, params: {**params, "decided": f"at send of #{command.pk}"})
    commands = [
        outbox.enqueue(portal, "profile", {"n": i}, owner_key=f"o{i}") for i in range(backlog)
    ]
    drain(portal)
    assert [c.via_batch for c in fake.calls_of("profile")] == [backlog > 1] * backlog
    assert sorted(p["decided"] for p in sent_params(fake)) == sorted(
        f"at send of #{c.pk}" for c in commands
    )
    assert seen == [[c.pk for c in commands]]  # once for the whole request


def test_a_command_no_longer_worth_sending_is_cancelled_and_its_lane_goes_on(
    fake, make_portal, hook
):
    portal, _ = make_portal()
    hook(lambda command, params: None if params.get("stale") else params)
    stale = outbox.enqueue(portal, "profile", {"stale": 1}, owner_key="call:1")
    after = outbox.enqueue(portal, "app.info", owner_key="call:1")
    drain(portal)
    stale.refresh_from_db()
    assert (stale.state, stale.error_code) == (State.CANCELLED, "NOT_SENT")
    assert fake.calls_of("profile") == []
    assert B24Command.objects.get(pk=after.pk).state == State.DONE


@pytest.mark.parametrize("bug", ["raises", "answers for fewer commands"])
def test_a_failing_hook_sends_what_was_queued(fake, make_portal, hook, monkeypatch, bug):
    portal, _ = make_portal()

    def broken(command, params):
        raise RuntimeError("bug in a hook")

    if bug == "raises":
        hook(broken)
    else:
        monkeypatch.setitem(outbox.BEFORE_SEND, "profile", lambda outgoing: [])
    command = outbox.enqueue(portal, "profile", {"n": 7})
    drain(portal)
    assert B24Command.objects.get(pk=command.pk).state == State.DONE
    assert sent_params(fake)[0]["n"] in (7, "7")
