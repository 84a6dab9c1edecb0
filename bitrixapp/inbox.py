"""One inbox for every inbound request: Bitrix24 events, PBX webhooks, SMS handler calls and
delivery reports.

A view authenticates the request (signature, secret URL, application token), keeps its
redacted raw form as a row of an `InboundRequest` table, answers, and the row is processed in
a worker from that stored raw form. So "process again" re-parses the body: a parser fix
recovers every stored request. A request that is authenticated but malformed is kept as
`rejected` with the reason its 400 named.

Processing is idempotent (only a `received` row is processed, under its row lock) and
bounded: a handler that raises is retried with exponential backoff, and after
`max_attempts` the row ends `failed` with the error kept (shown in the admin). A handler
raises `Rejected` for a body it cannot read and `Permanent` for a failure no retry can fix;
both end the row at once, as does `Ignored` for a request there is nothing to do with.
One sweeper drains again the lanes (below) of every inbox whose rows were left waiting (a
broker outage, a crash).

Lanes: a stored row does not queue a task of its own. Its lane (the batch field's value if
the inbox batches, e.g. a PBX connection; else its portal) gets one drain task, queued only if
none is on its way (a flag in the cache), and that task processes the lane's waiting rows in
id order for a short slice. A burst of 50 webhooks costs one queued task instead of 50, the
acknowledgement a cache round trip instead of a broker publish. Retries wait in tasks of their
own (their countdown); the sweeper kicks the lanes of rows left waiting (a lost task, a flag
that outlived its drain).

Bursts: an inbox may process the rows waiting together (same `batch_by` value, e.g. one PBX
connection) in one transaction with its `handle_batch`; a drain hands it whatever waits, a
lone row as a batch of one. A burst costs one transaction and a few statements in all
instead of a transaction each. Each row keeps its own state, attempts and error; if the
batch handler raises, the batch is undone and its rows are processed one by one, so one bad
row never fails its neighbours.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from celery.utils.time import get_exponential_backoff_interval
from django.apps import apps
from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, models, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from bitrixapp import bulk, jobs, prepared
from bitrixapp.formdata import FormDataError, parse_bracketed, php_query

log = logging.getLogger(__name__)

MASK = "***"
PROCESS_TASK = "bitrixapp.tasks.process_inbound"
DRAIN_TASK = "bitrixapp.tasks.drain_inbound"
DRAIN_SLICE_S = 2.0  # one drain task works a lane this long, then queues its continuation
KICK_FLAG_S = 10  # a queued drain that never runs (a lost message) blocks kicks this long
SWEEP_BATCH = 1000
ERROR_CHARS = 2000
# Headers kept with a stored request for diagnosis (never Authorization or cookies).
DIAGNOSTIC_HEADERS = ("Content-Type", "Content-Length", "User-Agent", "X-Forwarded-For")


class Rejected(Exception):
    """The stored body cannot be read; the message names what is wrong (no retry)."""


class Permanent(Exception):
    """Processing failed in a way no retry can fix (e.g. nothing configured to act with)."""


class Ignored(Exception):
    """Nothing to do with this request; the message says why (kept on the row)."""


class InboundRequest(models.Model):
    """A stored inbound request: what came in, redacted, and what became of it."""

    class State(models.TextChoices):
        RECEIVED = "received", _("received, waiting to be processed")
        PROCESSED = "processed", _("processed")
        IGNORED = "ignored", _("ignored (nothing to do)")
        REJECTED = "rejected", _("rejected (malformed)")
        FAILED = "failed", _("failed")

    source = models.CharField(
        _("source"), max_length=100, db_index=True, help_text=_("Event name or path")
    )
    body = models.TextField(
        _("body"), blank=True, default="", help_text=_("As received, secrets masked")
    )
    content_type = models.CharField(_("content type"), max_length=100, blank=True, default="")
    query = models.TextField(
        _("query string"), blank=True, default="", help_text=_("As received, secrets masked")
    )
    headers = models.JSONField(_("headers"), default=dict, blank=True)
    dedupe_key = models.CharField(_("duplicate check key"), max_length=64, blank=True, default="")
    state = models.CharField(
        _("state"), max_length=10, choices=State.choices, default=State.RECEIVED
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    error = models.TextField(_("error"), blank=True)
    next_attempt_at = models.DateTimeField(_("next attempt"), default=timezone.now)
    received_at = models.DateTimeField(_("received"), default=timezone.now)
    processed_at = models.DateTimeField(_("processed"), null=True, blank=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.source} #{self.pk}"


# ---------------------------------------------------------------- registry

Handler = Callable[[Any], str]  # (locked row) -> the final state: PROCESSED or IGNORED
# (locked rows, in id order) -> each row's outcome: a final state (PROCESSED or IGNORED) or
# the Rejected / Permanent / Ignored it ended with. Raising anything undoes the whole batch.
BatchHandler = Callable[[list[Any]], dict[int, "str | Exception"]]


@dataclass(frozen=True)
class Inbox:
    model: type[InboundRequest]
    handle: Handler
    queue: str = "default"
    max_attempts: int = 5
    backoff_s: float = 5.0  # first retry; doubles per attempt
    backoff_max_s: float = 600.0
    # How the worker loads rows: with the related objects along these foreign-key paths in
    # the same query ("connection", "connection__portal"; only the row itself is locked),
    # leaving these fields of them deferred ("connection__portal__refresh_token").
    related: tuple[str, ...] = ()
    deferred: tuple[str, ...] = ()
    # Bursts: rows with the same value of this field are processed together by handle_batch,
    # which may set `batch_fields` on them besides the state.
    batch_by: str = ""
    handle_batch: BatchHandler | None = None
    batch_fields: tuple[str, ...] = ()
    batch_max: int = 50

    @property
    def lane(self) -> str:
        """The field whose value makes a lane, whose rows one task drains in id order: the
        batch field, so that a drain meets its batch mates; else the portal."""
        return self.batch_by or "portal_id"

    @property
    def label(self) -> str:
        return self.model._meta.label_lower


INBOXES: dict[str, Inbox] = {}


def register(
    model: type[InboundRequest], handle: Handler, *, queue: str = "default", **options: Any
) -> Inbox:
    """Make `model` an inbox processed by `handle`; twice for one model is a start-up error."""
    inbox = Inbox(model, handle, queue, **options)
    if inbox.label in INBOXES:
        raise RuntimeError(f"inbox {inbox.label} is registered twice")
    INBOXES[inbox.label] = inbox
    return inbox


def inbox_of(model: type[InboundRequest] | str) -> Inbox:
    label = model if isinstance(model, str) else model._meta.label_lower
    return INBOXES[label]


# ---------------------------------------------------------------- storing


def store(
    model: type[InboundRequest], only_if: prepared.Guard | None = None, **fields: Any
) -> InboundRequest | None:
    """Keep a request; None when its dedupe key was stored before (a duplicate delivery).
    With `only_if`, only while that condition holds (prepared.NotInserted if not).

    A `received` row is queued for processing once the caller's transaction commits."""
    row = model(**{k: _storable(v) for k, v in fields.items()})
    try:
        # Alone, the INSERT is its own transaction; inside the caller's, a savepoint keeps a
        # duplicate's IntegrityError from breaking it.
        if transaction.get_connection().in_atomic_block:
            with transaction.atomic():
                prepared.insert(row, only_if)
        else:
            prepared.insert(row, only_if)
    except IntegrityError:
        return None
    if row.state == InboundRequest.State.RECEIVED:
        kick_after_commit(row)
    return row


