"""Raw-socket helpers for the protocol-conformance tests (test_protocol_*.py).

``RawStream`` keeps the response head as a list of header lines (duplicates and case intact)
and reads the body chunk by chunk, so tests can check the exact bytes of the chunked framing;
the parsing is :mod:`flask_rtbroker.testing`'s (``parse_head``, ``read_chunk``, ``split_event``).
``raw_request`` sends one request with ``Connection: close`` and returns everything the
server wrote. ``ServerPool`` starts live servers lazily and shares them within a test module.
"""

from __future__ import annotations

import socket
import struct
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from flask_rtbroker.testing import parse_head, read_chunk, recv_before, split_event
from tests.live import HOST, LiveServer

SECURITY_HEADERS = {
    "cross-origin-opener-policy": "same-origin",
    "x-content-type-options": "nosniff",
    "x-frame-options": "SAMEORIGIN",
    "x-xss-protection": "1; mode=block",
}
GENERIC_400 = b'{"data":{},"message":"Something went wrong while processing your request.","status":400}'


def unique(prefix: str = "t") -> str:
    """A topic name no other test uses (servers are shared by a module)."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


class Headers:
    """Response header lines in wire order; lookups are case-insensitive on the name."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self.items = items

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.items if key.lower() == name.lower()]

    def get(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def one(self, name: str) -> str:
        """The value of a header that must appear exactly once."""
        values = self.all(name)
        assert len(values) == 1, f"expected one {name} header, got {values!r} in {self.items!r}"
        return values[0]

    def __contains__(self, name: str) -> bool:
        return bool(self.all(name))

    def tokens(self, name: str) -> list[str]:
        """Comma-separated values of every *name* header (e.g. all Vary entries)."""
        return [part.strip() for value in self.all(name) for part in value.split(",") if part.strip()]


def _send_request(
    port: int,
    method: str,
    path: str,
    version: str,
    headers: dict[str, str] | None,
    body: bytes | None,
    source: str | None,
    timeout: float,
) -> socket.socket:
    sock = socket.create_connection(
        (HOST, port), timeout=timeout, source_address=(source, 0) if source else None
    )
    lines = [f"{method} {path} HTTP/{version}", f"Host: {HOST}:{port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body is not None and not any(k.lower() == "content-length" for k in (headers or {})):
        lines.append(f"Content-Length: {len(body)}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
    return sock


class RawStream:
    """One response read off a plain socket, head first, then the body chunk by chunk."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        """Bytes read and not parsed yet."""
        self.pending = b""
        """Chunk payloads not yet split into SSE blocks."""
        self.raw_body = b""
        self.closed_by_peer = False
        self.status_line = b""
        self.headers = Headers([])
        self.last_size_line = b""

    @classmethod
    def open(
        cls,
        port: int,
        *,
        method: str = "GET",
        path: str = "/api/realtime",
        version: str = "1.1",
        headers: dict[str, str] | None = None,
        source: str | None = None,
        timeout: float = 5.0,
    ) -> "RawStream":
        """Send the request and read the response head."""
        all_headers = {"Accept": "text/event-stream", **(headers or {})}
        stream = cls(_send_request(port, method, path, version, all_headers, None, source, timeout))
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in stream.buffer:
            if not stream._fill(deadline):
                raise EOFError(f"connection closed before the head: {stream.buffer!r}")
        head, stream.buffer = stream.buffer.split(b"\r\n\r\n", 1)
        stream.raw_body = stream.buffer
        stream.status_line, items = parse_head(head)
        stream.headers = Headers(items)
        return stream

    @property
    def status(self) -> int:
        return int(self.status_line.split()[1])

    @property
    def chunked(self) -> bool:
        return "chunked" in [t.lower() for t in self.headers.tokens("Transfer-Encoding")]

    def _fill(self, deadline: float) -> bool:
        """Read more bytes into the buffer; False when the peer closed the connection."""
        data = recv_before(self.sock, deadline)
        if not data:
            self.closed_by_peer = True
            return False
        self.buffer += data
        self.raw_body += data
        return True

    def next_chunk(self, timeout: float = 5.0) -> bytes:
        """Return the payload of the next chunk; b"" is the zero-size (last) chunk.

        Raises EOFError when the connection closes first, TimeoutError when nothing comes.
        """
        assert self.chunked, "next_chunk needs a chunked response"
        deadline = time.monotonic() + timeout
        while True:
            chunk, self.buffer = read_chunk(self.buffer)
            if chunk is not None:
                self.last_size_line = chunk.size_line
                return chunk.data
            if not self._fill(deadline):
                raise EOFError(f"connection closed mid-body; pending {self.buffer!r}")

    def next_event_bytes(self, timeout: float = 5.0) -> bytes:
        """Return the bytes of the next SSE block (through its blank line), for any framing."""
        deadline = time.monotonic() + timeout
        if self.chunked:
            block, self.pending = split_event(self.pending)
            while block is None:
                chunk = self.next_chunk(max(0.001, deadline - time.monotonic()))
                if chunk == b"":
                    raise EOFError("the stream ended")
                block, self.pending = split_event(self.pending + chunk)
            return block
        block, self.buffer = split_event(self.buffer)
        while block is None:
            if not self._fill(deadline):
                raise EOFError("the connection closed")
            block, self.buffer = split_event(self.buffer)
        return block

    def wait_end(self, timeout: float) -> tuple[float, list[bytes]]:
        """Read chunks until the zero-size chunk; return (seconds waited, the chunks before it)."""
        start = time.monotonic()
        chunks = []
        while True:
            chunk = self.next_chunk(max(0.001, start + timeout - time.monotonic()))
            if chunk == b"":
                return time.monotonic() - start, chunks
            chunks.append(chunk)

    def read_until(self, marker: bytes, timeout: float) -> bytes:
        """Read until *marker* is in the unparsed buffer (or the peer closes); return the buffer."""
        deadline = time.monotonic() + timeout
        while marker not in self.buffer and self._fill(deadline):
            pass
        return self.buffer

    def read_until_closed(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while self._fill(deadline):
            pass
        return self.buffer

    def reset(self) -> None:
        """Abortive close: SO_LINGER 0 makes close() send an RST instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "RawStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class RawResponse:
    status_line: bytes
    headers: Headers
    body: bytes

    @property
    def status(self) -> int:
        return int(self.status_line.split()[1])


def _complete(data: bytes) -> bool:
    """True once *data* holds a whole response with a Content-Length."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    lengths = Headers(parse_head(head)[1]).all("Content-Length")
    return bool(lengths) and len(body) >= int(lengths[0])


def raw_request(
    port: int,
    method: str = "POST",
    path: str = "/api/realtime",
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    source: str | None = None,
    timeout: float = 10.0,
) -> RawResponse:
    """Send one request with ``Connection: close``; return the response read to EOF."""
    sock = _send_request(
        port, method, path, "1.1", {"Connection": "close", **(headers or {})}, body, source, timeout
    )
    data = b""
    deadline = time.monotonic() + timeout
    with sock:
        while time.monotonic() < deadline:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                part = sock.recv(65536)
            except ConnectionError:
                part = b""
            if not part:
                break
            data += part
            if _complete(data):  # some servers wait for the client to close first
                break
    head, sep, body_bytes = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head: {data!r}"
    status_line, items = parse_head(head)
    response = RawResponse(status_line, Headers(items), body_bytes)
    if "chunked" in [t.lower() for t in response.headers.tokens("Transfer-Encoding")]:
        response.body = _dechunk(body_bytes)
    return response


def _dechunk(body: bytes) -> bytes:
    """The payload of a whole chunked *body*, through its last (zero-size) chunk."""
    decoded = b""
    chunk, rest = read_chunk(body)
    while chunk is not None and chunk.data:
        decoded += chunk.data
        chunk, rest = read_chunk(rest)
    assert chunk is not None, f"the chunked body ends before its last chunk: {body!r}"
    return decoded


def post_json(port: int, body: Any, *, headers: dict[str, str] | None = None, source: str | None = None) -> RawResponse:
    """POST *body* (bytes as given, anything else JSON-encoded) as application/json."""
    import json

    data = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
    return raw_request(
        port, body=data, headers={"Content-Type": "application/json", **(headers or {})}, source=source
    )


@dataclass
class ServerPool:
    """Live servers started on first use, keyed by (mode, config name), stopped by :meth:`stop`."""

    log_dir: Path
    configs: dict[str, dict[str, str]]
    servers: dict[tuple[str, str], LiveServer] = field(default_factory=dict)

    def __call__(self, mode: str, config: str = "default") -> LiveServer:
        key = (mode, config)
        if key not in self.servers:
            self.servers[key] = LiveServer(mode, env=dict(self.configs[config])).start(self.log_dir)
        return self.servers[key]

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


def pool_fixture(log_dir: Path, configs: dict[str, dict[str, str]]) -> Iterator[ServerPool]:
    pool = ServerPool(log_dir, configs)
    try:
        yield pool
    finally:
        pool.stop()
