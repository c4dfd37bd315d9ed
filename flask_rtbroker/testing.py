"""Test helpers for apps using flask_rtbroker: a raw-socket SSE client speaking the protocol.

::

    with SSEClient.connect("127.0.0.1", port) as sse:
        requests.post(url, json={"clientId": sse.client_id, "subscriptions": ["example"]})
        event = sse.next_event(timeout=2)   # Event(id=..., name="example", data='{"test":123}')

It reads the response as bytes from a socket (no HTTP library in between), so tests see exactly
what a browser would: the head, the chunk framing and every event.
"""

from __future__ import annotations


import socket
import time
from dataclasses import dataclass, field
from typing import Any

from . import encoding


class StreamEnded(Exception):
    """The server ended the stream (zero-size chunk, or the connection closed)."""


@dataclass
class Event:
    """One parsed SSE event (``id:``, ``event:`` and the joined ``data:`` lines)."""

    id: str
    name: str
    data: str
    raw: bytes = b""

    def json(self) -> Any:
        """Decode the event's data as JSON."""
        return encoding.loads(self.data)


@dataclass
class SSEClient:
    """A blocking SSE client on a plain socket. Use :meth:`connect` to open one."""

    sock: socket.socket
    status_line: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    head: bytes = b""
    chunked: bool = False
    body: bytes = b""
    _buffer: bytes = b""
    _pending: bytes = b""
    ended: bool = False
    client_id: str = ""
    connect_event: Event | None = None

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        path: str = "/api/realtime",
        *,
        headers: dict[str, str] | None = None,
        http_version: str = "1.1",
        timeout: float = 5.0,
        source_address: tuple[str, int] | None = None,
        read_connect: bool = True,
    ) -> "SSEClient":
        """Open the stream, read the head and (by default, on a 200) the ``PB_CONNECT`` event.

        A refused stream (e.g. 503, 429) is returned too: check :attr:`status`.
        """
        sock = socket.create_connection((host, port), timeout=timeout, source_address=source_address)
        lines = [f"GET {path} HTTP/{http_version}", f"Host: {host}:{port}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        client = cls(sock)
        client._read_head(timeout)
        if read_connect and client.status == 200:
            client.connect_event = client.next_event(timeout)
            client.client_id = client.connect_event.id
        return client

    def _recv(self, deadline: float) -> bytes:
        data = recv_before(self.sock, deadline)
        if not data:
            self.ended = True
        return data

    def _read_head(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self._buffer:
            data = self._recv(deadline)
            if not data:
                raise StreamEnded(f"connection closed before the response head: {self._buffer!r}")
            self._buffer += data
        self.head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        self.status_line, *header_lines = self.head.split(b"\r\n")
        for line in header_lines:
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"

    @property
    def status(self) -> int:
        """The response status code."""
        return int(self.status_line.split()[1])

    def _decode_body(self) -> bool:
        """Move complete body bytes from the socket buffer to ``_pending``; True at end of body."""
        if not self.chunked:
            self._pending += self._buffer
            self.body += self._buffer
            self._buffer = b""
            return self.ended
        while b"\r\n" in self._buffer:
            size_line, rest = self._buffer.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if len(rest) < size + 2:
                return False
            if size == 0:
                self._buffer = rest
                return True
            chunk, self._buffer = rest[:size], rest[size + 2 :]
            self._pending += chunk
            self.body += chunk
        return False

    def next_event(self, timeout: float = 5.0) -> Event:
        """Return the next event; skip comments; raise StreamEnded or TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n\n" in self._pending:
                raw, self._pending = self._pending.split(b"\n\n", 1)
                event = _parse_event(raw)
                if event is not None:
                    return event
            if self._decode_body():
                raise StreamEnded("the server ended the stream")
            if b"\n\n" in self._pending:
                continue
            if self.ended:
                raise StreamEnded("the connection closed")
            self._buffer += self._recv(deadline)

    def wait_end(self, timeout: float) -> float:
        """Read until the stream ends; return the seconds it took. Events read meanwhile are dropped."""
        start = time.monotonic()
        deadline = start + timeout
        while True:
            try:
                self.next_event(max(0.001, deadline - time.monotonic()))
            except StreamEnded:
                return time.monotonic() - start

    def close(self) -> None:
        """Close the socket (a clean FIN)."""
        self.sock.close()

    def __enter__(self) -> "SSEClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def recv_before(sock: socket.socket, deadline: float) -> bytes:
    """Receive what *sock* has by the monotonic *deadline*: b"" when the peer closed (or reset)
    the connection, TimeoutError when nothing came in time."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("no data from the server in time")
    sock.settimeout(remaining)
    try:
        return sock.recv(65536)
    except socket.timeout:
        raise TimeoutError("no data from the server in time") from None
    except ConnectionError:
        return b""


def _parse_event(raw: bytes) -> Event | None:
    fields: dict[str, list[str]] = {}
    for line in raw.decode("utf-8").split("\n"):
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name, []).append(value)
    if not fields:
        return None
    return Event(
        id=fields.get("id", [""])[-1],
        name=fields.get("event", ["message"])[-1],
        data="\n".join(fields.get("data", [])),
        raw=raw + b"\n\n",
    )
