"""Keeps the processes of `make run` running in the foreground (web, workers, dispatcher, beat).

Each child's output is printed line by line behind its name, as `12:00:01 worker | ...`.
A child that exits (a crash, the OOM killer, `kill -9`) is started again after a pause that
doubles from 1 s up to 30 s and falls back to 1 s once the child has stayed up for a minute,
so a child that cannot start does not spin. The other children keep running meanwhile: a dead
worker no longer takes the web server (and the webhooks it is receiving) down with it.

Ctrl-C or SIGTERM stops everything: each child gets SIGTERM (Celery finishes its current task,
gunicorn its requests), then SIGKILL after the grace period or at a second Ctrl-C. Children
run in sessions of their own, so a terminal's Ctrl-C reaches only this supervisor, which
stops them in order, and anything a dead child left behind is killed with its process group.
"""

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 60.0
POLL_S = 0.2


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    backoff_s: float = FIRST_BACKOFF_S
    restart_at: float | None = None


class Supervisor:
    def __init__(
        self,
        commands: Mapping[str, Sequence[str]],
        out: TextIO,
        env: Mapping[str, str] | None = None,
        grace_s: float = 15.0,
    ):
        self.children = [Child(name, argv) for name, argv in commands.items()]
        self.out = out
        # Unbuffered: a child's lines reach the terminal as they are written, not at its exit.
        self.env = {**(env if env is not None else os.environ), "PYTHONUNBUFFERED": "1"}
        self.grace_s = grace_s
        self._width = max(len(name) for name in commands)
        self._print_lock = threading.Lock()
        self._stop_signals = 0

    def run(self) -> int:
        """Run until SIGINT/SIGTERM; returns the exit status for the command (0)."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_stop_signal)
        for child in self.children:
            self._start(child)
        while not self._stop_signals:
            for child in self.children:
                self._tend(child)
            time.sleep(POLL_S)
        self._stop_all()
        return 0

    def _on_stop_signal(self, signum: int, frame: object) -> None:
        self._stop_signals += 1

    def stop(self) -> None:
        """Stop everything as Ctrl-C would (for a caller that finishes on its own: `make demo`
        run headless)."""
        self._stop_signals += 1

    def _start(self, child: Child) -> None:
        # The argv come from serve.py's own table, never from input.
        child.proc = subprocess.Popen(  # noqa: S603
            child.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        child.started_at = time.monotonic()
        child.restart_at = None
        self.say(child.name, f"started (pid {child.proc.pid})")
        threading.Thread(target=self._relay, args=(child.name, child.proc), daemon=True).start()

    def _relay(self, name: str, proc: subprocess.Popen) -> None:
        for raw in proc.stdout:
            self.say(name, raw.decode(errors="replace").rstrip("\n"))

    def _tend(self, child: Child) -> None:
        """Notice a child's exit and schedule its restart; restart it when its pause is over."""
        now = time.monotonic()
        if child.restart_at is not None:
            if now >= child.restart_at:
                self._start(child)
            return
        code = child.proc.poll()
        if code is None:
            return
        _kill_group(child.proc.pid)  # what it left behind, e.g. gunicorn workers on the port
        if now - child.started_at >= STABLE_AFTER_S:
            child.backoff_s = FIRST_BACKOFF_S
        self.say(child.name, f"exited ({_describe(code)}); restarting in {child.backoff_s:g} s")
        child.restart_at = now + child.backoff_s
        child.backoff_s = min(child.backoff_s * 2, MAX_BACKOFF_S)

    def _stop_all(self) -> None:
        running = [c for c in self.children if c.proc and c.proc.poll() is None]
        self.say("serve", f"stopping {', '.join(c.name for c in running) or 'nothing'}")
        for child in running:
            _signal(child.proc, signal.SIGTERM)
        stop_signals = self._stop_signals
        deadline = time.monotonic() + self.grace_s
        while any(c.proc.poll() is None for c in running):
            if time.monotonic() > deadline or self._stop_signals > stop_signals:
                self.say("serve", "grace period over: killing what is left")
                break
            time.sleep(POLL_S)
        for child in self.children:
            if child.proc:
                _kill_group(child.proc.pid)
                child.proc.wait()

    def say(self, name: str, line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        with self._print_lock:
            self.out.write(f"{stamp} {name:<{self._width}} | {line}\n")
            self.out.flush()


def _signal(proc: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signum)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _describe(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"
