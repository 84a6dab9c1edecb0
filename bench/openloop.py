"""A fixed-rate (open-loop) HTTP load generator: request i is due at start + i / rate.

wrk is closed-loop (a connection sends its next request only when the previous answer came
back) and wrk2 is not available, so a slow server would simply be sent less: coordinated
omission. Here a pool of threads, each with its own connection, takes the
requests in order; a thread sleeps until the request's scheduled time, sends it and reads the
answer. Latency is measured from the *scheduled* time, so when every connection is busy the
time a request waited for a free one counts too. Bodies are given up front (each request may
have its own, e.g. signed webhooks that must not be duplicates).

The threads speak HTTP/1.1 by hand (`Connection`; bench/hook_to_register.py uses it too):
each request's bytes are built once and an answer is read as far as its status, headers and
Content-Length body. http.client cost about a millisecond of CPU per request here (header
objects, an email parser for every answer): at 500 requests/s on a 2-core machine that is
half a core taken from the server being measured. The generator should cost as little as
the PBX's own sender, which runs elsewhere.
"""

import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

HEADERS = {
    "Content-Type": "application/x-www-form-urlencoded",
    "X-Forwarded-Proto": "https",
}


@dataclass(frozen=True)
class Request:
    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()  # added to / overriding HEADERS (e.g. signatures)


@dataclass
class Sample:
    scheduled: float  # time.monotonic() the request was due
    sent: float  # when it actually went out
    done: float  # when its answer was read (or the error happened)
    status: int  # HTTP status; 0 on a socket error or timeout

    @property
    def latency_ms(self) -> float:
        """Scheduled time -> answer read (what a client sending at the rate would see)."""
        return (self.done - self.scheduled) * 1000

    @property
    def service_ms(self) -> float:
        """Actual send -> answer read (what a closed-loop tool would report)."""
        return (self.done - self.sent) * 1000


@dataclass
class OpenLoopResult:
    rate: float
    connections: int
    samples: list[Sample] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        if not self.samples:
            return 0.0
        return max(s.done for s in self.samples) - min(s.scheduled for s in self.samples)

    @property
    def achieved_rps(self) -> float:
        duration = self.duration_s
        return len(self.samples) / duration if duration else 0.0

    @property
    def statuses(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for sample in self.samples:
            counts[sample.status] = counts.get(sample.status, 0) + 1
        return counts

    @property
    def non_200(self) -> int:
        return sum(1 for s in self.samples if s.status != 200)

    def latency(self, q: float) -> float:
        return percentile([s.latency_ms for s in self.samples], q)

    def service(self, q: float) -> float:
        return percentile([s.service_ms for s in self.samples], q)

    @property
    def max_send_lag_ms(self) -> float:
        """The longest a request went out after its scheduled time (generator or pool lag)."""
        return max(((s.sent - s.scheduled) * 1000 for s in self.samples), default=0.0)

    def late_spells(self, over_ms: float, gap_s: float = 0.5) -> list["Spell"]:
        """The stretches of the run in which requests came back later than `over_ms`: a
        stall of the server shows as one spell holding every request scheduled in it, a lost
        SYN as a lone request one second late."""
        spells: list[Spell] = []
        if not self.samples:
            return spells
        start = self.samples[0].scheduled
        for sample in self.samples:
            if sample.latency_ms <= over_ms:
                continue
            at = sample.scheduled - start
            if spells and at - spells[-1].end_s <= gap_s:
                spells[-1].end_s, spells[-1].count = at, spells[-1].count + 1
            else:
                spells.append(Spell(at, at, 1))
        return spells

    def describe_late(self, over_ms: float = 100.0) -> str:
        spells = self.late_spells(over_ms)
        if not spells:
            return f"none over {over_ms:.0f} ms"
        shown = ", ".join(
            f"{s.count} at {s.start_s:.1f}-{s.end_s:.1f} s" for s in spells[:SPELLS_SHOWN]
        )
        more = (
            f" and {len(spells) - SPELLS_SHOWN} more spells" if len(spells) > SPELLS_SHOWN else ""
        )
        total = sum(s.count for s in spells)
        return f"{total} over {over_ms:.0f} ms, in {len(spells)} spell(s): {shown}{more}"


SPELLS_SHOWN = 5


@dataclass
class Spell:
    start_s: float  # scheduled time of its first late request, seconds into the run
    end_s: float  # and of its last
    count: int


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); q=1 is the maximum."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _Schedule:
    """Hands out request indices in order to the sender threads."""

    def __init__(self, count: int) -> None:
        self._next = 0
        self._count = count
        self._lock = threading.Lock()

    def take(self) -> int | None:
        with self._lock:
            if self._next >= self._count:
                return None
            index, self._next = self._next, self._next + 1
            return index


