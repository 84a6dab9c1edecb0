"""The Bitrix24 command outbox and its per-portal dispatcher.

Every REST call the app wants is a B24Command row, written in the caller's transaction.
The dispatcher claims ready rows (SKIP LOCKED, so several workers share a portal safely),
waits for a slot in the shared leaky bucket, and sends them: one command alone when that is
all there is (lowest latency), otherwise a `batch` of up to 50 (highest throughput). Commands
of one owner (`owner_key`, e.g. "call:42") leave strictly in order; a command can use an
earlier one's result through `ref()`, which becomes `$result[...]` inside a batch.
"""

import contextlib
import functools
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from celery import current_app
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, InterfaceError, OperationalError, connections, transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bitrixapp import bulk, prepared, ratelimit, rest
from bitrixapp.formdata import Raw, php_query
from bitrixapp.models import B24Command, Portal
from bitrixapp.rest import Outcome

log = logging.getLogger(__name__)

State = B24Command.State
BATCH_LIMIT = 50  # Bitrix24's own maximum per batch
SOLO_METHODS = {"batch"}  # never inside a batch (nested batch is refused)
SOLO_PARAM_CHARS = 100_000  # big payloads (recordings) go alone: a batch must finish in 60 s
# A claimed row returns to the queue if its dispatcher dies. The lease is short so that a
# killed dispatcher's commands go again within seconds; a live one renews it every
# HEARTBEAT_S while its request is in flight (a Bitrix24 request may take up to ~65 s).
LEASE = timedelta(seconds=15)
HEARTBEAT_S = 5.0
DISPATCH_SLICE_S = 2.0  # one task serves a portal this long, then queues its continuation
KICK_FLAG_S = 10  # a kick's "a dispatcher is on its way" flag lasts this long at most
# Bitrix24 unreachable: after this many requests in a row failed as a whole (network, 5xx),
# the portal's dispatching pauses between tries (doubling from 1 s up to OUTAGE_PAUSE_MAX_S)
# instead of spending its request budget on an outage; the first answer ends the pause.
OUTAGE_AFTER_FAILURES = 3
OUTAGE_PAUSE_MAX_S = 5.0

ResultHandler = Callable[[B24Command], None]
RESULT_HANDLERS: dict[str, ResultHandler] = {}
MANY_HANDLERS: set[str] = set()  # names of handlers that take a list of commands


# The last word on a command's params, by method, just before it is sent: a command may wait
# long in the queue (a Bitrix24 outage) and what was right when it was queued may not be now.
# A hook gets every command of that method in the request at once, with its params (so that
# it looks up what it needs in one statement, not one per command of a batch of 50), and
# returns for each, in the same order, the params to send, or None when the command is no
# longer worth sending (it is then cancelled, never sent). Feature apps register them; this
# layer knows none.
Outgoing = list[tuple[B24Command, dict[str, Any]]]
BeforeSend = Callable[[Outgoing], list[dict[str, Any] | None]]
BEFORE_SEND: dict[str, BeforeSend] = {}
NOT_SENT = "no longer worth sending when its turn came (e.g. a card for a call that has ended)"


def _registry_entry(table: dict[str, Any], key: str, what: str) -> Callable[[Any], Any]:
    """A decorator putting a function in `table` under `key`; a second one is a start-up error
    (it would silently replace the first)."""

    def register(fn: Any) -> Any:
        if key in table:
            raise RuntimeError(f"{what} {key!r} is registered twice")
        table[key] = fn
        return fn

    return register


def before_send(method: str) -> Callable[[BeforeSend], BeforeSend]:
    """Register a function that finalizes the params of `method` commands at send time."""
    return _registry_entry(BEFORE_SEND, method.lower(), "a before-send hook for")


def result_handler(name: str, *, many: bool = False) -> Callable[[Any], Any]:
    """Register a function called (in the settling transaction) when a command is done or
    failed; it finds its objects through `command.context`.

    `many=True`: the function takes a list of commands instead, all of them done or failed,
    so that a batch of 50 answers is recorded in a few statements instead of 50 times a few
    (a single command gets a list of one)."""
    register = _registry_entry(RESULT_HANDLERS, name, "the result handler")
    if many:
        MANY_HANDLERS.add(name)
    return register


# ---------------------------------------------------------------- enqueueing


def ref(command: B24Command, *path: str | int) -> dict[str, Any]:
    """A param value taken from `command`'s result, e.g. `ref(register, "CALL_ID")`."""
    return {"$ref": command.pk, "path": list(path)}


def enqueue(
    portal: Portal,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    owner_key: str = "",
    depends_on: B24Command | None = None,
    handler: str = "",
    context: dict[str, Any] | None = None,
) -> B24Command:
    """Persist a command (in the caller's transaction) and wake the dispatcher after commit.

    `context` is what its result handler and send-time hook need to find their objects again
    (e.g. `{"call": 42}`); it is never sent."""
    if depends_on is not None:
        # Same owner = same ordered lane, so the dependency is always sent first.
        if owner_key and owner_key != depends_on.owner_key:
            raise ValueError("a command and its dependency must share the owner_key")
        owner_key = depends_on.owner_key
    if handler and handler not in RESULT_HANDLERS:
        raise ValueError(f"unknown result handler {handler!r}")
    command = B24Command(
        portal=portal,
        method=method,
        params=params or {},
        owner_key=owner_key,
        depends_on=depends_on,
        handler=handler,
        context=context or {},
    )
    together = getattr(_inserting, "together", None)
    if together is None:
        command.save(force_insert=True)
    else:
        together.add(command)
    kick_after_commit(portal.pk)
    return command


