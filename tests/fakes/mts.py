"""A fake MTS Communicator (Hyber JSONv2) API served over real HTTP.

Behaviour follows the published JSONv2 API that sms/providers/mts_by.py cites:
`POST /{client_id}/json2/simple` with HTTP Basic auth takes one message and answers
`{"message_id": "<uuid>"}`, or `{"error_code": N, "error_text": "..."}` with a 4xx/5xx status;
`GET /{client_id}/dr/external/{extra_id}/simple` (and `/dr/{message_id}/simple`) answers the
simple status report (`status` -1 until there is one). Over its per-second limit it answers
429. Reports are pushed with `push()` to a message's `callback_url` (or any URL), as a single
object or a batched array, the way the Hyber docs describe.

The error codes are the fake's own (MTS does not publish its list); what matters is the
HTTP status they come with. Stdlib only: importable without Django settings.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.loopback import LoopbackFake, TrackingHandler

__all__ = ["ERRORS", "FakeMts"]

# The fake's error codes: (HTTP status, error_code, error_text).
ERRORS = {
    "auth": (401, 1, "Authorization failed"),
    "rate": (429, 2, "Too many requests"),
    "bad_request": (400, 3, "Request validation failed"),
    "phone": (400, 4, "Invalid phone_number"),
    "alpha_name": (400, 5, "Unknown alpha_name"),
    "ttl": (400, 6, "ttl out of range"),
    "internal": (500, 7, "Internal error"),
}


@dataclass
class Sent:
    """A message the fake accepted, and its current report."""

    message_id: str
    extra_id: str
    phone_number: int
    body: dict[str, Any]
    at: float
    status: int = 1
    substatus: int = 11
    error_code: int | None = None

    def report(self) -> dict[str, Any]:
        sms = self.body["channel_options"]["sms"]
        parts = 1 if len(sms["text"]) <= 70 else -(-len(sms["text"]) // 67)
        return {
            "phone_number": self.phone_number,
            "time": int(time.time() * 1000),
            "message_id": self.message_id,
            "extra_id": self.extra_id,
            "status": self.status,
            "substatus": self.substatus,
            "hyber_status": 23011 if self.status == 2 else 0,
            "sent_via": "sms",
            "total_sms_parts": parts,
            "delivered_sms_parts": parts if self.status == 2 else 0,
        }


@dataclass
class _Failure:
    error: str
    remaining: int


@dataclass
class _State:
    sent: dict[str, Sent] = field(default_factory=dict)  # message_id → Sent
    by_extra: dict[str, str] = field(default_factory=dict)  # extra_id → message_id
    requests: list[tuple[str, str, float]] = field(default_factory=list)  # method, path, at
    refused: list[tuple[int, int, float]] = field(default_factory=list)  # http, code, at
    window: deque = field(default_factory=deque)  # accepted request times, last second


class FakeMts(LoopbackFake):
    thread_name = "fake-mts"

    def __init__(self, client_id: str = "4242", login: str = "acme", password: str = "pw"):
        self.client_id, self.login, self.password = client_id, login, password
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.state = _State()
            self.per_second = 20
            self.alpha_names: set[str] | None = None  # None: any alpha name is registered
            self.bad_numbers: set[int] = set()
            self.failures: list[_Failure] = []
            self.delay = 0.0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    # ------------------------------------------------------------ knobs and inspection

    def fail_next(self, error: str, times: int = 1) -> None:
        """The next `times` sends fail with ERRORS[error]."""
        with self._lock:
            self.failures.append(_Failure(error, times))

    @property
    def sent(self) -> list[Sent]:
        with self._lock:
            return sorted(self.state.sent.values(), key=lambda s: s.at)

    @property
    def throttled(self) -> int:
        with self._lock:
            return sum(1 for status, _, _ in self.state.refused if status == 429)

    def sends_per_second(self) -> float:
        times = sorted(s.at for s in self.sent)
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0

    def message(self, extra_id: str) -> Sent:
        with self._lock:
            return self.state.sent[self.state.by_extra[extra_id]]

    def set_status(self, extra_id: str, status: int, substatus: int) -> dict[str, Any]:
        """The message reached a new state; its report (as polled or pushed) is returned."""
        with self._lock:
            sent = self.message(extra_id)
            sent.status, sent.substatus = status, substatus
            return sent.report()

    def push(self, reports: dict | list, url: str | None = None) -> tuple[int, bytes]:
        """POST report(s) as JSON to `url` (default: the first report's callback_url)."""
        first = reports[0] if isinstance(reports, list) else reports
        target = url or self.message(first["extra_id"]).body["callback_url"]
        request = urllib.request.Request(
            target,
            data=json.dumps(reports).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    # ------------------------------------------------------------ serving

    def handle(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, Any]:
        with self._lock:
            self.state.requests.append((method, path, time.time()))
        if self.delay:
            time.sleep(self.delay)
        parts = path.strip("/").split("/")
        if not parts or parts[0] != self.client_id:
            return 404, {"error_code": 404, "error_text": "Unknown client"}
        if not self._authorized(headers.get("Authorization", "")):
            return self._error("auth")
        route = "/".join(parts[1:])
        if method == "POST" and route == "json2/simple":
            return self._send(body)
        if method == "GET" and len(parts) >= 4 and parts[1] == "dr" and parts[-1] == "simple":
            return self._status(parts[2:-1])
        return 404, {"error_code": 404, "error_text": "Not found"}

    def _authorized(self, header: str) -> bool:
        expected = base64.b64encode(f"{self.login}:{self.password}".encode()).decode()
        return header == f"Basic {expected}"

    def _error(self, name: str) -> tuple[int, dict[str, Any]]:
        status, code, text = ERRORS[name]
        with self._lock:
            self.state.refused.append((status, code, time.time()))
        return status, {"error_code": code, "error_text": text}

    def _over_limit(self) -> bool:
        now = time.monotonic()
        with self._lock:
            window = self.state.window
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= self.per_second:
                return True
            window.append(now)
            return False

    def _injected(self) -> str | None:
        with self._lock:
            for failure in self.failures:
                if failure.remaining > 0:
                    failure.remaining -= 1
                    return failure.error
        return None

    def _send(self, body: bytes) -> tuple[int, Any]:
        if self._over_limit():
            return self._error("rate")
        injected = self._injected()
        if injected:
            return self._error(injected)
        try:
            message = json.loads(body)
        except ValueError:
            return self._error("bad_request")
        problem = self._problem(message)
        if problem:
            return self._error(problem)
        sent = Sent(
            message_id=str(uuid.uuid4()),
            extra_id=str(message.get("extra_id") or ""),
            phone_number=message["phone_number"],
            body=message,
            at=time.time(),
        )
        with self._lock:
            self.state.sent[sent.message_id] = sent
            if sent.extra_id:
                self.state.by_extra[sent.extra_id] = sent.message_id
        return 200, {"message_id": sent.message_id}

    def _problem(self, message: Any) -> str | None:
        if not isinstance(message, dict) or message.get("channels") != ["sms"]:
            return "bad_request"
        number = message.get("phone_number")
        if not isinstance(number, int) or isinstance(number, bool) or number in self.bad_numbers:
            return "phone"
        sms = (message.get("channel_options") or {}).get("sms") or {}
        if not sms.get("text") or len(str(message.get("extra_id", ""))) > 64:
            return "bad_request"
        if len(str(message.get("callback_url", ""))) > 256:
            return "bad_request"
        alpha = sms.get("alpha_name")
        if (
            not alpha
            or len(alpha) > 11
            or (self.alpha_names is not None and alpha not in self.alpha_names)
        ):
            return "alpha_name"
        ttl = sms.get("ttl")
        if not isinstance(ttl, int) or not 300 <= ttl <= 259200:
            return "ttl"
        return None

    def _status(self, key: list[str]) -> tuple[int, Any]:
        with self._lock:
            if key[0] == "external" and len(key) == 2:
                message_id = self.state.by_extra.get(key[1])
            else:
                message_id = key[0] if len(key) == 1 else None
            sent = self.state.sent.get(message_id or "")
            if sent is None:
                return 404, {"error_code": 404, "error_text": "Message not found"}
            report = sent.report()
        if report["status"] == 1 and report["substatus"] in (11, 12):
            report["status"] = -1  # no final status yet, as the simple report says it
        return 200, report


class _Handler(TrackingHandler):
    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, payload = self.server.fake.handle(method, self.path, self.headers, body)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self._serve("POST")

    def do_GET(self) -> None:
        self._serve("GET")


FakeMts.handler_class = _Handler
