"""The app as deployed, in real processes the crash tests can kill -9 and start again.

Each process runs in its own session, so `kill9()` takes the whole process group (a Celery
worker and its pool children, gunicorn's arbiter and its workers) the way a crashed
container would: no signal handler, no cleanup, sockets cut. Logs are appended across
restarts in the test's tmp_path.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent.parent
WORK_QUEUES = "calls,recordings,default"  # the `worker` service of docker/compose.yaml
DISPATCH_QUEUES = "bitrix"  # the `dispatcher` service
HEADERS = {"X-Forwarded-Proto": "https"}  # as behind the TLS proxy (DEBUG=0 redirects http)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


class Proc:
    """A child process in a session of its own, logging to `<log_dir>/<name>.log`."""

    ready_timeout = 60.0

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self._log_from = 0
        self.start()

    def start(self) -> None:
        self._log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for(self._ready, self.ready_timeout, f"{self.name} to start")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
        return self.is_ready()

    def is_ready(self) -> bool:
        return True

    def log_since_start(self) -> str:
        with self.log_path.open("rb") as log:
            log.seek(self._log_from)
            return log.read().decode(errors="replace")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def kill9(self) -> None:
        """SIGKILL the whole process group: a crash, nothing cleaned up."""
        self._signal_group(signal.SIGKILL)
        self.proc.wait(10)

    def restart(self) -> None:
        self.start()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._signal_group(signal.SIGKILL)  # orphans of an earlier kill, if any
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.proc.wait(10)

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)  # the group id is our child's pid (own session)


class CeleryWorker(Proc):
    def __init__(self, name: str, queues: str, env: dict[str, str], log_dir: Path, concurrency=1):
        argv = [
            sys.executable, "-m", "celery", "-A", "bitrixapp", "worker",
            "-Q", queues, "-n", f"{name}@crash", "--concurrency", str(concurrency),
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO",
        ]  # fmt: skip
        super().__init__(name, argv, env, log_dir)

    def is_ready(self) -> bool:
        return "ready." in self.log_since_start()


class CeleryBeat(Proc):
    def __init__(self, env: dict[str, str], log_dir: Path):
        argv = [
            sys.executable, "-m", "celery", "-A", "bitrixapp", "beat", "-l", "INFO",
            "--schedule", str(log_dir / "celerybeat-schedule"),
        ]  # fmt: skip
        super().__init__("beat", argv, env, log_dir)

    def is_ready(self) -> bool:
        return "Starting..." in self.log_since_start()


@functools.cache
def _no_control_socket() -> list[str]:
    """Newer gunicorns open a control socket at a fixed path; ours must not clash with others."""
    help_text = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--help"], capture_output=True, text=True, check=False
    ).stdout
    return ["--no-control-socket"] if "--no-control-socket" in help_text else []


class Gunicorn(Proc):
    """`gunicorn bitrixapp.wsgi` as docker/compose.yaml runs it, on a free loopback port."""

    def __init__(self, env: dict[str, str], log_dir: Path, workers: int = 2):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [
            sys.executable, "-m", "gunicorn", "bitrixapp.wsgi",
            "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers),
            *_no_control_socket(),
        ]  # fmt: skip
        super().__init__("web", argv, env, log_dir)

    def is_ready(self) -> bool:
        request = urllib.request.Request(f"{self.url}/healthz", headers=HEADERS)
        try:
            with urllib.request.urlopen(request, timeout=2) as reply:
                return reply.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False


class RedisServer(Proc):
    """A private redis-server (the shared one is never restarted): no RDB, no AOF, so a
    kill -9 and restart comes back empty, as a Redis that lost its data."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        argv = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(log_dir),
        ]  # fmt: skip
        super().__init__("redis", argv, {**os.environ}, log_dir)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def is_ready(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)