_inserting = threading.local()


@contextlib.contextmanager
def inserted_together(expected: int) -> Iterator[None]:
    """Commands enqueued inside the block are inserted in one statement when it ends (in the
    caller's transaction), not one INSERT each: a burst's 50 registers were a third of its
    worker's time.

    Their ids are drawn from the table's sequence when the first one is enqueued (about
    `expected` per statement), so refs, `depends_on` and the rows that point at them work as
    usual. Commands of one owner are sent in id order, so take every lock that orders an
    owner's commands (its call's row) before the block's first enqueue: ids drawn after the
    lock are higher than those of any transaction that held it before. Nested blocks join the
    outer one; on SQLite (`make run`) each command is inserted at once, as outside a block.
    """
    if getattr(_inserting, "together", None) is not None or not _has_sequences():
        yield
        return
    together = _Together(expected)
    _inserting.together = together
    try:
        yield
        together.insert()
    finally:
        _inserting.together = None


def _has_sequences() -> bool:
    return transaction.get_connection().vendor == "postgresql"


class _Together:
    """The commands of one `inserted_together` block, with ids drawn ahead."""

    def __init__(self, expected: int) -> None:
        self.expected = max(1, expected)
        self.commands: list[B24Command] = []
        self.ids: list[int] = []

    def add(self, command: B24Command) -> None:
        if not self.ids:
            self.ids = _draw_ids(self.expected)
        command.pk = self.ids.pop(0)
        self.commands.append(command)

    def insert(self) -> None:
        if self.commands:
            B24Command.objects.bulk_create(self.commands)


def _draw_ids(count: int) -> list[int]:
    """`count` new ids from the commands' sequence, ascending, in one statement."""
    table, column = B24Command._meta.db_table, B24Command._meta.pk.column
    with transaction.get_connection().cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [table, column, count],
        )
        return sorted(row[0] for row in cursor.fetchall())


def kick_after_commit(portal_id: int) -> None:
    """Kick once the transaction commits: once per portal and savepoint, not once per command
    (a thousand commands in one transaction would otherwise be a thousand Redis round trips).
    Robust: if the broker is down the rows are still committed and the sweeper sends them."""
    conn = transaction.get_connection()
    if not conn.in_atomic_block:
        _kick_quietly(portal_id)
        return
    block = conn.atomic_blocks[0]
    seen = getattr(conn, "_b24_kicks", None)
    if seen is None or seen[0] is not block:
        seen = conn._b24_kicks = (block, set())
    marker = (portal_id, tuple(conn.savepoint_ids))
    if marker not in seen[1]:
        seen[1].add(marker)
        transaction.on_commit(lambda: kick(portal_id), robust=True)


def _kick_quietly(portal_id: int, force: bool = False) -> None:
    try:
        kick(portal_id, force=force)
    except Exception:
        log.exception("could not queue the dispatcher for portal %s; the sweeper will", portal_id)


def kick(portal_id: int, countdown: float = 0, force: bool = False) -> None:
    """Make sure a dispatcher task for the portal is queued (one queued task is enough);
    `force` queues one even if another seems to be on its way (the sweeper's safety net)."""
    if force:
        cache.delete(_kick_key(portal_id))
    if countdown > 0:
        _wake_later(portal_id, countdown)
    elif cache.add(_kick_key(portal_id), 1, timeout=KICK_FLAG_S):
        current_app.send_task(
            "bitrixapp.tasks.dispatch_portal", args=[portal_id], kwargs={"flagged_at": time.time()}
        )


def _wake_later(portal_id: int, countdown: float) -> None:
    """A timed dispatcher run; skipped when an earlier one is already on its way (that run
    schedules whatever is still waiting), so repeated runs do not pile up timers."""
    at = time.time() + countdown
    key = f"b24:wake:{portal_id}"
    pending = cache.get(key)
    if pending is not None and time.time() < pending <= at:
        return
    cache.set(key, at, timeout=int(countdown) + 5)
    current_app.send_task("bitrixapp.tasks.dispatch_portal", args=[portal_id], countdown=countdown)


# ---------------------------------------------------------------- dispatching


def dispatch(
    portal_id: int, slice_s: float = DISPATCH_SLICE_S, flagged_at: float | None = None
) -> None:
    """Send this portal's ready commands for one short slice of a worker's time.

    It never sleeps in the worker: with the bucket empty it schedules a timed run and returns,
    and after a slice it queues its continuation behind the other tasks, so call events on a
    shared worker never wait long behind it. While it runs, the kick flag stays set: new
    commands do not start a second dispatcher, this loop picks them up. `flagged_at`: when
    the kick that queued this run set the flag (time.time()).
    """
    run_flag_s = int(slice_s) + 5  # a dispatcher killed mid-run blocks kicks only this long
    if flagged_at is None or time.time() - flagged_at > KICK_FLAG_S - run_flag_s:
        # A timed run, or a kick's flag too old to outlive this slice. Otherwise the kick set
        # it moments ago, and setting it again was a Redis round trip on the idle path.
        cache.set(_kick_key(portal_id), 1, timeout=run_flag_s)
    deadline = time.monotonic() + slice_s
    portal = None
    while True:
        portal = _sending_portal(portal_id)
        if portal is None or not portal.can_send or not portal.has_ready:
            break
        if time.monotonic() >= deadline:
            cache.delete(_kick_key(portal_id))
            kick(portal_id)  # more to send: continue after what is queued meanwhile
            return
        wait = ratelimit.take(portal.member_id, portal.plan)  # an outage's pause included
        if wait:
            kick(portal_id, countdown=wait)  # the timed run takes over (the flag stays set)
            return
        commands = claim(portal)
        if not commands:  # every ready row waits behind an earlier one of its owner
            break
        try:
            send(portal, commands)
        except Exception as exc:  # one bad command must not stop the portal's others
            _send_crashed(portal, commands, exc)
    _end_run(portal_id, portal)


