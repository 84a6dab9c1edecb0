"""Flows that cross processes: HTTP in -> real Celery worker processes -> live Bitrix24 fake."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from bitrixapp import outbox, tasks
from bitrixapp.models import B24Command, BitrixEvent, Portal
from tests.conftest import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

State = B24Command.State
BOUND = {"ONEXTERNALCALLSTART", "ONEXTERNALCALLBACKSTART", "ONAPPUNINSTALL"}


def install_form(remote, fake):
    form = {"event": "ONAPPINSTALL", "data[VERSION]": "1", "data[INSTALLED]": "Y"}
    form.update({f"auth[{k}]": v for k, v in remote.auth_data().items()})
    form["auth[client_endpoint]"] = fake.rest_url
    return form


def bound_events(remote):
    return sorted(event for event, _ in remote.bindings)


def test_install_bind_refresh_uninstall_cycle(client, fake, start_worker):
    start_worker()
    remote = fake.add_portal(member_id="cycle", domain="cycle.bitrix24.ru", plan="enterprise")

    assert client.post("/bitrix/install/", install_form(remote, fake)).status_code == 200
    portal = Portal.objects.get(member_id="cycle")
    wait_until(
        lambda: Portal.objects.get(pk=portal.pk).events_bound_version == settings.APP_VERSION,
        what="events bound",
    )
    handler = f"{settings.APP_BASE_URL}/bitrix/events/"
    assert set(remote.bindings) == {(event, handler) for event in BOUND}
    wait_until(
        lambda: Portal.objects.get(pk=portal.pk).detected_plan == "enterprise", what="plan detected"
    )

    # An app update re-installs: bindings are made again, never duplicated.
    assert client.post("/bitrix/install/", install_form(remote, fake)).status_code == 200
    wait_until(
        lambda: not B24Command.objects.filter(state__in=["pending", "sending"]).exists(),
        what="second setup sent",
    )
    assert bound_events(remote) == sorted(BOUND)
    assert not B24Command.objects.filter(state=State.FAILED).exists()

    # The token expires: the worker refreshes it once and the command goes through.
    fake.oauth_requests.clear()  # the two installs were verified at the auth server
    remote.expire_access_token()
    with transaction.atomic():
        command = outbox.enqueue(Portal.objects.get(pk=portal.pk), "profile")
    wait_until(lambda: B24Command.objects.get(pk=command.pk).state == State.DONE, what="refresh")
    assert len(fake.oauth_requests) == 1
    assert Portal.objects.get(pk=portal.pk).refresh_token == remote.refresh_token

    # Uninstall with CLEAN=1: outgoing work stops at once and the data is purged by the worker.
    uninstall = {"event": "ONAPPUNINSTALL", "data[CLEAN]": "1"}
    uninstall.update({f"auth[{k}]": v for k, v in remote.auth_data(with_tokens=False).items()})
    assert client.post("/bitrix/events/", uninstall).status_code == 200
    wait_until(lambda: not Portal.objects.filter(pk=portal.pk).exists(), what="purge")


def test_two_worker_processes_share_one_rate_limit(fake, make_portal, start_worker):
    # One request per command, so 70 commands are 70 requests against a 50-request bucket:
    # two workers with private limiters would each burst and Bitrix24 would refuse ~20.
    workers = [start_worker(f"w{i}", BITRIX24_BATCH_MAX="1") for i in range(2)]
    portal, remote = make_portal()
    with transaction.atomic():
        for i in range(70):
            outbox.enqueue(portal, "profile", {"n": i}, owner_key=f"o{i}")
    tasks.dispatch_portal.delay(portal.pk)
    tasks.dispatch_portal.delay(portal.pk)
    wait_until(
        lambda: B24Command.objects.filter(state=State.DONE).count() == 70,
        timeout=60,
        what="all sent",
    )
    assert fake.throttled == []
    assert len(fake.calls_of("profile")) == 70
    for worker in workers:
        assert "sending 1 command(s)" in worker.log_path.read_text()


def test_a_killed_worker_loses_nothing(fake, make_portal, start_worker):
    first = start_worker("doomed")
    portal, remote = make_portal()
    fake.method_delay["profile"] = 3.0  # Bitrix24 runs it, then answers slowly
    with transaction.atomic():
        commands = [outbox.enqueue(portal, "profile", {"n": 0}, owner_key="call:1")]
        commands += [outbox.enqueue(portal, "app.info", owner_key="call:1") for _ in range(3)]
    wait_until(lambda: fake.calls_of("profile"), what="request in flight")
    first.kill()
    assert B24Command.objects.filter(state=State.SENDING).count() == 4
    fake.method_delay.clear()

    # The sweeper (beat) finds the lease of the dead worker expired and re-queues the rows.
    B24Command.objects.update(lease_until=timezone.now() - timedelta(seconds=1))
    start_worker("rescuer")
    assert tasks.sweep()["released"] == 4
    wait_until(lambda: B24Command.objects.filter(state=State.DONE).count() == 4, what="resent")
    methods = [c.method for c in fake.calls if c.method != "batch"]
    # At least once across a crash: the interrupted batch may have run; the order holds.
    assert methods[-4:] == ["profile", "app.info", "app.info", "app.info"]


def test_events_stuck_in_received_are_picked_up_by_the_sweeper(fake, make_portal, start_worker):
    start_worker()
    portal, remote = make_portal()
    stuck = BitrixEvent.objects.create(
        portal=portal,
        source="ONCRMLEADADD",
        body="{}",
        content_type="application/json",
        next_attempt_at=timezone.now() - timedelta(minutes=5),
    )
    assert tasks.sweep()["inbound"] == {"bitrixapp.bitrixevent": 1}
    wait_until(
        lambda: BitrixEvent.objects.get(pk=stuck.pk).state == BitrixEvent.State.IGNORED,
        what="event processed",
    )


def test_bitrix24_outage_delays_commands_which_then_go_once_in_order(
    fake, make_portal, start_worker
):
    # A short backoff cap keeps the wait after recovery short however many retries happened.
    start_worker(BITRIX24_RETRY_MAX_DELAY_S="2")
    portal, remote = make_portal()
    fake.outage("500")
    with transaction.atomic():
        for i in range(5):
            outbox.enqueue(portal, "profile", {"n": i}, owner_key="call:7")
    wait_until(lambda: len(fake.rejected) >= 2, what="retries during the outage")
    assert not B24Command.objects.filter(state=State.DONE).exists()
    fake.restore()
    wait_until(
        lambda: B24Command.objects.filter(state=State.DONE).count() == 5,
        timeout=40,
        what="sent after recovery",
    )
    # Alone a command goes as JSON (int), inside a batch as a query string (str).
    assert [str(c.params["n"]) for c in fake.calls_of("profile")] == ["0", "1", "2", "3", "4"]
