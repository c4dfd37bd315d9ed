"""A tiny round-robin TCP proxy on loopback: connection n goes to backend n % len(backends).

It records the first request line each connection carried, so a test can see that a client's
stream and its subscription POSTs went to different server processes. With ``streams_rotate``
only the connections opening a stream (``GET /api/realtime``) take turns; the others all go to
the first backend, so a client's consecutive streams alternate even when it reuses connections.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

from tests.live import HOST, free_port


@dataclass
class RoundRobinProxy:
    """Accepts on a free port and splices each connection to the next backend port."""

    backends: list[int]
    port: int = 0
    routes: list[tuple[int, bytes]] = field(default_factory=list)
    streams_rotate: bool = False
    _streams: int = 0
    _listener: socket.socket | None = None
    _closed: bool = False

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> "RoundRobinProxy":
        self.port = free_port()
        self._listener = socket.create_server((HOST, self.port))
        self._listener.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        count = 0
        while not self._closed:
            try:
                downstream, _ = self._listener.accept()  # type: ignore[union-attr]
            except socket.timeout:
                continue
            except OSError:
                return
            if self.streams_rotate:
                threading.Thread(target=self._route_by_request, args=(downstream,), daemon=True).start()
                continue
            backend = self.backends[count % len(self.backends)]
            count += 1
            self._splice(downstream, backend)

    def _route_by_request(self, downstream: socket.socket) -> None:
        """Send a stream's connection to the next backend, any other to the first."""
        downstream.settimeout(10)
        try:
            head = downstream.recv(64, socket.MSG_PEEK)
        except OSError:
            downstream.close()
            return
        backend = self.backends[0]
        if head.startswith(b"GET /api/realtime"):
            backend = self.backends[self._streams % len(self.backends)]
            self._streams += 1
        self._splice(downstream, backend)

    def _splice(self, downstream: socket.socket, backend: int) -> None:
        downstream.settimeout(None)
        upstream = socket.create_connection((HOST, backend), timeout=10)
        upstream.settimeout(None)
        first_line: list[bytes] = []
        threading.Thread(target=self._pump, args=(downstream, upstream, backend, first_line), daemon=True).start()
        threading.Thread(target=self._pump, args=(upstream, downstream, None, None), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, backend: int | None, first_line: list[bytes] | None) -> None:
        try:
            while not self._closed:
                data = source.recv(65536)
                if not data:
                    break
                if first_line is not None and not first_line:
                    first_line.append(data.split(b"\r\n", 1)[0])
                    self.routes.append((backend or 0, first_line[0]))
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        self._closed = True
        if self._listener is not None:
            self._listener.close()
