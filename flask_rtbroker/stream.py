"""One SSE connection's life: register, PB_CONNECT, drain the queue, end, unregister.

The stream writes everything queued since its last write as one chunk, resets the idle timer
on every delivered message (heartbeats do not count), ends on the idle timeout, the max
lifetime, a discard (slow consumer, application, shutdown) or a vanished peer, and unregisters
its client on every exit path, including the WSGI server closing the iterator. While it runs,
its socket has a send timeout, so a peer that stops reading cannot hold the stream forever.
"""

from __future__ import annotations

import socket
from time import monotonic
from typing import TYPE_CHECKING, Any, Generator, Mapping, Protocol

from . import signals
from .client import DefaultClient, DisconnectReason
from .disconnect import DisconnectWatch, find_socket
from .protocol.message import PB_CONNECT, Message
from .write_through import socket_writer

if TYPE_CHECKING:
    from flask import Flask

    from .runtime.concurrency import Runtime
    from .config import Settings

HEARTBEAT_FRAME = b":\n\n"
_NEVER = float("inf")



def _set_timeout(sock: Any | None, timeout: float | None) -> Any:
    """Set *sock*'s timeout; return the previous one (None when there is no usable socket)."""
    if sock is None:
        return None
    try:
        previous = sock.gettimeout()
        sock.settimeout(timeout)
    except OSError:
        return None
    return previous



class StreamHost(Protocol):
    """What a stream uses of its app's process-local broker (:class:`~flask_rtbroker.state.BrokerState`)."""

    settings: "Settings"

    @property
    def runtime(self) -> "Runtime": ...

    def start_sweeper(self) -> None: ...

    def lifetime_for_new_stream(self) -> float: ...

    def connected(self, client: DefaultClient) -> None: ...

    def disconnected(self, client: DefaultClient, reason: DisconnectReason) -> None: ...

    def release(self, ip: str) -> None: ...

    def wait_for_claim(self, client: DefaultClient) -> None: ...

class StreamBody:
    """The response body of a stream: its generator, and the stream slot it gives back to
    *state* once, when the server closes it, even if the server never started it.

    Iterating it iterates the generator itself, so the server resumes the stream without a
    Python ``__next__`` between them (a shallower stack for each parked stream to keep).
    """

    __slots__ = ("_stream", "_state", "_ip", "_client")

    def __init__(
        self, stream: Generator[bytes, None, None], state: "StreamHost", ip: str, client: DefaultClient | None = None
    ) -> None:
        self._stream = stream
        self._state: StreamHost | None = state
        self._ip = ip
        self._client = client

    def __iter__(self) -> Generator[bytes, None, None]:
        return self._stream

    def close(self) -> None:
        """End the stream (its ``finally`` unregisters the client) and release its slot; while
        the process shuts down handing its ghosts over, wait for this one's claim first."""
        try:
            self._stream.close()
        finally:
            state, self._state = self._state, None
            if state is not None:
                state.release(self._ip)
                if self._client is not None:
                    state.wait_for_claim(self._client)


def event_stream(
    app: "Flask", state: "StreamHost", client: DefaultClient, environ: Mapping[str, Any]
) -> Generator[bytes, None, None]:
    """Yield the stream's bytes; the generator's ``finally`` unregisters *client*.

    With write-through (:mod:`.write_through`) only ``PB_CONNECT`` is yielded: the server
    writes it with the response head, then the stream and the senders write to the socket.
    """
    settings = state.settings
    reason = DisconnectReason.CLOSED
    sock = find_socket(environ)
    watch = None
    writer = socket_writer(environ, sock) if settings.write_through and state.runtime.watches_sockets else None
    server_timeout = _set_timeout(sock, settings.send_timeout)
    state.connected(client)
    try:
        signals.client_connected.send(app, client=client)
        watch = DisconnectWatch(state.runtime, sock, client, settings.disconnect_poll)
        yield Message(PB_CONNECT, {"clientId": client.id}).frame(client.id)
        if writer is not None:
            # The server holds the item it last wrote until the next one, and this stream yields
            # nothing more: make that item an empty one (written as nothing), not PB_CONNECT.
            yield b""
        client.writer = writer  # busy until the loop first finds the queue empty

        now = monotonic()
        lifetime_end = now + state.lifetime_for_new_stream()
        idle_end = now + settings.idle_timeout
        heartbeat = settings.heartbeat or _NEVER
        next_heartbeat = now + heartbeat
        delivered = False
        written_through = 0
        sweeping = state.runtime.sweeps_deadlines
        if sweeping:
            state.start_sweeper()
        while True:
            data = client.take()
            if writer is not None:
                if data or writer.pending:
                    if client.discard_reason == DisconnectReason.SLOW:
                        reason = DisconnectReason.SLOW  # its queue is gone; a half-written
                        return  # chunk stays so: the socket is shut down below
                    writer.busy = True
                    writer.write(data)
                    delivered = True
                    continue
                writer.busy = False  # queue empty, nothing pending: senders may write through
                if writer.written != written_through:
                    written_through = writer.written
                    idle_end = writer.last_written + settings.idle_timeout
                    next_heartbeat = writer.last_written + heartbeat
            elif data:
                yield data
                delivered = True
                continue
            if client.discard_reason is not None:
                reason = client.discard_reason
                return
            if client.ending is not None:  # ended, its session kept (see BrokerState.shutdown)
                reason = client.ending
                return
            now = monotonic()
            if delivered:
                delivered = False
                idle_end = now + settings.idle_timeout
                next_heartbeat = now + heartbeat
            if now >= lifetime_end:
                reason = DisconnectReason.LIFETIME
                return
            if now >= idle_end:
                reason = DisconnectReason.IDLE
                return
            if now >= next_heartbeat:
                if writer is None:
                    yield HEARTBEAT_FRAME
                else:
                    writer.busy = True
                    writer.write(HEARTBEAT_FRAME)
                next_heartbeat = monotonic() + heartbeat
                continue
            if sweeping:
                client.deadline = min(lifetime_end, idle_end, next_heartbeat)
                if watch.poll_interval is not None:  # bytes wait on the socket: look for the hang-up
                    client.deadline = min(client.deadline, now + watch.poll_interval)
                if client.waker.wait(None):
                    client.waker.clear()
                if watch.readable and watch.closed():
                    reason = DisconnectReason.CLOSED
                    return
            else:
                wait = min(lifetime_end, idle_end, next_heartbeat) - now
                if watch.poll_interval is not None:
                    wait = min(wait, watch.poll_interval)
                if client.waker.wait(wait):
                    client.waker.clear()
                if watch.closed():
                    reason = DisconnectReason.CLOSED
                    return
    except OSError:
        reason = DisconnectReason.CLOSED  # a write of ours failed or timed out: the peer is gone
    finally:
        if writer is not None:
            writer.close()
            client.writer = None
            if client.discard_reason == DisconnectReason.SLOW and writer.pending:
                _shut_down(sock)
        if watch is not None:
            watch.stop()
        _set_timeout(sock, server_timeout)
        if client.ending is not None and client.discard_reason is None:
            _shut_down(sock)  # the client sees the end now; its request waits for the claim
        state.disconnected(client, reason)  # discards it, or keeps its session as a ghost
        signals.client_disconnected.send(app, client=client, reason=reason)


def _shut_down(sock: Any) -> None:
    """End a connection whose last chunk was cut off, so the server's last chunk cannot follow
    half a chunk."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
