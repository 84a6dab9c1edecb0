"""Celery tasks of the platform layer. Tasks take primary keys and reload their rows."""

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from bitrixapp import events, outbox
from bitrixapp.models import B24Command, BitrixEvent, Portal

log = logging.getLogger(__name__)

STUCK_EVENT_AGE = timedelta(seconds=60)


@shared_task(ignore_result=True)
def dispatch_portal(portal_id: int) -> None:
    outbox.dispatch(portal_id)


@shared_task(ignore_result=True)
def process_event(event_id: int) -> None:
    events.process(event_id)


@shared_task(ignore_result=True)
def sweep() -> dict[str, int]:
    """Resume work a crash or a lost broker message left behind (the rows are the outbox)."""
    released = outbox.release_expired_leases()
    portals = outbox.portals_with_ready_commands()
    for portal_id in portals:
        outbox.kick(portal_id, force=True)
    stuck = list(
        BitrixEvent.objects.filter(
            state=BitrixEvent.State.RECEIVED, received_at__lt=timezone.now() - STUCK_EVENT_AGE
        ).values_list("id", flat=True)[:1000]
    )
    for event_id in stuck:
        process_event.delay(event_id)
    if released or stuck:
        log.info("sweep: %d leases released, %d events re-queued", released, len(stuck))
    return {"released": released, "portals": len(portals), "events": len(stuck)}


@shared_task(ignore_result=True)
def release_leases() -> int:
    """Every few seconds: commands of a dispatcher that died mid-send go again (their lease,
    renewed while the dispatcher lives, has run out)."""
    return outbox.release_expired_leases()


@shared_task(ignore_result=True)
def expire_parked() -> int:
    """Commands of portals parked longer than the retry horizon fail, with the reason."""
    expired = outbox.expire_parked()
    if expired:
        log.info("expired %d command(s) of parked portals", expired)
    return expired


@shared_task(ignore_result=True)
def prune() -> None:
    """Drop finished commands and handled events older than the retention period."""
    cutoff = timezone.now() - timedelta(days=settings.OUTBOX_RETENTION_DAYS)
    finished = (B24Command.State.DONE, B24Command.State.FAILED, B24Command.State.CANCELLED)
    B24Command.objects.filter(state__in=finished, finished_at__lt=cutoff, dependents=None).delete()
    BitrixEvent.objects.filter(received_at__lt=cutoff).exclude(
        state=BitrixEvent.State.RECEIVED
    ).delete()


@shared_task(ignore_result=True)
def purge_portal(portal_id: int) -> None:
    """ONAPPUNINSTALL with CLEAN=1: the portal asked for its data to be deleted."""
    Portal.objects.filter(pk=portal_id, status=Portal.Status.UNINSTALLED).delete()
