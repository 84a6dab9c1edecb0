"""Which worker takes which queue, as `make run` (serve) and docker/compose.yaml start them: call
events never share a worker with an SMS campaign (whose sends wait for the gateway's rate in
the worker) or with Bitrix24 dispatch, and every queue a task goes to has a worker."""

from pathlib import Path

import pytest
import yaml
from django.conf import settings

from bitrixapp import inbox
from bitrixapp.management.commands.serve import processes

COMPOSE = Path(__file__).resolve().parents[2] / "docker" / "compose.yaml"
APART = [("calls", "sms"), ("calls", "bitrix")]


def queues_of(argv: list[str]) -> set[str]:
    return set(argv[argv.index("-Q") + 1].split(",")) if "-Q" in argv else set()


def serve_workers() -> dict[str, set[str]]:
    return {name: queues_of(argv) for name, argv in processes().items() if "worker" in argv}


def compose_workers() -> dict[str, set[str]]:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    return {
        name: queues_of(service["command"])
        for name, service in services.items()
        if "worker" in service.get("command", [])
    }


@pytest.mark.parametrize("layout", [serve_workers, compose_workers], ids=["serve", "compose"])
def test_call_events_never_share_a_worker_with_sms_or_dispatch(layout):
    workers = layout()
    for queues in workers.values():
        for one, other in APART:
            assert not {one, other} <= queues, queues
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    used = routed | {box.queue for box in inbox.INBOXES.values()} | {"default"}
    assert used <= set().union(*workers.values())