def _end_run(portal_id: int, portal: Portal | None) -> None:
    cache.delete(_kick_key(portal_id))
    _schedule_next(portal)


def _kick_key(portal_id: int) -> str:
    return f"b24:kick:{portal_id}"


def _note_reachability(portal: Portal, outcome: Outcome) -> None:
    """A whole request failed (network, 5xx) or was answered: count failures in a row, and
    past OUTAGE_AFTER_FAILURES hold the portal's sending for a growing while (a hold of the
    rate limiter, so that the dispatcher learns of it with the request slot it takes)."""
    key = f"b24:outage:{portal.pk}"
    with _unless_redis_is_down("outage tracking"):
        if outcome is not Outcome.TRANSIENT:
            # Sending at all means no hold was in force: only the count of failures ends.
            cache.delete(f"{key}:failures")
            return
        cache.add(f"{key}:failures", 0, timeout=3600)
        failures = cache.incr(f"{key}:failures")
        if failures >= OUTAGE_AFTER_FAILURES:
            pause = get_exponential_backoff_interval(
                1, failures - OUTAGE_AFTER_FAILURES, OUTAGE_PAUSE_MAX_S
            )
            ratelimit.hold(portal.member_id, pause)


def _sending_portal(portal_id: int) -> Portal | None:
    """The portal, with whether a command of it may go now (`has_ready`), in one statement
    written once; of its tokens only the access token a request carries (each token loaded
    is a decrypt)."""
    return _portal_with_ready().get(portal_id, [State.PENDING, timezone.now()])


@functools.cache
def _portal_with_ready() -> prepared.RowLookup:
    ready = prepared.Conditions(B24Command, equal=["state"], not_after="next_attempt_at")
    return prepared.RowLookup(
        Portal,
        "id",
        skip=Portal.secrets_except("access_token"),
        has=prepared.HasWaiting("has_ready", B24Command, "portal", ready),
    )


def _unblocked(portal: Portal) -> QuerySet[B24Command]:
    """Pending rows that head their owner's lane (nothing earlier of the owner still open)."""
    earlier_open = B24Command.objects.filter(
        portal=portal,
        owner_key=OuterRef("owner_key"),
        id__lt=OuterRef("id"),
        state__in=B24Command.OPEN_STATES,
    ).exclude(owner_key="")
    return B24Command.objects.filter(portal=portal, state=State.PENDING).filter(
        ~Exists(earlier_open)
    )


def _schedule_next(portal: Portal | None) -> None:
    """One look, after the run's flag is cleared, at the first command that heads its
    owner's lane: one that may go now was committed after our last look (it saw the flag
    still set and was not kicked): kick; one waiting on a backoff or a method pause gets a
    timed run at its time."""
    if portal is None or not portal.can_send:
        return
    first = (
        _unblocked(portal)
        .order_by("next_attempt_at")
        .values_list("next_attempt_at", flat=True)
        .first()
    )
    if first is None:
        return
    wait = (first - timezone.now()).total_seconds()
    if wait <= 0:
        kick(portal.pk)
    else:
        kick(portal.pk, countdown=max(0.05, wait))


CLAIMED_FIELDS = ("state", "attempts", "sent_at", "lease_until", "first_sent_at")


def claim(portal: Portal, limit: int | None = None) -> list[B24Command]:
    """Lock and mark SENDING the next commands that may go now, keeping per-owner order."""
    limit = min(limit or settings.BITRIX24_BATCH_MAX, BATCH_LIMIT)
    now = timezone.now()
    with transaction.atomic():
        rows = _pending().take([portal.pk, State.PENDING, now], limit * 4)
        if not rows:
            return []
        rows = _fail_orphans(rows)
        picked = _pick(rows, _open_ids_by_owner(portal, rows), set(portal.active_pauses()), limit)
        # The rows are locked: their new values are computed here and written in one
        # statement of SQL written once (bulk), not an UPDATE the ORM compiles per claim.
        for command in picked:
            command.state, command.attempts = State.SENDING, command.attempts + 1
            command.sent_at, command.lease_until = now, now + LEASE
            command.first_sent_at = command.first_sent_at or now
        bulk.bulk_update(picked, CLAIMED_FIELDS)
    return picked


@functools.cache
def _pending() -> prepared.WaitingRows:
    """The claim's look at the portal's pending commands (locked, SKIP LOCKED, in id order):
    SQL written once instead of compiled by the ORM on every claim."""
    return prepared.WaitingRows(B24Command, equal=["portal", "state"], not_after="next_attempt_at")


