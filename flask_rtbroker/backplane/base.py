"""Backplane: moves opaque payloads between the processes of one deployment.

A backend implements two methods:

- ``publish(payload: bytes)`` sends one payload to every process listening (itself included);
  it raises on failure.
- ``listen()`` is a blocking generator: it connects, yields :data:`READY` once it is receiving,
  then yields each payload until :attr:`Backplane.closed`; it raises (or returns) when the
  connection is lost.

It may also override :attr:`Backplane.has_peers` (False for a bus nobody else can join) and
:meth:`Backplane.close` (to wake a listener blocked in ``listen()``), calling the base's.

This base owns the rest: the :class:`Envelope` with this process's origin id, dropping its own
echoes, the listener greenlet/thread with reconnect and capped exponential backoff, starting
lazily (and again after a fork, with a fresh origin id), the up/down state with one log line per
change, and a write-only mode for publishers that never listen (jobs, scripts).
"""

from __future__ import annotations

import logging
import os
import time
import secrets
import socket
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .envelope import Envelope, EnvelopeError
from .signing import sign, verified

if TYPE_CHECKING:
    from ..concurrency import Runtime

log = logging.getLogger("flask_rtbroker.backplane")

READY = b""
"""Yielded by ``listen()`` once, as soon as it receives; not a payload."""

STATE_UP = "up"
STATE_DOWN = "down"

EnvelopeHandler = Callable[[Envelope], None]
StateHandler = Callable[[str, "BaseException | None"], None]


def new_origin() -> str:
    """A process-unique origin id: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Backplane:
    """Base class of backplanes; subclasses implement :meth:`publish` and :meth:`listen`."""

    url = "custom"

    def __init__(
        self,
        *,
        write_only: bool = False,
        secret: bytes | None = None,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 2.0,
    ) -> None:
        self.write_only = write_only
        self.secret = secret
        """The shared secret that signs and checks every envelope (see :mod:`.signing`), or None."""
        self.rejected = 0
        """Payloads dropped because they were not envelopes or (with a secret) not signed by a peer."""
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.origin = new_origin()
        self.state: str | None = None
        self._pid: int | None = None
        self._closed = False
        self._runtime: Runtime | None = None
        self._on_envelope: EnvelopeHandler | None = None
        self._on_state: StateHandler | None = None
        self._ready: Any = None
        self._started_at = 0.0

    # -- implemented by backends ---------------------------------------------------------------

    def publish(self, payload: bytes) -> None:
        """Send *payload* to every listening process; raise on failure."""
        raise NotImplementedError

    def listen(self) -> Iterator[bytes]:
        """Yield :data:`READY`, then every payload received; raise or return when disconnected."""
        raise NotImplementedError

    @property
    def has_peers(self) -> bool:
        """False when no other process can be listening (a private in-memory bus)."""
        return True

    # -- owned by the base ---------------------------------------------------------------------

    def start(self, runtime: "Runtime", on_envelope: EnvelopeHandler, on_state: StateHandler) -> None:
        """Start listening (unless write-only) in this process; again after a fork. Idempotent."""
        pid = os.getpid()
        if self._pid == pid:
            return
        if self._pid is not None:
            self.origin = new_origin()
        self._pid = pid
        self._runtime, self._on_envelope, self._on_state = runtime, on_envelope, on_state
        self._closed = False
        self._ready = runtime.event()
        self._started_at = time.monotonic()
        if not self.write_only:
            runtime.spawn(self._listen_forever)

    def wait_ready(self, grace: float) -> None:
        """Within *grace* seconds of :meth:`start`, wait for the listener's first subscription.

        A message published before this process listens is not delivered to it (pub/sub), so
        a process's first requests wait for it; later ones (or a backplane that stays down)
        don't wait at all.
        """
        remaining = self._started_at + grace - time.monotonic()
        if remaining > 0 and self._ready is not None and not self.write_only:
            self._ready.wait(remaining)

    def send(self, envelope: Envelope) -> bool:
        """Publish *envelope*; on failure report the backplane down and return False."""
        payload = envelope.encode()
        try:
            self.publish(payload if self.secret is None else sign(payload, self.secret))
        except Exception as exc:  # noqa: BLE001 - any backend failure means "down"
            self._set_state(STATE_DOWN, exc)
            return False
        if self.write_only:
            self._set_state(STATE_UP, None)
        return True

    def envelope(self, kind: str, fields: dict | None = None, body: bytes = b"") -> Envelope:
        """Build an envelope from this process."""
        return Envelope(self.origin, kind, fields or {}, body)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called: ``listen()`` should return."""
        return self._closed

    def close(self) -> None:
        """Stop the listener after its current wait."""
        self._closed = True

    def _reject(self, reason: str) -> None:
        """Count a dropped payload; log the first and then every 1000th, so a flood cannot fill the log."""
        self.rejected += 1
        if self.rejected % 1000 == 1:
            log.warning("dropping backplane payloads (%d so far): %s", self.rejected, reason)

    def _set_state(self, state: str, error: BaseException | None) -> None:
        if state == self.state:
            return
        self.state = state
        if state == STATE_UP:
            log.info("backplane %s is up", self.url)
        else:
            log.warning("backplane %s is down: %s", self.url, error)
        if self._on_state is not None:
            self._on_state(state, error)

    def _listen_forever(self) -> None:
        delay = self.reconnect_delay
        pid = self._pid
        while not self._closed and os.getpid() == pid:
            try:
                for payload in self.listen():
                    if payload is READY:
                        self._set_state(STATE_UP, None)
                        if self._ready is not None:
                            self._ready.set()
                        delay = self.reconnect_delay
                        continue
                    self._dispatch(payload)
                    if self._closed:
                        return
                error: BaseException = ConnectionError("listener ended")
            except Exception as exc:  # noqa: BLE001 - reconnect on any failure
                error = exc
            if self._closed:
                return
            self._set_state(STATE_DOWN, error)
            assert self._runtime is not None
            self._runtime.sleep(delay)
            delay = min(delay * 2, self.max_reconnect_delay)

    def _dispatch(self, payload: bytes) -> None:
        if self.secret is not None:
            checked = verified(payload, self.secret)
            if checked is None:
                self._reject("a payload without a valid signature (is RTBROKER_BACKPLANE_SECRET the same everywhere?)")
                return
            payload = checked
        try:
            envelope = Envelope.decode(payload)
        except EnvelopeError as exc:
            self._reject(str(exc))
            return
        if envelope.origin == self.origin or self._on_envelope is None:
            return
        try:
            self._on_envelope(envelope)
        except EnvelopeError as exc:  # a handler found its fields malformed
            self._reject(str(exc))
        except Exception:  # noqa: BLE001 - one bad message must not stop the listener
            log.exception("error handling a %r backplane message from %r", envelope.kind, envelope.origin)
