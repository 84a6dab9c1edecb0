"""Helpers to post generic JSON webhooks as a PBX would (docs/generic-webhook.md), and a fake
PBX file server for their `recording_url`s, served over real HTTP.

Stdlib only: it must be importable without Django settings.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.fakes.loopback import LoopbackFake, TrackingHandler

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "generic"
FIXTURE_EPOCH = 1718600000


def fixture(name: str) -> dict[str, Any]:
    """tests/fixtures/generic/<name>.json: {"path": "", "json": {...} or [...]}."""
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def fixture_names() -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob("*.json"))


def shift_times(payload: Any, delta: float) -> Any:
    """Move numeric `timestamp`s by `delta` seconds, in place (ISO ones are left alone)."""
    for event in payload if isinstance(payload, list) else [payload]:
        if isinstance(event.get("timestamp"), int):
            event["timestamp"] = int(event["timestamp"] + delta)
    return payload


def sign(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The X-Timestamp and X-Signature headers of a body, as the format defines them."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Timestamp": stamp, "X-Signature": f"sha256={digest}"}


class _Handler(TrackingHandler):
    timeout = 30

    def do_GET(self) -> None:
        status, content_type, body = self.server.fake._answer(urlsplit(self.path).path)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class FakePbxFiles(LoopbackFake):
    """The PBX's web server for recordings. Knobs: `files` (path → bytes), `ready_after`
    (path → n: the first n-1 GETs answer 404). Records: `gets` (Counter per path)."""

    handler_class = _Handler
    thread_name = "fake-pbx-files"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.files: dict[str, bytes] = {}
            self.ready_after: dict[str, int] = {}
            self.gets: Counter[str] = Counter()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def _answer(self, path: str) -> tuple[int, str, bytes]:
        path = path.lstrip("/")
        with self._lock:
            self.gets[path] += 1
            if path not in self.files or self.gets[path] < self.ready_after.get(path, 1):
                return 404, "text/plain", b"not yet"
            kind = "audio/wav" if path.endswith(".wav") else "audio/mpeg"
            return 200, kind, self.files[path]
