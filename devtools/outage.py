"""A loopback TCP proxy in front of the API server that a test can break.

``refuse``: every new connection is closed at once (a crashed server behind
a load balancer).  ``hang``: connections are accepted and held unanswered (a
stopped server); going back to ``forward`` connects the held ones.  Any
change of mode cuts the connections that were being forwarded, as a real
outage would, so pooled client connections cannot hide it.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from devtools.waiting import until

FORWARD, REFUSE, HANG = "forward", "refuse", "hang"


class Proxy:
    def __init__(self, target_url: str) -> None:
        parsed = urlparse(target_url)
        self.target = (parsed.hostname or "127.0.0.1", parsed.port or 443)
        self.mode = FORWARD
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._forwarding: list[socket.socket] = []
        self._held: list[socket.socket] = []
        # Connections refused since the proxy started.
        self.refused = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def set(self, mode: str) -> None:
        with self._lock:
            self.mode = mode
            for s in self._forwarding:
                _close(s)
            self._forwarding.clear()
            held, self._held = self._held, []
        for conn in held:
            if mode == FORWARD:
                self._forward(conn)
            elif mode == REFUSE:
                _close(conn)
            else:
                self._held.append(conn)

    def close(self) -> None:
        self.set(REFUSE)
        self._listener.close()

    @property
    def held(self) -> int:
        """How many connections are held now (``hang``)."""
        with self._lock:
            return len(self._held)

    def wait_held(self, n: int, timeout: float = 30.0) -> None:
        """Until at least ``n`` connections are held: a caller's request is
        waiting on the API server."""
        until(lambda: self.held >= n, f"{n} held connections", timeout)

    def wait_refused(self, n: int, timeout: float = 30.0) -> None:
        """Until at least ``n`` connections in all have been refused."""
        until(lambda: self.refused >= n, f"{n} refused connections", timeout)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                mode = self.mode
                if mode == HANG:
                    self._held.append(conn)
            if mode == REFUSE:
                self.refused += 1
                _close(conn)
            elif mode == FORWARD:
                self._forward(conn)

    def _forward(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
        except OSError:
            _close(conn)
            return
        with self._lock:
            self._forwarding += [conn, upstream]
        for a, b in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        _close(source)
        _close(sink)


def proxied_kubeconfig(kubeconfig: Path, server: str, proxy: Proxy, path: Path) -> Path:
    """A copy of ``kubeconfig`` whose road to ``server`` goes through ``proxy``."""
    path.write_text(kubeconfig.read_text().replace(server, proxy.url))
    return path
