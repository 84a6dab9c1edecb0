"""Checks every inbound endpoint shares: whose request is this, and does it prove it.

A secret URL (a connection's or an SMS account's webhook UUID) names the receiver; the
application token Bitrix24 gave at install proves an event is Bitrix24's. Identifiers in a
request (member_id, domain) prove nothing by themselves.
"""

import functools
import threading
import time
from collections.abc import Sequence
from typing import Any, Generic, NamedTuple, TypeVar

from django.db import connections, models, router

from bitrixapp.http import forbidden, gone, not_found, secrets_equal
from bitrixapp.models import Portal
from bitrixapp.prepared import Guard, RowLookup, converted

Receiver = TypeVar("Receiver", bound=models.Model)

# How long a web process serves a webhook URL's receiver from memory (each request's INSERT
# still checks that the row is unchanged), and how many it keeps.
REMEMBER_S = 30.0
REMEMBER_MAX = 1000


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


# ---------------------------------------------------------------- remembered receivers
#
# A PBX posts every call event to the same URL, hundreds a second in a burst: looking its
# connection up each time (a SELECT, building the rows, a Fernet decrypt) was a quarter of
# the acknowledgement's CPU. A web process keeps what it looked up; the request is then
# stored under a guard, in the INSERT itself, that the row is still the one remembered
# (active, the fields the caller names unchanged, its portal not uninstalled). If anything
# changed, nothing is stored and the caller judges the request again on a fresh look-up
# (ReceiverChanged), as it does for any outcome but a plain acceptance: a remembered row
# never lets through, or answers, what a fresh one would not.


class ReceiverChanged(Exception):
    """The receiver remembered for a webhook URL is no longer the one in the database."""


class Found(NamedTuple, Generic[Receiver]):
    """A webhook URL's receiver, and the guard its request is stored under: None when it was
    looked up for this request, else "the database row is still the one remembered"."""

    row: Receiver
    guard: Guard | None


class _Remembered(NamedTuple):
    row: Any
    guard: Guard
    until: float  # time.monotonic()


_remembered: dict[tuple[str, str], _Remembered] = {}
_remembered_lock = threading.Lock()


def remembered_receiver(
    model: type[Receiver], hook: object, what: str, same: Sequence[str]
) -> "Found[Receiver]":
    """receiver_by_hook from this process's memory when it looked the URL up less than
    REMEMBER_S ago; `same` names the fields (not null) the guard compares besides
    `is_active`. The row is shared between threads: read it, never change it."""
    key = (model._meta.label, str(hook))
    known = _remembered.get(key)
    if known is not None and known.until > time.monotonic():
        return Found(known.row, known.guard)
    row = receiver_by_hook(model, hook, what)
    guard = _unchanged(row, same)
    if guard is not None:
        with _remembered_lock:
            if len(_remembered) >= REMEMBER_MAX:
                _remembered.pop(next(iter(_remembered)))
            _remembered[key] = _Remembered(row, guard, time.monotonic() + REMEMBER_S)
    return Found(row, None)


def forget_receiver(model: type[models.Model], hook: object) -> None:
    with _remembered_lock:
        _remembered.pop((model._meta.label, str(hook)), None)


def _unchanged(row: models.Model, same: Sequence[str]) -> Guard | None:
    """The guard that `row` is still what the database holds, from the stored values of
    `same` (ciphertexts, not plaintexts: any re-save changes them); None when the row changed
    between its look-up and this read (it is then not remembered)."""
    model = type(row)
    db = router.db_for_write(model)
    fields = [model._meta.get_field(name) for name in same]
    if any(field.null for field in fields):
        raise ValueError(f"{model._meta.label}: a guard compares only fields that are not null")
    quote = connections[db].ops.quote_name
    table, pk = quote(model._meta.db_table), quote(model._meta.pk.column)
    columns = [quote(field.column) for field in fields]
    # Identifiers from the models, quoted; the values are parameters.
    select = f"SELECT {', '.join(columns)} FROM {table} WHERE {pk} = %s"  # noqa: S608
    with connections[db].cursor() as cursor:
        cursor.execute(select, [row.pk])
        stored = cursor.fetchone()
    if stored is None:
        return None
    looked_up = [getattr(row, field.attname) for field in fields]
    if converted(db, fields, stored) != looked_up:
        return None
    portal = f"{quote(Portal._meta.db_table)} p ON p.{quote(Portal._meta.pk.column)}"
    portal_fk = quote(model._meta.get_field("portal").column)
    active = quote(model._meta.get_field("is_active").column)
    status = quote(Portal._meta.get_field("status").column)
    same_values = " AND ".join(f"r.{column} = %s" for column in columns)
    return Guard(
        f"SELECT 1 FROM {table} r JOIN {portal} = r.{portal_fk} WHERE r.{pk} = %s"  # noqa: S608
        f" AND r.{active} = %s AND {same_values} AND p.{status} <> %s",
        [row.pk, True, *stored, Portal.Status.UNINSTALLED],
    )