def _open_ids_by_owner(portal: Portal, rows: list[B24Command]) -> dict[str, list[int]]:
    owners = {c.owner_key for c in rows if c.owner_key}
    open_ids: dict[str, list[int]] = {key: [] for key in owners}
    if not owners:
        return open_ids
    for key, pk in _open_of_owners().rows([portal.pk], [sorted(owners), B24Command.OPEN_STATES]):
        open_ids[key].append(pk)
    return open_ids


@functools.cache
def _open_of_owners() -> prepared.Select:
    """The open commands of some owners of a portal, in id order (what the claim checks a
    pending command's owner for): SQL written once, not compiled on every claim."""
    return prepared.Select(
        B24Command, ["owner_key", "id"], equal=["portal"], among=["owner_key", "state"]
    )


def _fail_orphans(rows: list[B24Command]) -> list[B24Command]:
    """Commands whose dependency failed for good can never go: fail them, keep the rest."""
    dep_ids = {c.depends_on_id for c in rows if c.depends_on_id}
    if not dep_ids:
        return rows  # the usual claim: no query to compile
    dead = set(
        B24Command.objects.filter(
            pk__in=dep_ids, state__in=(State.FAILED, State.CANCELLED)
        ).values_list("id", flat=True)
    )
    alive = []
    for command in rows:
        if command.depends_on_id in dead:
            _finish(
                command,
                State.FAILED,
                error="DEPENDENCY_FAILED",
                description=f"command #{command.depends_on_id} it needs failed",
            )
        else:
            alive.append(command)
    return alive


def _pick(
    rows: list[B24Command], open_ids: dict[str, list[int]], paused: set[str], limit: int
) -> list[B24Command]:
    picked: list[B24Command] = []
    picked_ids: set[int] = set()
    blocked: set[str] = set()
    done_deps = _done_ids({c.depends_on_id for c in rows if c.depends_on_id})
    for command in rows:
        key = command.owner_key
        if key in blocked:
            continue
        waits_for_earlier = key and any(
            i < command.pk and i not in picked_ids for i in open_ids[key]
        )
        dep = command.depends_on_id
        dep_not_ready = dep and dep not in done_deps and dep not in picked_ids
        solo = _is_solo(command)
        if (
            command.method.lower() in paused
            or waits_for_earlier
            or dep_not_ready
            or (solo and picked)
        ):
            if key:
                blocked.add(key)
            continue
        picked.append(command)
        picked_ids.add(command.pk)
        if solo or len(picked) >= limit:
            break
    return picked


def _done_ids(ids: set[int]) -> set[int]:
    if not ids:
        return set()
    return set(B24Command.objects.filter(pk__in=ids, state=State.DONE).values_list("id", flat=True))


def _is_solo(command: B24Command) -> bool:
    return command.method.lower() in SOLO_METHODS or len(str(command.params)) > SOLO_PARAM_CHARS


# ---------------------------------------------------------------- sending


def send(portal: Portal, commands: list[B24Command]) -> None:
    log.info("portal %s: sending %d command(s)", portal.member_id, len(commands))
    with _Heartbeat(commands):
        if len(commands) == 1:
            _send_single(portal, commands[0])
        else:
            _send_batch(portal, commands)


class _Heartbeat:
    """Renews the lease of claimed commands while their request is in flight, so that only a
    dead dispatcher's commands are released, never a slow but live one's. A thread of its
    own: the dispatcher itself is blocked in the HTTP request. It touches the database only
    when a send outlasts HEARTBEAT_S (most take milliseconds)."""

    def __init__(self, commands: list[B24Command]):
        self.ids = [c.pk for c in commands]
        self.claimed_at = commands[0].sent_at
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="b24-lease", daemon=True)

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            while not self._stop.wait(HEARTBEAT_S):
                try:
                    _ours(self.ids, self.claimed_at).update(lease_until=timezone.now() + LEASE)
                except DatabaseError:
                    log.warning("could not renew the lease of commands %s", self.ids)
        finally:
            connections.close_all()  # this thread's own connection, if it opened one


def _ours(ids: Iterable[int], claimed_at: datetime | None) -> QuerySet[B24Command]:
    """The rows of this claim still in our hands: a row whose lease expired may have been
    released and claimed again (a new sent_at), and then its new dispatcher settles it."""
    return B24Command.objects.filter(pk__in=list(ids), state=State.SENDING, sent_at=claimed_at)


def _lock_ours(commands: list[B24Command]) -> set[int]:
    # NO KEY UPDATE: settling changes no key, and a plain FOR UPDATE would also block the
    # foreign-key check of a call event inserting a command that depends on one of these
    # (say a finish after this register) while it holds the call's lock, which the result
    # handler then waits for: a deadlock, and the handler's work (the CALL_ID) lost.
    return set(
        _ours([c.pk for c in commands], commands[0].sent_at)
        .select_for_update(no_key=True)
        .values_list("id", flat=True)
    )


