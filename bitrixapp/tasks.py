"""Celery tasks of the platform layer. Tasks take primary keys and reload their rows."""

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from bitrixapp import inbox, outbox
from bitrixapp.models import B24Command, Portal

log = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def dispatch_portal(portal_id: int, flagged_at: float | None = None) -> None:
    outbox.dispatch(portal_id, flagged_at=flagged_at)


@shared_task(ignore_result=True)
def process_inbound(label: str, pk: int) -> None:
    """Process one stored inbound request of the inbox `label` (e.g. "telephony.pbxevent"):
    a retry after its backoff."""
    inbox.process(label, pk)


# Acknowledged on receipt: the message only says "look at this lane"; the rows are the record,
# and a drain that dies is made good by the next row's kick or the sweeper. A late ack would
# keep the message unacknowledged for the whole slice, and the Redis transport's restore of
# unacknowledged messages can crash the worker when Redis goes away (seen with kombu 5.7
# in tests/crash).
@shared_task(ignore_result=True, acks_late=False)
def drain_inbound(label: str, lane: object) -> None:
    """Process the waiting rows of one lane of the inbox `label` (a portal, a PBX connection)
    for a short slice."""
    inbox.drain(label, lane)


@shared_task(ignore_result=True)
def sweep() -> dict[str, int]:
    """Resume work a crash or a lost broker message left behind (the rows are the outbox)."""
    released = outbox.release_expired_leases()
    portals = outbox.portals_with_ready_commands()
    for portal_id in portals:
        outbox.kick(portal_id, force=True)
    requeued = inbox.sweep()
    if released or requeued:
        log.info("sweep: %d leases released, inbound requests re-queued: %s", released, requeued)
    return {"released": released, "portals": len(portals), "inbound": requeued}


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
    for box in inbox.INBOXES.values():
        box.model.objects.filter(received_at__lt=cutoff).exclude(
            state=inbox.InboundRequest.State.RECEIVED
        ).delete()


@shared_task(ignore_result=True)
def purge_portal(portal_id: int) -> None:
    """ONAPPUNINSTALL with CLEAN=1: the portal asked for its data to be deleted."""
    Portal.objects.filter(pk=portal_id, status=Portal.Status.UNINSTALLED).delete()
