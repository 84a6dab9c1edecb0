"""A Mango Office PBX posting a burst of calls to a real server, retrying what fails.

Every call is three signed notifications, posted in order: ringing (`events/call` Appeared),
answer (`events/call` Connected) and the end (`events/summary`), with the fixtures of
tests/fixtures/mango moved to the current time. Several sender threads work through the calls
at once, as Mango posts notifications of different calls in parallel.

Retries: Mango does not document its schedule; like any webhook sender it posts again what
was not acknowledged with a 2xx (an error status, a refused or dropped connection, a timeout).
This PBX tries again after RETRY_PAUSE_S, honouring a shorter Retry-After, until its deadline.
"""

from __future__ import annotations

import copy
import http.client
import json
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from tests.fakes.mango import FIXTURE_EPOCH, fixture, shift_times, signed_body

CALL_EVENTS = ("call__appeared_inbound", "call__connected", "summary__inbound_answered")
RETRY_PAUSE_S = 1.0
HEADERS = {
    "Content-Type": "application/x-www-form-urlencoded",
    "X-Forwarded-Proto": "https",  # as behind the TLS proxy
}


@dataclass(frozen=True)
class Notification:
    entry_id: str
    path: str  # e.g. "events/call"
    body: bytes


@dataclass
class Tally:
    """What the PBX saw: first answers and retries."""

    acknowledged: int = 0
    attempts: int = 0
    answers: Counter = field(default_factory=Counter)  # "200 accepted", "503 unavailable", ...
    retry_after: Counter = field(default_factory=Counter)  # Retry-After of non-2xx answers
    undelivered: list[Notification] = field(default_factory=list)


class MangoPbx:
    def __init__(self, base_url: str, hook_path: str, api_key: str, api_salt: str, tag: str):
        self.netloc = base_url.removeprefix("http://")
        self.hook_path = hook_path
        self.api_key, self.api_salt = api_key, api_salt
        self.tag = tag
        self.tally = Tally()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def entry_ids(self, calls: int) -> list[str]:
        return [f"crash-{self.tag}-{n}" for n in range(calls)]

    def call(self, entry_id: str) -> list[Notification]:
        """One answered inbound call to extension 101, ringing since a few seconds ago."""
        started_at = time.time() - 5  # the fixtures ring at FIXTURE_EPOCH + 5
        out = []
        for name in CALL_EVENTS:
            data = fixture(name)
            payload = shift_times(copy.deepcopy(data["json"]), started_at - FIXTURE_EPOCH)
            payload["entry_id"] = entry_id
            if "call_id" in payload:
                payload["call_id"] = f"{entry_id}-leg"
            body = signed_body(self.api_key, self.api_salt, payload)
            out.append(Notification(entry_id, data["path"], body))
        return out

    # ------------------------------------------------------------------ the burst

    def start_burst(self, calls: int, senders: int = 6, deadline_s: float = 120.0) -> list[str]:
        """Post `calls` calls in the background; returns their entry ids."""
        entries = self.entry_ids(calls)
        work: queue.Queue[str] = queue.Queue()
        for entry in entries:
            work.put(entry)
        deadline = time.monotonic() + deadline_s
        threads = [
            threading.Thread(target=self._sender, args=(work, deadline), daemon=True)
            for _ in range(senders)
        ]
        self._thread = threading.Thread(target=_join_all, args=(threads,), daemon=True)
        for thread in threads:
            thread.start()
        self._thread.start()
        return entries

    def wait(self, timeout: float) -> Tally:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the PBX is still posting"
        return self.tally

    def _sender(self, work: queue.Queue[str], deadline: float) -> None:
        while True:
            try:
                entry = work.get_nowait()
            except queue.Empty:
                return
            for notification in self.call(entry):
                if not self._deliver(notification, deadline):
                    with self._lock:
                        self.tally.undelivered.append(notification)

    def _deliver(self, notification: Notification, deadline: float) -> bool:
        """POST until a 2xx; False if the deadline passed first."""
        while time.monotonic() < deadline:
            status, code, retry_after = self._post(notification)
            with self._lock:
                self.tally.attempts += 1
                self.tally.answers[f"{status} {code}"] += 1
                if 200 <= status < 300:
                    self.tally.acknowledged += 1
                    return True
                self.tally.retry_after[retry_after] += 1
            pause = RETRY_PAUSE_S
            if retry_after.isdigit():
                pause = min(pause, float(retry_after))
            time.sleep(pause)
        return False

    def _post(self, notification: Notification) -> tuple[int, str, str]:
        conn = http.client.HTTPConnection(self.netloc, timeout=10)
        try:
            conn.request("POST", self.hook_path + notification.path, notification.body, HEADERS)
            reply = conn.getresponse()
            body = reply.read()
            return reply.status, _code(body), reply.getheader("Retry-After") or ""
        except (OSError, http.client.HTTPException) as exc:
            return 0, type(exc).__name__, ""
        finally:
            conn.close()


def _code(body: bytes) -> str:
    """`status` of a 2xx answer ("accepted", "duplicate"), `error` of any other."""
    try:
        data = json.loads(body)
    except ValueError:
        return "not-json"
    if not isinstance(data, dict):
        return "not-json"
    return str(data.get("status") or data.get("error") or "?")


def _join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join()