def _ready_to_send(
    portal: Portal, commands: list[B24Command], batch_keys: dict[int, str]
) -> Outgoing:
    """The commands of one request that go, with their final params, in order. A command
    whose params cannot be made (a broken ref, or any bug in resolving them) fails, and one
    its send-time hook finds no longer worth sending is cancelled; either way the later
    commands of its owner wait for the next round (nothing overtakes within an owner)."""
    resolved: Outgoing = []
    broken: set[str] = set()
    for command in commands:
        if _held_back(command, broken):
            continue
        params = _resolved(portal, command, batch_keys)
        if params is None:
            broken.add(command.owner_key)
        else:
            resolved.append((command, params))
    ready: Outgoing = []
    cancelled: set[str] = set()
    for (command, _), params in zip(resolved, _before_send(resolved), strict=True):
        if _held_back(command, cancelled):
            continue
        if params is None:
            with transaction.atomic():
                _finish(command, State.CANCELLED, error="NOT_SENT", description=NOT_SENT)
            cancelled.add(command.owner_key)
        else:
            ready.append((command, params))
    return ready


def _held_back(command: B24Command, owners: set[str]) -> bool:
    """Requeue (untouched, no attempt counted) a command behind one of `owners`' failures."""
    if not (command.owner_key and command.owner_key in owners):
        return False
    with transaction.atomic():
        _requeue(command, delay_s=0, count_attempt=False)
    return True


def _resolved(
    portal: Portal, command: B24Command, batch_keys: dict[int, str]
) -> dict[str, Any] | None:
    """The command's params with its refs resolved, or None (it is then failed)."""
    try:
        with transaction.atomic():
            return resolve(command, batch_keys)
    except LookupError as exc:
        with transaction.atomic():
            _finish(command, State.FAILED, error="DEPENDENCY_RESULT_MISSING", description=str(exc))
    except Exception as exc:
        _crashed(portal, command, exc, "preparing the request", Outcome.PERMANENT)
    return None


def _before_send(outgoing: Outgoing) -> list[dict[str, Any] | None]:
    """Each command's params after its method's send-time hook, in order."""
    final: list[dict[str, Any] | None] = [params for _, params in outgoing]
    by_method: dict[str, list[int]] = {}
    for i, (command, _) in enumerate(outgoing):
        by_method.setdefault(command.method.lower(), []).append(i)
    for method, indexes in by_method.items():
        hook = BEFORE_SEND.get(method)
        if hook is None:
            continue
        try:
            decided = hook([outgoing[i] for i in indexes])
            if len(decided) != len(indexes):
                raise ValueError(f"{len(decided)} answers for {len(indexes)} commands")
        except Exception:  # a hook bug must not stall the owners' lanes: send what was queued
            log.exception("before-send hook for %s failed on %d command(s)", method, len(indexes))
            continue
        for i, params in zip(indexes, decided, strict=True):
            final[i] = params
    return final


def _send_single(portal: Portal, command: B24Command) -> None:
    ready = _ready_to_send(portal, [command], {})
    if not ready:
        return
    [(command, params)] = ready
    portal, reply = rest.call_with_refresh(portal, command.method, params)
    _note_reachability(portal, reply.outcome)
    _track_operating(portal, command.method, reply.time)
    with transaction.atomic():
        if command.pk not in _lock_ours([command]):
            return
        part = _Reply.of(reply)
        if reply.outcome is Outcome.OK:  # recorded as a batch's answers are: one way
            _settle_done(portal, [(command, part)])
        else:
            _settle_guarded(portal, command, reply.outcome, part)


def _send_batch(portal: Portal, commands: list[B24Command]) -> None:
    keys = {c.pk: f"c{c.pk}" for c in commands}
    ready = _ready_to_send(portal, commands, keys)
    if not ready:
        return
    cmd = {keys[c.pk]: f"{c.method}?{php_query(params)}" for c, params in ready}
    commands = [c for c, _ in ready]
    # halt=1: Bitrix24 stops at the first failing command, so nothing overtakes a failure
    # of its own owner; the commands after it did not run and simply go again.
    portal, reply = rest.call_with_refresh(portal, "batch", {"halt": 1, "cmd": cmd})
    _note_reachability(portal, reply.outcome)
    batch_id = uuid.uuid4().hex
    with transaction.atomic():
        ours = _lock_ours(commands)
        commands = [c for c in commands if c.pk in ours]
        if reply.outcome is not Outcome.OK:
            for command in commands:
                _settle_guarded(portal, command, reply.outcome, _Reply.of(reply, batch_id))
            return
        _settle_batch(portal, commands, keys, reply, batch_id)


# ---------------------------------------------------------------- crashes while sending

# Exceptions that say "the infrastructure hiccuped" (database connection, network, Redis):
# the command is retried with backoff. Any other exception is a bug or data the app cannot
# handle; the same command would crash again, so it fails at once with the reason kept.
TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    OSError,
    RedisConnectionError,
    RedisTimeoutError,
)
APP_EXCEPTION = "APP_EXCEPTION"  # error_code of a command the app itself crashed on


def _outcome_of(exc: BaseException) -> Outcome:
    return Outcome.TRANSIENT if isinstance(exc, TRANSIENT_EXCEPTIONS) else Outcome.PERMANENT


def _settle_guarded(portal: Portal, command: B24Command, outcome: Outcome, reply: "_Reply") -> None:
    """settle() in a savepoint: if recording this answer crashes (say a DataError on a result
    PostgreSQL will not store), only this command is classified; its batch mates are kept."""
    try:
        with transaction.atomic():
            settle(portal, command, outcome, reply=reply)
    except Exception as exc:
        _crashed(portal, command, exc, "recording the answer of Bitrix24", _outcome_of(exc))


