"""Noticing that the peer of a silent stream went away, without writing to it.

A WSGI app normally learns of a dead client only when a write fails, and a PocketBase stream
may be silent for minutes. So the stream watches its socket for readability: a readable socket
on which a peek returns no bytes (or an error) means the peer closed it.

- gevent: a libev io watcher wakes the stream the moment the socket becomes readable.
- threads: the stream's wait is cut into ``RTBROKER_DISCONNECT_POLL`` slices and the socket
  is polled between them.
- bytes waiting after the request (pipelined, or sent to keep the stream from noticing): the
  socket stays readable, so from then on it is polled every ``RTBROKER_DISCONNECT_POLL``
  seconds for the peer's hang-up alone (``POLLRDHUP``, Linux), which the waiting bytes do not
  hide; past :data:`MAX_PIPELINED_BYTES` of them the stream ends (a full receive window would
  hold the peer's close back); elsewhere the watch stops and failed writes (or the idle
  timeout) end the stream.
- no socket reachable from the WSGI environ: neither; heartbeats (or the idle timeout) end it.
"""

from __future__ import annotations

import array
import fcntl
import select
import socket
import termios
from typing import TYPE_CHECKING, Any, Mapping

from .runtime.concurrency import ReadWatch, Runtime, system_poll

if TYPE_CHECKING:
    from .client import DefaultClient

_PEEK_FLAGS = socket.MSG_PEEK | socket.MSG_DONTWAIT
_HANG_UP = getattr(select, "POLLRDHUP", 0)
"""The poll event of a peer that closed (or shut down writing), reported even while unread
bytes wait; 0 where the platform has none."""
MAX_PIPELINED_BYTES = 64 * 1024
"""Unread bytes after a stream's request past which the stream ends: no HTTP client sends that
much ahead of a response that never ends, and a full receive window keeps the peer's FIN out."""


def unread_bytes(fileno: int) -> int:
    """How many received bytes wait unread on the socket *fileno* (0 when it cannot be told)."""
    count = array.array("i", [0])
    try:
        fcntl.ioctl(fileno, termios.FIONREAD, count)
    except OSError:
        return 0
    return count[0]


def find_socket(environ: Mapping[str, Any]) -> Any | None:
    """Return the client socket of this request, or None when the server does not expose it.

    Known: gunicorn (``gunicorn.socket``), werkzeug's server (``werkzeug.socket``) and
    gevent.pywsgi (the raw socket under ``wsgi.input``'s reader).
    """
    for key in ("gunicorn.socket", "werkzeug.socket"):
        sock = environ.get(key)
        if sock is not None:
            return sock
    rfile = getattr(environ.get("wsgi.input"), "rfile", None)
    return getattr(getattr(rfile, "raw", None), "_sock", None)


def peer_closed(sock: Any) -> bool:
    """Peek at *sock*: True if the peer closed it (EOF or error), False if bytes wait or none do."""
    try:
        return sock.recv(1, _PEEK_FLAGS) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


class DisconnectWatch:
    """Watches one stream's socket; :meth:`closed` says whether the peer went away.

    Under gevent :attr:`readable` turns True (and the client is woken) when the socket becomes
    readable, so a stream can skip :meth:`closed` until then; on threads it is polled.
    """

    __slots__ = ("_sock", "_poll", "_watch", "readable", "_client", "poll_interval", "_slice", "_hang_up_only")

    def __init__(self, runtime: Runtime, sock: Any | None, client: "DefaultClient", poll_interval: float) -> None:
        self._sock = sock
        self._client = client
        self._poll: select.poll | None = None
        self._watch: ReadWatch | None = None
        self.readable = False
        self.poll_interval: float | None = None
        """Seconds between two looks at the socket when it must be polled (else None)."""
        self._slice = poll_interval
        self._hang_up_only = False
        if sock is None:
            return
        try:
            fileno = sock.fileno()
        except OSError:
            self._sock = None
            return
        if runtime.watches_sockets:
            self._watch = runtime.watch_readable(fileno, self)  # no bound method to keep alive
        else:
            self._poll = select.poll()
            self._poll.register(fileno, select.POLLIN | select.POLLPRI)
            self.poll_interval = poll_interval

    def __call__(self) -> None:
        """From the hub, when the socket becomes readable (the watch is its own callback): note
        it, stop watching (level-triggered), wake the stream to look."""
        self.readable = True
        if self._watch is not None:
            self._watch.stop()
        self._client.wake()

    def closed(self) -> bool:
        """Return True if the peer closed the connection (checks the socket only when readable)."""
        if self._sock is None:
            return False
        if self._hang_up_only:
            assert self._poll is not None
            # POLLRDHUP, POLLHUP or POLLERR: the peer is gone; a flood: it may be gone behind it
            return bool(self._poll.poll(0)) or unread_bytes(self._sock.fileno()) > MAX_PIPELINED_BYTES
        if self._poll is not None:
            self.readable = bool(self._poll.poll(0))
        if not self.readable:
            return False
        self.readable = False
        if peer_closed(self._sock):
            return True
        self._watch_hang_up()
        return False

    def _watch_hang_up(self) -> None:
        """Bytes are waiting (a pipelined request, which this stream never answers): they keep
        the socket readable, so poll it every slice for the hang-up alone; without
        ``POLLRDHUP``, stop watching (failed writes still end the stream)."""
        sock = self._sock
        self.stop()
        if not _HANG_UP or sock is None:
            return
        try:
            fileno = sock.fileno()
        except OSError:
            return
        self._sock = sock
        self._poll = system_poll()
        self._poll.register(fileno, _HANG_UP)
        self._hang_up_only = True
        self.readable = True  # look on every wake
        self.poll_interval = self._slice

    def stop(self) -> None:
        """Stop watching and release the watcher; safe to call more than once."""
        if self._watch is not None:
            self._watch.stop()
            self._watch.close()
            self._watch = None
        self._poll = None
        self._sock = None
        self._hang_up_only = False
        self._client = None  # type: ignore[assignment]
