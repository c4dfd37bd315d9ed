"""Write-through: a delivery written straight to the client's socket, not through its stream.

Under gevent, where the stream's socket is known (gunicorn's gevent worker, gevent.pywsgi), a
send to a client with nothing queued and nothing being written writes the client's framed
bytes, HTTP chunk framing included, with one non-blocking ``send`` from the sender's greenlet
(a large event goes out with one ``sendmsg`` of its buffers, so its shared data is not copied).
No stream wakes, no greenlet switches, and the first subscribers of a fan-out get the event
while later ones are still being sent to.

One owner of the socket at a time: the :class:`SocketWriter` is *busy* while the stream writes
(what was queued, heartbeats, the rest of a partial write) and until the stream has found its
queue empty, and a busy writer refuses, so the send queues as before. A partial or would-block
write keeps the unsent rest here (one message's bytes at most), marks the writer busy and
wakes the stream, which writes that rest before anything else. The server itself writes only
the response head with ``PB_CONNECT`` (before the writer exists) and the last chunk (after the
stream ended, and with it the writer).
"""

from __future__ import annotations

from time import monotonic
from typing import Any, Mapping

_CRLF = b"\r\n"
_EVENT_END = b"\n\n"
JOIN_LIMIT = 16 * 1024
"""Events up to this many bytes are joined into one buffer for ``send``; larger ones are
written with ``sendmsg`` of their buffers as they are."""


class SocketWriter:
    """Writes one stream's bytes to its socket, framed as the server would have framed them."""

    __slots__ = ("_sock", "_raw", "chunked", "busy", "pending", "written", "last_written")

    def __init__(self, sock: Any, chunked: bool) -> None:
        self._sock = sock
        self._raw = getattr(sock, "_sock", sock)
        """The real socket under gevent's: its ``send`` never blocks (the fd is non-blocking)."""
        self.chunked = chunked
        """HTTP/1.1 chunked transfer coding (else HTTP/1.0: the bytes as they are)."""
        self.busy = True
        """The stream owns the socket (it is writing, or has not yet found its queue empty)."""
        self.pending = b""
        """The unsent rest of a partial write, for the stream to write first."""
        self.written = 0
        """Deliveries written through (the stream counts them as activity for its idle timer)."""
        self.last_written = 0.0
        """Monotonic time of the last of them."""

    def frame(self, data: bytes) -> bytes:
        """*data* as one chunk of the response body."""
        if not self.chunked:
            return data
        return b"%X\r\n" % len(data) + data + _CRLF

    def offer(self, data: bytes) -> bool:
        """Write *data* now unless the stream owns the socket; False when it does (queue it).

        True means the bytes are on their way: all written, or the rest kept in
        :attr:`pending` with the writer busy (the caller wakes the stream). A socket error
        (the peer is gone) propagates.
        """
        if self.busy:
            return False
        framed = self.frame(data)
        try:
            sent = self._raw.send(framed)
        except (BlockingIOError, InterruptedError):
            sent = 0
        self.written += 1
        self.last_written = monotonic()
        if sent < len(framed):
            self.pending = framed[sent:]
            self.busy = True
        return True

    def offer_event(self, prefix: bytes, line: bytes, data_lines: bytes) -> bool:
        """:meth:`offer` for one event given as its ``id:`` line *prefix*, its ``event:`` *line*
        and its shared *data_lines* (the event's end added here): joined when small, else one
        ``sendmsg`` of the buffers as they are."""
        if self.busy:
            return False
        end = _EVENT_END
        size = len(prefix) + len(line) + len(data_lines) + len(end)
        chunked = self.chunked
        sendmsg = None if size <= JOIN_LIMIT else getattr(self._raw, "sendmsg", None)
        if sendmsg is None:
            if chunked:
                framed = b"".join((b"%X\r\n" % size, prefix, line, data_lines, end, _CRLF))
            else:
                framed = b"".join((prefix, line, data_lines, end))
            buffers = None
        else:
            header = b"%X\r\n" % size if chunked else b""
            buffers = (header, prefix, line, data_lines, end, _CRLF if chunked else b"")
            framed = None
        try:
            sent = self._raw.send(framed) if sendmsg is None else sendmsg(buffers)
        except (BlockingIOError, InterruptedError):
            sent = 0
        self.written += 1
        self.last_written = monotonic()
        if framed is None:
            framed = b"".join(buffers) if sent < sum(map(len, buffers)) else b""  # type: ignore[arg-type]
        if sent < len(framed):
            self.pending = framed[sent:]
            self.busy = True
        return True

    def write(self, data: bytes) -> None:
        """From the stream: write the pending rest, then *data* (framed), blocking cooperatively
        (the socket's send timeout bounds it)."""
        if self.pending:
            pending, self.pending = self.pending, b""
            self._sock.sendall(pending)
        if data:
            self._sock.sendall(self.frame(data))

    def close(self) -> None:
        """Take the socket from the senders for good (the stream is ending)."""
        self.busy = True


def socket_writer(environ: Mapping[str, Any], sock: Any | None) -> SocketWriter | None:
    """A writer for this stream's socket, or None where the server's framing is not known: no
    socket, not a GET (HEAD has no body), or an HTTP version other than 1.0 and 1.1."""
    if sock is None or environ.get("REQUEST_METHOD") != "GET":
        return None
    protocol = environ.get("SERVER_PROTOCOL")
    if protocol == "HTTP/1.1":
        return SocketWriter(sock, chunked=True)
    if protocol == "HTTP/1.0":
        return SocketWriter(sock, chunked=False)
    return None