def _crashed(
    portal: Portal, command: B24Command, exc: Exception, stage: str, outcome: Outcome
) -> None:
    """Classify a command the app crashed on; it is never left in `sending`."""
    log.exception("command %s (%s): crashed while %s", command.pk, command.method, stage)
    with transaction.atomic():
        fresh = B24Command.objects.select_for_update().filter(pk=command.pk).first()
        if fresh is None or fresh.state != State.SENDING or fresh.sent_at != command.sent_at:
            return  # settled already, or released and claimed by another dispatcher since
        reply = _Reply(0, 0)
        reply.error = APP_EXCEPTION
        reply.description = f"crashed while {stage}: {type(exc).__name__}: {exc}"
        settle(portal, fresh, outcome, reply=reply)


def _send_crashed(portal: Portal, commands: list[B24Command], exc: Exception) -> None:
    """send() itself raised: its request may or may not have reached Bitrix24. Classify the
    commands of the claim still in `sending`; if even that fails (database down), their
    lease runs out and the sweeper returns them to the queue."""
    stage = "sending (the request may have reached Bitrix24)"
    try:
        for command in commands:
            _crashed(portal, command, exc, stage, _outcome_of(exc))
    except Exception:
        log.exception("could not record the crash of commands %s", [c.pk for c in commands])


def _php_map(value: Any) -> dict[str, Any]:
    # PHP serializes an empty array as [] rather than {}.
    return value if isinstance(value, dict) else {}


def _settle_batch(
    portal: Portal,
    commands: list[B24Command],
    keys: dict[int, str],
    reply: rest.RestResponse,
    batch_id: str,
) -> None:
    body = _php_map(reply.result)
    results, errors = _php_map(body.get("result")), _php_map(body.get("result_error"))
    times = _php_map(body.get("result_time"))
    halted = False
    done: list[tuple[B24Command, _Reply]] = []
    for command in commands:
        key = keys[command.pk]
        _track_operating(portal, command.method, _php_map(times.get(key)))
        if halted and key not in results and key not in errors:
            _requeue(command, delay_s=0, count_attempt=False)  # never ran: halt=1 stopped it
            continue
        part = _Reply(reply.http_status, reply.duration_ms, batch_id)
        if key in errors:
            err = _php_map(errors[key])
            part.error = str(err.get("error") or "ERROR")
            part.description = str(err.get("error_description") or "")
            outcome, halted = rest.classify(part.error, 400), True
        elif key in results:
            part.result, outcome = results[key], Outcome.OK
        else:
            part.error, part.description = "BATCH_NO_ANSWER", "batch answered nothing for it"
            outcome = Outcome.TRANSIENT
        if outcome is Outcome.OK:
            done.append((command, part))
        else:
            _settle_guarded(portal, command, outcome, part)
    _settle_done(portal, done)


# Columns a successful answer writes (B24Command).
DONE_FIELDS = (
    "state",
    "result",
    "lease_until",
    "finished_at",
    "http_status",
    "duration_ms",
    "batch_id",
    "error_code",
    "error_description",
)


def _settle_done(portal: Portal, done: list[tuple[B24Command, "_Reply"]]) -> None:
    """The successful commands of a request (a batch's, or a single one), recorded in one
    UPDATE and their result handlers run together (one call per `many` handler). If the bulk
    record fails (say a result PostgreSQL will not store), each is settled on its own so only
    the bad one is hit."""
    if not done:
        return
    now = timezone.now()
    try:
        with transaction.atomic():
            for command, part in done:
                command.state, command.result = State.DONE, part.result
                command.lease_until, command.finished_at = None, now
                command.http_status = part.http_status or None
                command.duration_ms, command.batch_id = part.duration_ms, part.batch_id
                command.error_code = command.error_description = ""
            bulk.bulk_update([c for c, _ in done], DONE_FIELDS)
    except Exception:
        log.warning("bulk settle of %d commands failed; one by one", len(done), exc_info=True)
        for command, part in done:
            _settle_guarded(portal, command, Outcome.OK, part)
        return
    by_handler: dict[str, list[B24Command]] = {}
    for command, _ in done:
        by_handler.setdefault(command.handler, []).append(command)
    for name, group in by_handler.items():
        _run_handlers(name, group)


class _Reply:
    """What one command got back, from a single call or from its part of a batch."""

    def __init__(self, http_status: int, duration_ms: int, batch_id: str = ""):
        self.http_status = http_status
        self.duration_ms = duration_ms
        self.batch_id = batch_id
        self.result: Any = None
        self.error = ""
        self.description = ""

    @classmethod
    def of(cls, reply: rest.RestResponse, batch_id: str = "") -> "_Reply":
        part = cls(reply.http_status, reply.duration_ms, batch_id)
        part.result, part.error, part.description = (
            reply.result,
            reply.error,
            reply.error_description,
        )
        return part


def resolve(command: B24Command, batch_keys: dict[int, str]) -> dict[str, Any]:
    """The params with every `ref()` replaced: a value, or `$result[..]` within the same batch."""

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            if "$ref" in value:
                return _deref(int(value["$ref"]), value.get("path") or [], batch_keys)
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(command.params)