def run_open_loop(
    base_url: str, requests: Sequence[Request], rate: float, connections: int
) -> OpenLoopResult:
    """Send `requests` at `rate` per second over up to `connections` connections."""
    netloc = urlsplit(base_url).netloc
    schedule = _Schedule(len(requests))
    start = time.monotonic() + 0.2  # let every thread start first
    per_thread: list[list[Sample]] = [[] for _ in range(connections)]
    threads = [
        threading.Thread(
            target=_sender,
            args=(netloc, requests, schedule, start, rate, per_thread[i]),
            daemon=True,
        )
        for i in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    samples = sorted((s for per in per_thread for s in per), key=lambda s: s.scheduled)
    return OpenLoopResult(rate, connections, samples)


def _sender(
    netloc: str,
    requests: Sequence[Request],
    schedule: _Schedule,
    start: float,
    rate: float,
    out: list[Sample],
) -> None:
    conn = Connection(netloc, timeout=10)
    while (index := schedule.take()) is not None:
        scheduled = start + index / rate
        pause = scheduled - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        data = request_bytes(netloc, requests[index])
        sent = time.monotonic()
        try:
            status = conn.exchange(data)
        except (OSError, ValueError):  # ValueError: an answer that is not HTTP
            conn.close()  # the next request opens a fresh connection
            status = 0
        out.append(Sample(scheduled, sent, time.monotonic(), status))
    conn.close()


def request_bytes(netloc: str, request: Request) -> bytes:
    headers = {**HEADERS, **dict(request.headers), "Content-Length": str(len(request.body))}
    lines = [f"POST {request.path} HTTP/1.1", f"Host: {netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + request.body


class Connection:
    """One keep-alive HTTP/1.1 connection: send a request's bytes, read its answer's status,
    skip its body; reconnects by itself after `Connection: close` (sync gunicorn)."""

    def __init__(self, netloc: str, timeout: float) -> None:
        host, _, port = netloc.rpartition(":")
        self._address = (host, int(port))
        self._timeout = timeout
        self._sock: socket.socket | None = None

    def exchange(self, data: bytes) -> int:
        if self._sock is None:
            self._sock = socket.create_connection(self._address, self._timeout)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.sendall(data)
        status, close = self._read_answer(self._sock)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @staticmethod
    def _read_answer(sock: socket.socket) -> tuple[int, bool]:
        """(status, whether the server closes the connection)."""
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            buffer += _received(sock)
        head, _, body = buffer.partition(b"\r\n\r\n")
        status_line, *header_lines = head.split(b"\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        if b"chunked" in headers.get(b"transfer-encoding", b""):
            raise OSError("chunked answers are not read by this generator")
        length = headers.get(b"content-length")
        if length is None:  # the body runs to the end of the connection
            while _received(sock, eof_ok=True):
                pass
            return int(status_line.split()[1]), True
        missing = int(length) - len(body)
        while missing > 0:
            missing -= len(_received(sock))
        return int(status_line.split()[1]), headers.get(b"connection") == b"close"


def _received(sock: socket.socket, eof_ok: bool = False) -> bytes:
    chunk = sock.recv(65536)
    if not chunk and not eof_ok:
        raise ConnectionError("the server closed the connection before its answer ended")
    return chunk
