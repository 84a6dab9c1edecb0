"""A fake MTT recordings API served over real HTTP, and helpers to build MTT notifications.

Behaviour (telephony/providers/mtt.py): `GET /v1/records/<id>` with `Authorization: Bearer
<api key>` answers `{"url": ...}` once the recording exists and 404 before; the Telecom API
form `GET /v1/records/<id>/urls` with Basic auth answers a JSON list of file URLs (a call may be
split into several files). A wrong key answers 401. Files are served below `/files/`.

Stdlib only: it must be importable without Django settings.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.fakes.loopback import LoopbackFake, TrackingHandler

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "mtt"
FIXTURE_EPOCH = 1718600000  # the fixtures' calls start at about this time
TIME_FIELDS = {"timestamp", "time"}


def fixture(name: str) -> dict[str, Any]:
    """tests/fixtures/mtt/<name>.json: {"path": "", "json": {...}}."""
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def fixture_names() -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob("*.json"))


def shift_times(payload: dict[str, Any], delta: float) -> dict[str, Any]:
    """Move the epoch fields by `delta` seconds, in place (numbers or digit strings)."""
    for key in TIME_FIELDS & payload.keys():
        value = payload[key]
        shifted = int(int(value) + delta)
        payload[key] = shifted if isinstance(value, int) else str(shifted)
    return payload


def signed(secret: str, payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """A byte-exact body and its X-Signature header (hex HMAC-SHA256 of the body)."""
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return body, {"X-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


class _Handler(TrackingHandler):
    timeout = 30

    def do_GET(self) -> None:
        status, content_type, body = self.server.fake._answer(self.path, self.headers)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class FakeMtt(LoopbackFake):
    """Knobs: `recordings` (id → list of file contents; one call may have several files),
    `ready_after` (id → n: the first n-1 requests for it answer 404).
    Records: `record_requests` (Counter per id), `auth` (the Authorization headers seen)."""

    handler_class = _Handler
    thread_name = "fake-mtt"

    def __init__(self, api_key: str = "mtt-key", login: str = "user", password: str = "pw"):
        self.api_key, self.login, self.password = api_key, login, password
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.recordings: dict[str, list[bytes]] = {}
            self.ready_after: dict[str, int] = {}
            self.record_requests: Counter[str] = Counter()
            self.auth: list[str] = []

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _answer(self, raw_path: str, headers: Any) -> tuple[int, str, bytes]:
        parts = [unquote(p) for p in urlsplit(raw_path).path.strip("/").split("/")]
        with self._lock:
            if parts[:1] == ["files"] and len(parts) == 3:
                return self._file(parts[1], parts[2])
            if parts[:2] == ["v1", "records"] and len(parts) in (3, 4):
                return self._record(
                    parts[2], urls=len(parts) == 4, auth=headers.get("Authorization", "")
                )
        return 404, "application/json", b'{"error": "not found"}'

    def _record(self, record_id: str, urls: bool, auth: str) -> tuple[int, str, bytes]:
        self.auth.append(auth)
        basic = "Basic " + base64.b64encode(f"{self.login}:{self.password}".encode()).decode()
        if auth != (basic if urls else f"Bearer {self.api_key}"):
            return 401, "application/json", b'{"error": "unauthorized"}'
        self.record_requests[record_id] += 1
        files = self.recordings.get(record_id)
        if not files or self.record_requests[record_id] < self.ready_after.get(record_id, 1):
            return 404, "application/json", b'{"error": "record not found"}'
        links = [
            f"{self.api_url}files/{record_id}/{record_id}_{i + 1}.wav" for i in range(len(files))
        ]
        body = links if urls else {"url": links[0]}
        return 200, "application/json", json.dumps(body).encode()

    def _file(self, record_id: str, name: str) -> tuple[int, str, bytes]:
        files = self.recordings.get(record_id) or []
        index = int(name.rsplit("_", 1)[-1].split(".")[0]) - 1 if "_" in name else -1
        if not 0 <= index < len(files):
            return 404, "text/plain", b"no such file"
        return 200, "audio/wav", files[index]