def _deref(dep_id: int, path: list, batch_keys: dict[int, str]) -> Any:
    if dep_id in batch_keys:
        return Raw(f"$result[{batch_keys[dep_id]}]" + "".join(f"[{p}]" for p in path))
    value = B24Command.objects.values_list("result", flat=True).filter(pk=dep_id).first()
    if value is None and not B24Command.objects.filter(pk=dep_id).exists():
        raise LookupError(f"command #{dep_id} it refers to no longer exists")
    for part in path:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError) as exc:
            raise LookupError(f"result of command #{dep_id} has no {path!r}") from exc
    return value


# ---------------------------------------------------------------- settling


@contextlib.contextmanager
def _unless_redis_is_down(what: str) -> Iterator[None]:
    """Between Bitrix24's answer and its record only the database may be required.

    The operating budget and the limiter live in Redis; they are hints. If Redis is gone
    (restarted, lost) and this raised, the answer would not be recorded, the command would
    stay `sending` and go to Bitrix24 again when its lease expires: a second register or
    finish caused by a Redis restart. So the hint is skipped and the answer recorded."""
    try:
        yield
    except Exception as exc:
        log.warning("%s not updated, Redis unavailable: %r", what, exc)


def settle(portal: Portal, command: B24Command, outcome: Outcome, *, reply: _Reply) -> None:
    """Record what happened to a sent command and decide what comes next for it."""
    command.http_status = reply.http_status or None
    command.duration_ms = reply.duration_ms
    command.batch_id = reply.batch_id
    command.error_code, command.error_description = reply.error[:100], reply.description[:2000]
    OUTCOME_ACTIONS[outcome](portal, command, reply)


def _on_ok(portal: Portal, command: B24Command, reply: _Reply) -> None:
    command.result = reply.result
    command.error_code = command.error_description = ""
    _finish(command, State.DONE)


def _on_rate_limited(portal: Portal, command: B24Command, reply: _Reply) -> None:
    with _unless_redis_is_down("rate limiter"):
        ratelimit.refused(portal.member_id, portal.plan)
    _requeue(command, delay_s=1.0, count_attempt=False)


def _on_method_paused(portal: Portal, command: B24Command, reply: _Reply) -> None:
    until = None
    with _unless_redis_is_down("operating budget"):
        until = cache.get(_op_key(portal, command.method))
    until = until or (time.time() + 600)
    pause_method(portal, command.method, until)
    _requeue(command, delay_s=max(1.0, until - time.time()), count_attempt=False)


def _on_transient(portal: Portal, command: B24Command, reply: _Reply) -> None:
    age = (timezone.now() - (command.first_sent_at or command.created_at)).total_seconds()
    if age > settings.BITRIX24_RETRY_HORIZON_S:
        command.error_description = (
            f"gave up after {command.attempts} attempts: {command.error_description}"
        )
        _finish(command, State.FAILED)
        return
    delay = get_exponential_backoff_interval(
        1, command.attempts, settings.BITRIX24_RETRY_MAX_DELAY_S
    )
    _requeue(command, delay_s=delay + random.uniform(0, 0.5), count_attempt=True)


def _on_portal_blocked(portal: Portal, command: B24Command, reply: _Reply) -> None:
    # Kept, not counted: it goes out once the portal is re-authorized, or fails after the
    # retry horizon (expire_parked).
    park(portal, f"{reply.error}: {reply.description}".strip(": "))
    _requeue(command, delay_s=0, count_attempt=False)


def _on_permanent(portal: Portal, command: B24Command, reply: _Reply) -> None:
    _finish(command, State.FAILED)


OUTCOME_ACTIONS: dict[Outcome, Callable[[Portal, B24Command, _Reply], None]] = {
    Outcome.OK: _on_ok,
    Outcome.RATE_LIMITED: _on_rate_limited,
    Outcome.METHOD_PAUSED: _on_method_paused,
    Outcome.TRANSIENT: _on_transient,
    # A sub-command of a batch cannot be refreshed alone; the whole batch would have been.
    Outcome.REFRESH: _on_transient,
    Outcome.PORTAL_BLOCKED: _on_portal_blocked,
    Outcome.PERMANENT: _on_permanent,
}


def _requeue(command: B24Command, delay_s: float, count_attempt: bool) -> None:
    command.state = State.PENDING
    command.lease_until = None
    command.next_attempt_at = timezone.now() + timedelta(seconds=delay_s)
    if not count_attempt:
        command.attempts = max(0, command.attempts - 1)
    command.save()


def _finish(command: B24Command, state: str, error: str = "", description: str = "") -> None:
    command.state = state
    command.lease_until = None
    command.finished_at = timezone.now()
    if error:
        command.error_code, command.error_description = error, description
    command.save()
    _run_handler(command)


def _run_handler(command: B24Command) -> None:
    _run_handlers(command.handler, [command])


def _run_handlers(name: str, commands: list[B24Command]) -> None:
    fn = RESULT_HANDLERS.get(name)
    if fn is None:
        return
    if name not in MANY_HANDLERS and len(commands) > 1:
        for command in commands:
            _run_handlers(name, [command])
        return
    try:
        with transaction.atomic():
            fn(commands if name in MANY_HANDLERS else commands[0])
    except Exception as exc:  # a handler bug must not undo the record of what Bitrix24 did
        if len(commands) > 1:  # say a deadlock: each on its own, so only a bad one is lost
            log.warning("result handler %s failed for %d commands; one by one", name, len(commands))
            for command in commands:
                _run_handlers(name, [command])
            return
        log.exception("result handler %s failed for commands %s", name, [c.pk for c in commands])
        for command in commands:
            B24Command.objects.filter(pk=command.pk).update(
                error_description=f"{command.error_description}\nresult handler failed: {exc!r}"[
                    :2000
                ]
            )


