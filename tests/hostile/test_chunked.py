"""A chunked body (no Content-Length) over real HTTP, through gunicorn as in production.

Django reads a body without Content-Length as empty, so such a request used to be answered
as if its fields were missing. It is refused with 411 now; the same body with a
Content-Length reaches the view.
"""

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile.probe import event_form, form_body

# gunicorn uses the test database (worker_env): that needs the database fixtures' setup.
pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def gunicorn(worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = _free_port()
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "bitrixapp.wsgi", "-b", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=worker_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_listening(port, proc, log)
            yield port
        finally:
            proc.terminate()
            proc.wait(15)


def _wait_listening(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"gunicorn did not start:\n{log.read_text()[-3000:]}")


def _exchange(port: int, head: str, body: bytes) -> tuple[int, dict]:
    """One raw HTTP/1.1 request; the answer's status and JSON body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head_bytes, _, payload = answer.partition(b"\r\n\r\n")
    status = int(head_bytes.split(b" ", 2)[1])
    return status, json.loads(payload)


HEAD = """POST /bitrix/events/ HTTP/1.1
Host: 127.0.0.1
Connection: close
Content-Type: application/x-www-form-urlencoded
"""


def test_a_chunked_body_is_refused_with_411_not_read_as_empty(gunicorn: int) -> None:
    body = form_body(event_form())
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    status, answer = _exchange(gunicorn, HEAD + "Transfer-Encoding: chunked\n", chunked)
    assert (status, answer["error"]) == (411, "length_required"), answer
    assert "Content-Length" in answer["detail"]


def test_the_same_body_with_content_length_reaches_the_view(gunicorn: int) -> None:
    body = form_body(event_form())
    status, answer = _exchange(gunicorn, HEAD + f"Content-Length: {len(body)}\n", body)
    # No portal is committed where gunicorn looks: the view read member_id from the body.
    assert (status, answer["error"]) == (404, "not_found"), answer
    assert "m1" in answer["detail"]