def _storable(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL: a raw NUL byte (only ever in a malformed body) is kept
    visibly escaped instead of failing the whole row."""
    if isinstance(value, str):
        return value.replace("\x00", "\\x00")
    if isinstance(value, dict):
        return {k: _storable(v) for k, v in value.items()}
    return value


def enqueue(row: InboundRequest, countdown: float | None = None) -> None:
    inbox = inbox_of(type(row))
    jobs.after_commit(PROCESS_TASK, inbox.label, row.pk, queue=inbox.queue, countdown=countdown)


def kick_after_commit(row: InboundRequest) -> None:
    """Once the row is committed, make sure its lane is being drained."""
    inbox = inbox_of(type(row))
    lane = getattr(row, inbox.lane)
    transaction.on_commit(lambda: kick(inbox, lane), robust=True)


def kick(inbox: Inbox, lane: Any, force: bool = False) -> None:
    """Make sure one drain task for the lane is on its way (one queued is enough); `force`
    queues one even if the flag says another is coming (the sweeper's safety net)."""
    flag = _lane_flag(inbox, lane)
    if force:
        cache.delete(flag)
    if cache.add(flag, 1, timeout=KICK_FLAG_S) and not jobs.now(
        DRAIN_TASK, inbox.label, lane, queue=inbox.queue
    ):
        cache.delete(flag)  # the broker refused: the next row kicks again


def _lane_flag(inbox: Inbox, lane: Any) -> str:
    return f"inbox:drain:{inbox.label}:{lane}"


def diagnostic_headers(headers: Mapping[str, str], extra: Iterable[str] = ()) -> dict[str, str]:
    """The request headers worth keeping: the diagnostic ones plus those a provider reads."""
    return {
        name: str(headers[name])[:500]
        for name in (*DIAGNOSTIC_HEADERS, *extra)
        if headers.get(name) is not None
    }


# ---------------------------------------------------------------- processing


def process(model: type[InboundRequest] | str | Inbox, pk: int) -> str | None:
    """Process one stored request if it is still waiting; returns its new state."""
    inbox = model if isinstance(model, Inbox) else inbox_of(model)
    try:
        return _process(inbox, pk)
    except Exception as exc:
        # The transaction itself broke (e.g. the database went away mid-way): count the
        # attempt on its own, so that even this path ends in `failed` eventually.
        log.exception("inbox %s #%s: processing broke", inbox.label, pk)
        _count_broken_attempt(inbox, pk, exc)
        return None


def drain(label: str, lane: Any, slice_s: float = DRAIN_SLICE_S) -> int:
    """Process the lane's waiting rows in id order for up to `slice_s`; returns how many rows
    it took.

    Each step takes the next waiting rows the way a burst is taken: up to `batch_max` of them
    (one for an inbox without a batch handler), locked, in one statement, and processes them
    in one transaction. While it runs the lane's flag stays set, so rows stored meanwhile
    queue no task: this loop picks them up. After the slice it queues its continuation behind
    other work."""
    inbox = inbox_of(label)
    flag = _lane_flag(inbox, lane)
    cache.set(flag, 1, timeout=int(slice_s) + KICK_FLAG_S)
    deadline = time.monotonic() + slice_s
    # Rows this drain took already: one left waiting (its processing broke before its attempt
    # was counted) is not taken again here; its retry task or the sweeper comes back to it.
    tried: set[int] = set()
    while time.monotonic() < deadline:
        taken = _drain_step(inbox, lane, tried)
        tried.update(taken)
        if len(taken) < _step_size(inbox):
            break  # the lane had no more waiting: the last look below is enough
    cache.delete(flag)
    # More waiting after the slice, or a row committed after our last look (it saw the flag
    # still set and did not kick): continue behind what is queued meanwhile.
    if _next_waiting(inbox, lane, tried) is not None:
        kick(inbox, lane)
    return len(tried)


def _drain_step(inbox: Inbox, lane: Any, tried: set[int]) -> list[int]:
    """Take the lane's next waiting rows and process them; their ids ([] when none wait)."""
    taken: list[int] = []
    try:
        try:
            with transaction.atomic():
                rows = _take_waiting(inbox, lane, _step_size(inbox), tried)
                taken = [row.pk for row in rows]
                if rows and inbox.handle_batch is not None:
                    _process_batch(inbox, rows)
                elif rows:
                    _process_one(inbox, rows[0])
        except _BatchFailed:  # the step is undone: its rows one by one
            _one_by_one(inbox, taken)
    except Exception as exc:
        # As in `process`: the transaction itself broke; count the attempts on their own.
        log.exception("inbox %s: processing rows %s broke", inbox.label, taken)
        for pk in taken:
            _count_broken_attempt(inbox, pk, exc)
    return taken


def _take_waiting(
    inbox: Inbox, lane: Any, limit: int, tried: set[int], ids_only: bool = False
) -> list[InboundRequest]:
    """The lane's rows waiting now (received, due), locked with SKIP LOCKED, in id order, as
    `_waiting(_locking(...))` selects them; with `ids_only` only their ids are loaded."""
    now = timezone.now()
    return _lane_query(inbox, ids_only).take(
        [lane, InboundRequest.State.RECEIVED, now], limit, tried
    )


@functools.cache
def _lane_query(inbox: Inbox, ids_only: bool) -> prepared.WaitingRows:
    """The drain's look at a lane, written once per inbox: the ORM compiled it anew every
    step, a third of a lone event's processing CPU."""
    related, skip = inbox.related, inbox.deferred
    if ids_only:
        related = ()
        skip = tuple(f.attname for f in inbox.model._meta.concrete_fields if not f.primary_key)
    return prepared.WaitingRows(
        inbox.model,
        equal=[inbox.lane, "state"],
        not_after="next_attempt_at",
        related=related,
        skip=skip,
    )


def _step_size(inbox: Inbox) -> int:
    return inbox.batch_max if inbox.handle_batch else 1


def _waiting(rows: models.QuerySet, **where: Any) -> models.QuerySet:
    return rows.filter(
        state=InboundRequest.State.RECEIVED, next_attempt_at__lte=timezone.now(), **where
    )


def _next_waiting(inbox: Inbox, lane: Any, tried: set[int]) -> int | None:
    """A row of the lane still waiting for a drain. Rows another worker holds are skipped:
    that worker closes them or schedules their retry, and a drain kicked for them would find
    them locked too (and kick again until they are released). One statement outside any
    transaction: its SKIP LOCKED looks past held rows and keeps no lock."""
    rows = _take_waiting(inbox, lane, 1, tried, ids_only=True)
    return rows[0].pk if rows else None


# A handler ends a row early by raising one of these; the row's final state.
ENDINGS: dict[type[Exception], str] = {
    Rejected: InboundRequest.State.REJECTED,
    Permanent: InboundRequest.State.FAILED,
    Ignored: InboundRequest.State.IGNORED,
}


def _ending(exc: Exception) -> str:
    return next(state for kind, state in ENDINGS.items() if isinstance(exc, kind))


def _process(inbox: Inbox, pk: int) -> str | None:
    batch: list[int] = []
    try:
        with transaction.atomic():
            row = _locking(inbox).filter(pk=pk).first()
            if row is None or row.state != InboundRequest.State.RECEIVED:
                return None
            mates = _waiting_with(inbox, row)
            if not mates:
                return _process_one(inbox, row)
            rows = sorted([row, *mates], key=lambda r: r.pk)
            batch = [r.pk for r in rows]
            return _process_batch(inbox, rows)[row.pk]
    except _BatchFailed:
        return _one_by_one(inbox, batch).get(pk)


def _locking(inbox: Inbox, **options: Any) -> models.QuerySet:
    rows = inbox.model.objects.select_for_update(of=("self",), **options)
    if inbox.related:  # select_related() with no path would follow every foreign key
        rows = rows.select_related(*inbox.related).defer(*inbox.deferred)
    return rows


def _waiting_with(inbox: Inbox, row: InboundRequest) -> list[InboundRequest]:
    """The other rows of the row's batch that wait now and no other worker holds."""
    if inbox.handle_batch is None:
        return []
    return list(
        _waiting(
            _locking(inbox, skip_locked=True),
            **{inbox.batch_by: getattr(row, inbox.batch_by)},
        )
        .exclude(pk=row.pk)
        .order_by("pk")[: inbox.batch_max - 1]
    )


def _process_one(inbox: Inbox, row: InboundRequest) -> str:
    row.attempts += 1
    try:
        with transaction.atomic():
            state = inbox.handle(row)
    except tuple(ENDINGS) as exc:
        return close(row, _ending(exc), str(exc))
    except Exception as exc:
        log.exception("inbox %s #%s: attempt %d failed", inbox.label, row.pk, row.attempts)
        return _retry_or_fail(inbox, row, exc)
    return close(row, state)


class _BatchFailed(Exception):
    """The batch handler raised: its transaction is to be undone whole, and its rows processed
    one by one (`_one_by_one`), so that one bad row never fails its neighbours."""


def _process_batch(inbox: Inbox, rows: list[InboundRequest]) -> dict[int, str]:
    """Rows waiting together, in one go, in the caller's transaction. No savepoint of its own
    (two round trips on every step, lone rows included): if the handler raises, the caller's
    whole transaction is undone and the rows go one by one."""
    try:
        outcomes = inbox.handle_batch(rows)
        return _close_batch(inbox, rows, outcomes)
    except Exception as exc:
        log.warning(
            "inbox %s: a batch of %d failed, processing its rows one by one",
            inbox.label,
            len(rows),
            exc_info=True,
        )
        raise _BatchFailed from exc


def _one_by_one(inbox: Inbox, pks: list[int]) -> dict[int, str]:
    """Each row of an undone batch in a transaction of its own, fresh from the database (the
    failed batch may have changed the objects it was given); rows another worker took
    meanwhile, or that are no longer waiting, are left alone."""
    outcomes: dict[int, str] = {}
    for pk in sorted(pks):
        with transaction.atomic():
            row = _locking(inbox, skip_locked=True).filter(pk=pk).first()
            if row is not None and row.state == InboundRequest.State.RECEIVED:
                outcomes[pk] = _process_one(inbox, row)
    return outcomes


def _close_batch(
    inbox: Inbox, rows: list[InboundRequest], outcomes: dict[int, str | Exception]
) -> dict[int, str]:
    """Every row of the batch gets its state, in one UPDATE."""
    now = timezone.now()
    for row in rows:
        outcome = outcomes[row.pk]
        row.attempts += 1
        row.processed_at = now
        if isinstance(outcome, Exception):
            row.state, row.error = _ending(outcome), str(outcome)[:ERROR_CHARS]
        else:
            row.state, row.error = outcome, ""
    fields = ["state", "error", "processed_at", "attempts", *inbox.batch_fields]
    bulk.bulk_update(rows, fields)
    return {row.pk: row.state for row in rows}


def close(row: InboundRequest, state: str, error: str = "") -> str:
    row.state, row.error, row.processed_at = state, error[:ERROR_CHARS], timezone.now()
    row.save()
    return state


def _retry_or_fail(inbox: Inbox, row: InboundRequest, exc: Exception) -> str:
    error = f"attempt {row.attempts}: {exc!r}"
    if row.attempts >= inbox.max_attempts:
        return close(row, InboundRequest.State.FAILED, f"gave up after {error}")
    delay = _backoff(inbox, row.attempts)
    row.error = error[:ERROR_CHARS]
    row.next_attempt_at = timezone.now() + timedelta(seconds=delay)
    row.save()
    enqueue(row, countdown=delay)
    return row.state


def _backoff(inbox: Inbox, attempts: int) -> float:
    return get_exponential_backoff_interval(
        inbox.backoff_s, attempts - 1, inbox.backoff_max_s, full_jitter=False
    )


def _count_broken_attempt(inbox: Inbox, pk: int, exc: Exception) -> None:
    try:
        with transaction.atomic():
            row = inbox.model.objects.select_for_update().filter(pk=pk).first()
            if row is not None and row.state == InboundRequest.State.RECEIVED:
                row.attempts += 1
                _retry_or_fail(inbox, row, exc)
    except Exception:
        log.exception("inbox %s #%s: could not record the failed attempt", inbox.label, pk)


def reprocess(rows: Iterable[InboundRequest]) -> int:
    """ "Process again": back to `received` with a fresh attempt budget, queued now. The
    handler parses the stored body again, so a parser fix takes effect."""
    count = 0
    for row in rows:
        type(row).objects.filter(pk=row.pk).update(
            state=InboundRequest.State.RECEIVED,
            attempts=0,
            error="",
            next_attempt_at=timezone.now(),
            processed_at=None,
        )
        row.state = InboundRequest.State.RECEIVED
        kick_after_commit(row)
        count += 1
    return count


def sweep() -> dict[str, int]:
    """Drain again the lanes of every inbox whose rows waited past their time (a lost task,
    a flag that outlived its drain); returns the waiting rows found per inbox."""
    due_before = timezone.now() - timedelta(seconds=settings.INBOX_STUCK_AFTER_S)
    found = {}
    for inbox in INBOXES.values():
        stuck = inbox.model.objects.filter(
            state=InboundRequest.State.RECEIVED, next_attempt_at__lt=due_before
        )
        lanes = list(
            stuck.values(inbox.lane).annotate(rows=models.Count("pk")).order_by()[:SWEEP_BATCH]
        )
        for lane in lanes:
            kick(inbox, lane[inbox.lane], force=True)
        if lanes:
            found[inbox.label] = sum(lane["rows"] for lane in lanes)
    return found


def model_of(label: str) -> type[InboundRequest]:
    return apps.get_model(label)


# ---------------------------------------------------------------- reading stored bodies

FORM = "application/x-www-form-urlencoded"


def parse_body(body: str, content_type: str) -> dict[str, Any]:
    """A stored form (bracketed field names) or JSON body as a nested dict; Rejected when it
    is neither."""
    if _kind(content_type) == FORM:
        try:
            return parse_bracketed(parse_qsl(body, keep_blank_values=True))
        except FormDataError as exc:
            raise Rejected(str(exc)) from None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise Rejected("body is not a JSON object or form fields") from None
    if not isinstance(document, dict):
        raise Rejected("body is not a JSON object")
    return document


def _kind(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


# Bodies kept byte for byte: processing can parse them again as they came.
STORED_AS_SENT = {FORM, "application/json"}


def storable_body(body: bytes, content_type: str, parsed: Any) -> tuple[bytes, str]:
    """The body to keep and its type: as sent when it is a form or JSON, else (multipart) the
    equivalent form of what the view parsed, which `parse_body` can read again."""
    kind = _kind(content_type)
    if kind in STORED_AS_SENT:
        return body, kind
    return php_query(parsed).encode(), FORM


# ---------------------------------------------------------------- redaction


def redact(body: bytes, content_type: str, secret_fields: Iterable[str]) -> str:
    """The body as text with the values of `secret_fields` masked, found by parsing it.

    Field names use the bracket form for nesting in both encodings: `auth[access_token]`
    names the form field of that name and `{"auth": {"access_token": ...}}` in JSON. A body
    that does not parse has no fields to mask and is kept as sent (only authenticated
    requests are stored, and those carry their secrets in fields, not in broken bodies)."""
    secrets = frozenset(secret_fields)
    text = body.decode("utf-8", errors="replace")
    kind = _kind(content_type)
    if kind == FORM:
        return redact_query(text, secrets)
    if kind.endswith("json"):
        return _redact_json(text, secrets)
    return text


def redact_query(text: str, secret_fields: Iterable[str]) -> str:
    secrets = frozenset(secret_fields)
    if not text or not secrets:
        return text  # nothing to mask: no need to parse (most webhooks have no query at all)
    # Field by field as parse_qsl splits them ("&"; the name decoded as it decodes it), the
    # secrets' values replaced and every other byte kept as sent: no decoding and re-encoding
    # of the values (a tenth of a Bitrix24 event's acknowledgement).
    fields = text.split("&")
    masked = False
    for n, field in enumerate(fields):
        name, equals, _ = field.partition("=")
        if equals and unquote_plus(name) in secrets:
            fields[n], masked = f"{name}={MASK}", True
    return "&".join(fields) if masked else text


def _redact_json(text: str, secrets: frozenset[str]) -> str:
    if not secrets:
        return text  # nothing to mask: no need to parse (or to walk a hostile nesting)
    try:
        document = json.loads(text)
        masked, changed = _mask(document, "", secrets)
    except (ValueError, RecursionError):
        return text  # too deep to walk: rejected by the provider, kept as sent
    return json.dumps(masked, ensure_ascii=False) if changed else text


def _mask(node: Any, path: str, secrets: frozenset[str]) -> tuple[Any, bool]:
    if isinstance(node, dict):
        out, changed = {}, False
        for key, value in node.items():
            name = f"{path}[{key}]" if path else str(key)
            if name in secrets:
                out[key], changed = MASK, True
            else:
                out[key], sub = _mask(value, name, secrets)
                changed = changed or sub
        return out, changed
    if isinstance(node, list):
        items = [_mask(value, f"{path}[{i}]", secrets) for i, value in enumerate(node)]
        return [v for v, _ in items], any(c for _, c in items)
    return node, False
