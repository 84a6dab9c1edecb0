"""What every live fake shares: a threaded HTTP server on 127.0.0.1 (ephemeral port) that a
fake starts and stops, and that can drop its open keep-alive connections (for outages)."""

from __future__ import annotations

import contextlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: Any, handler: type[BaseHTTPRequestHandler], port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), handler)
        self.fake = fake
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()

    def close_open_sockets(self) -> None:
        with self.sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class TrackingHandler(BaseHTTPRequestHandler):
    """Keep-alive handler that registers its connection with the server; quiet."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm on, the second waits for
    # the client's delayed ACK (~40 ms on Linux) on a kept-alive connection, and benchmarks
    # would measure the fake instead of the app.
    disable_nagle_algorithm = True
    server: LoopbackServer

    def setup(self) -> None:
        super().setup()
        with self.server.sockets_lock:
            self.server.open_sockets.add(self.connection)

    def finish(self) -> None:
        with self.server.sockets_lock:
            self.server.open_sockets.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """No access log on stderr."""


class LoopbackFake:
    """Start/stop/context-manager for a fake served by `handler_class` in a daemon thread."""

    handler_class: ClassVar[type[TrackingHandler]]
    thread_name: ClassVar[str] = "fake"
    listen_port: int = 0  # 0: an ephemeral port; `make demo` sets fixed ones for its links
    _server: LoopbackServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> Any:
        if self._server is None:
            self._server = LoopbackServer(self, self.handler_class, self.listen_port)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=self.thread_name,
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_open_sockets()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._server.server_address[1]
