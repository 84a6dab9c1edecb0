"""A loopback TCP proxy in front of PostgreSQL that can play an outage.

The app's processes connect to the proxy instead of the shared PostgreSQL server, which is
never stopped (other test runs use it). `outage(seconds)` cuts every open connection (a reset,
as when the server process dies) and, for that long, resets every new connection as soon as
it is accepted: psycopg raises OperationalError on both, exactly as with a server that went
away. Afterwards connections pass through again. Everything runs in daemon threads.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time

# SO_LINGER with a zero timeout: close() sends RST instead of FIN (a dead server, not a
# polite goodbye).
_RESET = struct.pack("ii", 1, 0)


class PgProxy:
    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._refuse_until = 0.0
        self._closed = False
        self.refused = 0  # connections reset during outages
        self.accepted = 0  # connections passed through
        threading.Thread(target=self._accept_loop, name="pg-proxy", daemon=True).start()

    # ------------------------------------------------------------------ control

    def url(self, user: str, database: str) -> str:
        return f"postgres://{user}@127.0.0.1:{self.port}/{database}"

    def outage(self, seconds: float) -> None:
        """From now on for `seconds`: open connections are cut, new ones are reset."""
        with self._lock:
            self._refuse_until = time.monotonic() + seconds
            pairs = list(self._pairs)
            self._pairs.clear()
        for pair in pairs:
            _reset(*pair)

    @property
    def refusing(self) -> bool:
        return time.monotonic() < self._refuse_until

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.outage(0)

    # ------------------------------------------------------------------ plumbing

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refusing:
                self.refused += 1
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _reset(client)
                continue
            server.settimeout(None)
            pair = (client, server)
            with self._lock:
                self._pairs.add(pair)
                self.accepted += 1
            for src, dst in ((client, server), (server, client)):
                threading.Thread(
                    target=self._pump, args=(src, dst, pair), name="pg-proxy-pump", daemon=True
                ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, pair: tuple) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._pairs.discard(pair)
        _reset(*pair)


def _reset(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RD)  # wakes the pump thread blocked in recv()
        with contextlib.suppress(OSError):
            sock.close()
