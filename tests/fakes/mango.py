"""A fake Mango Office VPBX API served over real HTTP, and helpers to sign webhooks like Mango.

Behaviour follows Mango's VPBX API v1.9 (telephony/providers/mango.py cites it): every request is a
form POST of `vpbx_api_key`, `sign`, `json` with sign = sha256_hex(key + json + salt);
`commands/callback` answers a JSON `result` code; `queries/recording/post` answers 302 to a
one-time file link that dies after its first GET; over the rate limit Mango answers HTTP 429
with a fixed JSON body.

Stdlib only: it must be importable without Django settings.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from tests.fakes.loopback import LoopbackFake, TrackingHandler

__all__ = ["FakeMango", "FakeRequest", "fixture", "signed_body"]

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "mango"
RATE_LIMIT_BODY = {
    "name": "Service Unavailable",
    "message": "Rate limit exceeded.",
    "code": 0,
    "status": 429,
}


def signed_body(api_key: str, salt: str, payload: dict[str, Any] | str, path: str = "") -> bytes:
    """A byte-exact `application/x-www-form-urlencoded` body as Mango posts it.

    `payload` as a str is used verbatim as the `json` field (to sign exact text); a dict is
    dumped the way Mango's examples look (non-ASCII kept as is). `path` is accepted for
    readability at call sites only: Mango does not sign the URL path.
    """
    del path
    text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    digest = hashlib.sha256((api_key + text + salt).encode("utf-8")).hexdigest()
    return urlencode({"vpbx_api_key": api_key, "sign": digest, "json": text}).encode("ascii")


FIXTURE_EPOCH = 1718600000  # the fixtures' calls start at about this time
TIME_FIELDS = {"timestamp", "create_time", "forward_time", "talk_time", "end_time"}


def shift_times(node: Any, delta: float) -> Any:
    """Move every epoch field of a payload by `delta` seconds, in place (Mango sends epochs as
    numbers or as strings). Live calls need current times: the engine treats old ones as late."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in TIME_FIELDS and str(value).isdigit() and int(value) > FIXTURE_EPOCH // 2:
                shifted = int(int(value) + delta)
                node[key] = shifted if isinstance(value, int) else str(shifted)
            else:
                shift_times(value, delta)
    return node


def fixture(name: str) -> dict[str, Any]:
    """tests/fixtures/mango/<name>.json: {"path": "events/call", "json": {...}}."""
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def fixture_names() -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob("*.json"))


@dataclass
class FakeRequest:
    method: str
    path: str
    form: dict[str, str] = field(default_factory=dict)
    payload: Any = None  # the parsed `json` field, when there was one
    status: int = 0  # what the fake answered


class _Handler(TrackingHandler):
    timeout = 30

    def do_GET(self) -> None:
        self.server.fake._serve(self, "GET")

    def do_POST(self) -> None:
        self.server.fake._serve(self, "POST")


@dataclass
class _Answer:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _json(status: int, payload: Any) -> _Answer:
    return _Answer(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"))


class FakeMango(LoopbackFake):
    """Fake `https://app.mango-office.ru/vpbx/` plus its one-time file links.

    Knobs: `callback_result` (result code of commands/callback, default 1000),
    `rate_limited` (every API call answers 429), `recordings` (id → bytes),
    `unavailable_until_attempt` (id → n: the first n-1 requests for it answer 404).
    Records: `requests` (every request), `callbacks` (accepted commands/callback payloads),
    `recording_requests` (Counter of queries/recording/post per recording id).
    """

    handler_class = _Handler
    thread_name = "fake-mango"

    def __init__(self, api_key: str = "mango-key", api_salt: str = "mango-salt") -> None:
        self.api_key = api_key
        self.api_salt = api_salt
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.callback_result: int = 1000
            self.rate_limited = False
            self.recordings: dict[str, bytes] = {}
            self.unavailable_until_attempt: dict[str, int] = {}
            self.requests: list[FakeRequest] = []
            self.callbacks: list[dict[str, Any]] = []
            self.recording_requests: Counter[str] = Counter()
            self._links: dict[str, str] = {}  # one-time token → recording id

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/vpbx/"

    # HTTP --------------------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = urlsplit(handler.path).path
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        record = FakeRequest(method, path)
        with self._lock:
            answer = self._answer(method, path, raw, record)
            record.status = answer.status
            self.requests.append(record)
        _send(handler, answer)

    def _answer(self, method: str, path: str, raw: bytes, record: FakeRequest) -> _Answer:
        if method == "GET" and path.startswith("/files/"):
            return self._serve_file(path.removeprefix("/files/"))
        route = self._ROUTES.get(path.rstrip("/"))
        if method != "POST" or route is None:
            return _json(404, {"result": 3000, "message": "unknown method"})
        if self.rate_limited:
            return _json(429, RATE_LIMIT_BODY)
        record.form = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        refusal = self._check_signature(record.form)
        if refusal:
            return refusal
        try:
            record.payload = json.loads(record.form["json"])
        except ValueError:
            return _json(200, {"result": 3400, "message": "invalid JSON"})
        if not isinstance(record.payload, dict):
            return _json(200, {"result": 3400, "message": "invalid JSON"})
        return route(self, record.payload)

    def _check_signature(self, form: dict[str, str]) -> _Answer | None:
        if not all(form.get(name) for name in ("vpbx_api_key", "sign", "json")):
            return _json(200, {"result": 3103, "message": "required parameter missing"})
        if form["vpbx_api_key"] != self.api_key:
            return _json(200, {"result": 3105, "message": "wrong vpbx_api_key"})
        expected = hashlib.sha256(
            (self.api_key + form["json"] + self.api_salt).encode("utf-8")
        ).hexdigest()
        if form["sign"] != expected:
            return _json(200, {"result": 3102, "message": "wrong sign"})
        return None

    def _callback(self, payload: dict[str, Any]) -> _Answer:
        source = payload.get("from")
        if not (isinstance(source, dict) and source.get("extension") and payload.get("to_number")):
            return _json(200, {"result": 3103, "message": "from.extension and to_number needed"})
        self.callbacks.append(payload)
        return _json(200, {"result": self.callback_result})

    def _recording_post(self, payload: dict[str, Any]) -> _Answer:
        recording_id = str(payload.get("recording_id") or "")
        if payload.get("action") not in ("download", "play"):
            return _json(200, {"result": 3100, "message": "action must be download or play"})
        self.recording_requests[recording_id] += 1
        attempt = self.recording_requests[recording_id]
        if recording_id not in self.recordings:
            return _json(404, {"result": 3320, "message": "recording not found"})
        if attempt < self.unavailable_until_attempt.get(recording_id, 1):
            return _json(404, {"result": 3320, "message": "recording not found"})
        token = secrets.token_urlsafe(16)
        self._links[token] = recording_id
        return _Answer(302, headers={"Location": f"{self.base_url}/files/{token}"})

    def _serve_file(self, token: str) -> _Answer:
        recording_id = self._links.pop(token, None)  # links are one-time
        if recording_id is None:
            return _Answer(404, b"link expired", "text/plain")
        return _Answer(200, self.recordings[recording_id], "audio/mp3")

    _ROUTES = {
        "/vpbx/commands/callback": _callback,
        "/vpbx/queries/recording/post": _recording_post,
    }


def _send(handler: BaseHTTPRequestHandler, answer: _Answer) -> None:
    try:
        handler.send_response(answer.status)
        handler.send_header("Content-Type", answer.content_type)
        handler.send_header("Content-Length", str(len(answer.body)))
        for name, value in answer.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(answer.body)
    except (BrokenPipeError, ConnectionResetError):
        handler.close_connection = True