# ---------------------------------------------------------------- operating budget


def _op_key(portal: Portal, method: str) -> str:
    return f"b24:op:{portal.pk}:{method.lower()}"


def _track_operating(portal: Portal, method: str, time_info: dict[str, Any]) -> None:
    """Remember when the method's budget resets; pause it before Bitrix24 has to refuse it."""
    reset_at, used = time_info.get("operating_reset_at"), time_info.get("operating")
    if reset_at is None:
        return
    with _unless_redis_is_down("operating budget"):
        cache.set(_op_key(portal, method), float(reset_at), timeout=700)
    if used is not None and float(used) >= settings.BITRIX24_OPERATING_LIMIT_S * 0.9:
        pause_method(portal, method, float(reset_at))


def pause_method(portal: Portal, method: str, until: float) -> None:
    with transaction.atomic():
        locked = Portal.objects.select_for_update().get(pk=portal.pk)
        pauses = locked.active_pauses()
        pauses[method.lower()] = max(until, pauses.get(method.lower(), 0))
        locked.paused_methods = pauses
        locked.save(update_fields=["paused_methods", "updated_at"])
    portal.paused_methods = pauses
    log.info(
        "portal %s: %s paused for %.0f s (operating budget)",
        portal.member_id,
        method,
        until - time.time(),
    )


# ---------------------------------------------------------------- maintenance


def release_expired_leases() -> int:
    """Commands whose dispatcher died mid-send go back to the queue (they may be sent again)
    and their portals get a dispatcher at once. A live dispatcher keeps renewing its leases
    (_Heartbeat), so only a dead one's expire."""
    now = timezone.now()
    with transaction.atomic():
        expired = dict(
            B24Command.objects.select_for_update(skip_locked=True)
            .filter(state=State.SENDING, lease_until__lt=now)
            .values_list("id", "portal_id")
        )
        B24Command.objects.filter(pk__in=list(expired)).update(
            state=State.PENDING, lease_until=None, next_attempt_at=now
        )
    for portal_id in set(expired.values()):
        _kick_quietly(portal_id, force=True)
    if expired:
        log.warning("released %d command(s) of a dispatcher that died mid-send", len(expired))
    return len(expired)


def park(portal: Portal, reason: str) -> None:
    """Stop sending for a portal Bitrix24 refuses as a whole (PORTAL_DELETED,
    PAYMENT_REQUIRED, APPLICATION_NOT_FOUND). Its commands wait for a re-install or an
    app-page open (install.revive) and fail after the retry horizon. The first reason and
    its time are kept: they say why and since when the portal is parked."""
    now = timezone.now()
    parked = Portal.objects.filter(pk=portal.pk, status=Portal.Status.ACTIVE).update(
        status=Portal.Status.NEEDS_REAUTH,
        last_error=reason[:2000],
        last_error_at=now,
        updated_at=now,
    )
    if parked:
        log.warning("portal %s parked: %s", portal.member_id, reason)
        # Imported here: problems enqueues through this module.
        from bitrixapp import problems

        problems.report(portal, "portal_reauth", "portal", reason=reason[:300])
    portal.status = Portal.Status.NEEDS_REAUTH


def expire_parked(limit: int = 500) -> int:
    """Fail the open commands of parked portals once they are older than the retry horizon
    (counted like a transient retry's: from the first send, else from creation)."""
    cutoff = timezone.now() - timedelta(seconds=settings.BITRIX24_RETRY_HORIZON_S)
    horizon_h = settings.BITRIX24_RETRY_HORIZON_S / 3600
    with transaction.atomic():
        stale = (
            B24Command.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("portal")
            .filter(state=State.PENDING, portal__status=Portal.Status.NEEDS_REAUTH)
            .alias(since=Coalesce("first_sent_at", "created_at"))
            .filter(since__lt=cutoff)
            .order_by("id")[:limit]
        )
        stale = list(stale)
        for command in stale:
            portal = command.portal
            since = f"{portal.last_error_at:%Y-%m-%d %H:%M} UTC" if portal.last_error_at else "?"
            _finish(
                command,
                State.FAILED,
                error="PORTAL_PARKED",
                description=f"gave up after {horizon_h:g} h: the portal is parked since "
                f"{since} ({portal.last_error or 'needs re-authorization'})",
            )
    return len(stale)


def portals_with_ready_commands() -> list[int]:
    return list(
        B24Command.objects.filter(
            state=State.PENDING,
            next_attempt_at__lte=timezone.now(),
            portal__status=Portal.Status.ACTIVE,
        )
        .values_list("portal_id", flat=True)
        .distinct()
    )


def cancel_open(portal: Portal, reason: str) -> int:
    return B24Command.objects.filter(portal=portal, state__in=B24Command.OPEN_STATES).update(
        state=State.CANCELLED,
        finished_at=timezone.now(),
        error_code="CANCELLED",
        error_description=reason,
    )
