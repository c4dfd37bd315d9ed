"""Test helpers for apps using flask_rtbroker: a raw-socket SSE client speaking the protocol.

::

    with SSEClient.connect("127.0.0.1", port) as sse:
        requests.post(url, json={"clientId": sse.client_id, "subscriptions": ["example"]})
        event = sse.next_event(timeout=2)   # Event(id=..., name="example", data='{"test":123}')

It reads the response as bytes from a socket (no HTTP library in between), so tests see exactly
what a browser would: the head, the chunk framing and every event. Its parser is public, for
tests that read responses their own way: :func:`parse_head`, :func:`read_chunk` and
:func:`split_event` take bytes and return what they parsed and the bytes left over;
:func:`parse_event` and :func:`parse_events` turn SSE blocks into :class:`Event` objects (e.g.
what a :class:`~flask_rtbroker.client.DefaultClient` has queued: ``parse_events(client.take())``).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Any

from ..protocol import encoding
from ..errors import RtBrokerError


class StreamEnded(RtBrokerError, ConnectionError):
    """The server ended the stream (zero-size chunk, or the connection closed)."""


class ReadTimeout(RtBrokerError, TimeoutError):
    """Nothing came from the server in time."""


class FramingError(RtBrokerError, ValueError):
    """The response's chunked framing is broken."""


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
    _body_ended: bool = False
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
        self.status_line, header_lines = parse_head(self.head)
        self.headers.update((name.lower(), value) for name, value in header_lines)
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
        while True:
            chunk, self._buffer = read_chunk(self._buffer)
            if chunk is None:
                return False
            if not chunk.data:
                return True
            self._pending += chunk.data
            self.body += chunk.data

    def next_event(self, timeout: float = 5.0) -> Event:
        """Return the next event; skip comments; raise StreamEnded or ReadTimeout."""
        deadline = time.monotonic() + timeout
        while True:
            block, self._pending = split_event(self._pending)
            if block is not None:
                event = parse_event(block)
                if event is not None:
                    return event
                continue
            if self._body_ended:  # only once the events before the end were returned
                raise StreamEnded("the server ended the stream")
            decoded = len(self._pending)
            self._body_ended = self._decode_body()
            if self._body_ended or len(self._pending) > decoded:
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
        raise ReadTimeout("no data from the server in time")
    sock.settimeout(remaining)
    try:
        return sock.recv(65536)
    except socket.timeout:
        raise ReadTimeout("no data from the server in time") from None
    except ConnectionError:
        return b""


def parse_head(head: bytes) -> tuple[bytes, list[tuple[str, str]]]:
    """Split a response *head* (the bytes before its blank line) into its status line and its
    header lines, in wire order as ``(name, value)``: duplicates and the name's case kept."""
    status_line, *lines = head.split(b"\r\n")
    headers = []
    for line in lines:
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    return status_line, headers


@dataclass(frozen=True)
class Chunk:
    """One chunk of a chunked body: its size line as sent and its payload (b"" for the last one)."""

    size_line: bytes
    data: bytes


def read_chunk(buffer: bytes) -> tuple[Chunk | None, bytes]:
    """Take the first chunk off *buffer* (chunked body bytes): ``(chunk, rest)``, or
    ``(None, buffer)`` while it is incomplete.

    Raises FramingError for a size line that is not hexadecimal or a chunk not ended by CRLF.
    """
    size_line, found, rest = buffer.partition(b"\r\n")
    if not found:
        return None, buffer
    try:
        size = int(size_line.split(b";")[0], 16)
    except ValueError:
        raise FramingError(f"chunk size line is not hexadecimal: {size_line!r}") from None
    if len(rest) < size + 2:
        return None, buffer
    if rest[size : size + 2] != b"\r\n":
        raise FramingError(f"chunk of {size} bytes not ended by CRLF: {rest[: size + 2]!r}")
    return Chunk(size_line, rest[:size]), rest[size + 2 :]


def split_event(data: bytes) -> tuple[bytes | None, bytes]:
    """Take the first SSE block, through its blank line, off decoded body *data*:
    ``(block, rest)``, or ``(None, data)`` while it is incomplete."""
    block, found, rest = data.partition(b"\n\n")
    if not found:
        return None, data
    return block + found, rest


def parse_event(raw: bytes) -> Event | None:
    """The event in one block from :func:`split_event`; None for comments only."""
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
        raw=raw,
    )


def parse_events(data: bytes) -> list[Event]:
    """Every event in *data*, decoded SSE text such as :meth:`DefaultClient.take` returns;
    comments are skipped. Raises FramingError when *data* ends inside an event."""
    events = []
    block, data = split_event(data)
    while block is not None:
        event = parse_event(block)
        if event is not None:
            events.append(event)
        block, data = split_event(data)
    if data:
        raise FramingError(f"data ends inside an event: {data!r}")
    return events
