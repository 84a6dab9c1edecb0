"""Checks every inbound endpoint shares: whose request is this, and does it prove it.

A secret URL (a connection's or an SMS account's webhook UUID) names the receiver; the
application token Bitrix24 gave at install proves an event is Bitrix24's. Identifiers in a
request (member_id, domain) prove nothing by themselves.
"""

import functools
from collections.abc import Sequence
from typing import TypeVar

from django.db import models

from bitrixapp.http import forbidden, gone, not_found, secrets_equal
from bitrixapp.models import Portal
from bitrixapp.prepared import RowLookup

Receiver = TypeVar("Receiver", bound=models.Model)


def receiver_by_hook(
    model: type[Receiver], hook: object, what: str, portal_secrets: Sequence[str] = ()
) -> Receiver:
    """The active row of `model` (with a `portal`, `webhook_uuid` and `is_active`) behind a
    webhook URL, its portal attached with only the `portal_secrets` it needs; 404 for an
    unknown or inactive one, 410 when its portal uninstalled the app."""
    # Each token loaded is a ciphertext fetched and a Fernet decrypt (~15 us) on the path of
    # every inbound request: an event's check needs only the application token, a webhook
    # ack none of them.
    row = _lookup(model, "webhook_uuid", Portal.secrets_except(*portal_secrets)).get(hook)
    if row is None or not row.is_active:
        raise not_found(f"no active {what} has this webhook URL")
    if row.portal.status == Portal.Status.UNINSTALLED:
        raise gone(f"the portal of this {what} has uninstalled the app")
    return row


@functools.cache
def _lookup(model: type[models.Model], key: str, portal_skip: tuple[str, ...]) -> RowLookup:
    if model is Portal:
        return RowLookup(Portal, key, skip=portal_skip)
    return RowLookup(model, key, related=["portal"], skip=[f"portal__{f}" for f in portal_skip])


def check_application_token(portal: Portal, token: str, field: str) -> None:
    """403 unless `token` is the application token stored at install (constant time)."""
    if not secrets_equal(token, portal.application_token):
        raise forbidden(f"{field} does not match the one stored at install")


def portal_for_event(member_id: str, token: str) -> Portal:
    """The installed portal a Bitrix24 event claims to come from, once its token proves it."""
    portal = _lookup(Portal, "member_id", Portal.secrets_except("application_token")).get(member_id)
    if portal is None:
        raise not_found(f"no portal with member_id {member_id!r} has installed the app")
    if portal.status == Portal.Status.UNINSTALLED:
        raise gone("this portal has uninstalled the app")
    check_application_token(portal, token, "auth[application_token]")
    return portal
