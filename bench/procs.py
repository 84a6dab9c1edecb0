"""Subprocesses the benchmarks run: real `celery worker`s and a gunicorn server.

Both log to bench/results/*.log.tmp (git-ignored) so that a slow or failed run can be read
afterwards. Use them as context managers: they are always stopped, also on errors.
"""

import contextlib
import functools
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType

from bench.env import RESULTS_DIR, ROOT, subprocess_env

QUEUES = "bitrix,calls,sms,recordings,default"
WORK_QUEUES = "calls,recordings,default"  # the production `worker` service
DISPATCH_QUEUES = "bitrix"  # the production `dispatcher` service
LAYOUT = "one worker on calls,recordings,default and one dispatcher on bitrix (as in compose)"
# The web server as shipped (`make run`, docker/): threaded workers, WEB_WORKERS x WEB_THREADS
# (3 x 4 by default), keep-alive, an access log line per request. In production Caddy sits in
# front and keeps its connections to gunicorn open; the generators here keep theirs open too.
SHIPPED_GUNICORN = ["-c", "python:bitrixapp.gunicorn_conf"]
SHIPPED_GUNICORN_TEXT = (
    "as shipped (bitrixapp/gunicorn_conf.py: gthread, 3 workers x 4 threads, keep-alive, "
    "access log)"
)


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Process:
    """A logged child process, terminated (then killed) on stop."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str]) -> None:
        self.name = name
        self.log_path: Path = RESULTS_DIR / f"{name}.log.tmp"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            list(argv), cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()

    def __enter__(self) -> "_Process":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class CeleryWorker(_Process):
    """`celery -A bitrixapp worker` on the given queues, at WARNING so logging costs nothing."""

    def __init__(
        self, name: str, oauth_url: str, concurrency: int = 1, queues: str = QUEUES
    ) -> None:
        self.nodename = f"{name}@bench"
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bitrixapp",
            "worker",
            "-Q",
            queues,
            "-n",
            self.nodename,
            "--concurrency",
            str(concurrency),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "WARNING",
        ]
        super().__init__(f"worker-{name}", argv, subprocess_env(BITRIX24_OAUTH_URL=oauth_url))

    def answers_ping(self) -> bool:
        from bitrixapp.celery import app

        self.check_alive()
        return bool(app.control.ping(destination=[self.nodename], timeout=0.5))


@contextlib.contextmanager
def celery_workers(
    oauth_url: str, count: int, concurrency: int = 1
) -> Iterator[list[CeleryWorker]]:
    """Start `count` worker processes and wait until every one answers a ping. Like the
    production layout (docker/compose.yaml): with two or more, the first serves the work
    queues (call events...) and the rest are dispatchers (queue `bitrix`); one alone serves all."""
    roles = [QUEUES] if count == 1 else [WORK_QUEUES] + [DISPATCH_QUEUES] * (count - 1)
    workers: list[CeleryWorker] = []
    try:
        for i, queues in enumerate(roles):
            workers.append(CeleryWorker(f"w{i + 1}", oauth_url, concurrency, queues))
        for worker in workers:
            wait_until(worker.answers_ping, timeout=60, what=f"{worker.nodename} ready")
        yield workers
    finally:
        for worker in workers:
            worker.stop()


@functools.cache
def _no_control_socket() -> list[str]:
    """Newer gunicorns open a control socket at a fixed path; ours must not clash with others."""
    help_text = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--help"], capture_output=True, text=True, check=False
    ).stdout
    return ["--no-control-socket"] if "--no-control-socket" in help_text else []


class Gunicorn(_Process):
    """`gunicorn bitrixapp.wsgi` on a free local port with the given worker options."""

    def __init__(self, name: str, options: Sequence[str], env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "bitrixapp.wsgi",
            "--bind",
            f"127.0.0.1:{self.port}",
            *_no_control_socket(),
            *options,
        ]
        super().__init__(f"gunicorn-{name}", argv, env)
        try:
            wait_until(self._healthy, timeout=60, what=f"gunicorn ({name}) answering /healthz")
        except BaseException:
            self.stop()
            raise

    def _healthy(self) -> bool:
        self.check_alive()
        try:
            with urllib.request.urlopen(
                urllib.request.Request(
                    f"{self.url}/healthz", headers={"X-Forwarded-Proto": "https"}
                ),
                timeout=2,
            ) as reply:
                return reply.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False
