"""A dispatcher process killed mid-batch and a slow but live one, with real worker processes
that also run beat (the periodic lease release), against the live Bitrix24 fake."""

import time

import pytest
from django.db import transaction

from bitrixapp import outbox
from bitrixapp.models import B24Command
from tests.conftest import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

State = B24Command.State


def test_a_killed_dispatchers_batch_is_sent_again_within_30_seconds(
    fake, make_portal, start_worker
):
    doomed = start_worker("doomed")
    portal, remote = make_portal()
    fake.method_delay["profile"] = 60.0  # Bitrix24 runs the batch, then answers slowly
    with transaction.atomic():
        commands = [outbox.enqueue(portal, "profile", {"n": 0}, owner_key="call:1")]
        commands += [outbox.enqueue(portal, "app.info", owner_key="call:1") for _ in range(3)]
    wait_until(lambda: fake.calls_of("profile"), what="batch in flight")
    doomed.kill()
    killed_at = time.monotonic()
    assert B24Command.objects.filter(state=State.SENDING).count() == 4
    fake.method_delay.clear()

    start_worker("rescuer", beat=True)  # beat releases expired leases every 5 s
    wait_until(
        lambda: B24Command.objects.filter(state=State.DONE).count() == 4,
        timeout=45,
        what="resent after the crash",
    )
    recovered_in = time.monotonic() - killed_at
    assert recovered_in < 30, f"recovery took {recovered_in:.1f} s"
    # At least once across a crash: the interrupted batch ran once already; order holds.
    methods = [c.method for c in fake.calls if c.method != "batch"]
    assert methods == ["profile", "app.info", "app.info", "app.info"] * 2


def test_a_slow_but_live_request_is_not_sent_again(fake, make_portal, start_worker):
    # Two processes: one waits on Bitrix24 for 40 s, the other runs the lease release (and
    # would run a second dispatcher if the lease were released): the heartbeat prevents it.
    start_worker("slow", concurrency=2, beat=True, BITRIX24_READ_TIMEOUT="65")
    portal, remote = make_portal()
    fake.method_delay["profile"] = 40.0
    with transaction.atomic():
        command = outbox.enqueue(portal, "profile")
    wait_until(
        lambda: B24Command.objects.get(pk=command.pk).state == State.DONE,
        timeout=70,
        what="slow answer recorded",
    )
    row = B24Command.objects.get(pk=command.pk)
    assert len(fake.calls_of("profile")) == 1
    assert row.attempts == 1 and row.duration_ms >= 40_000
