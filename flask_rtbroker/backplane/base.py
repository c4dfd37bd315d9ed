"""Backplane: moves opaque payloads between the processes of one deployment.

A backend implements:

- ``listen()``, a blocking generator: it connects, yields :data:`READY` once it is receiving,
  then yields each payload until :attr:`Backplane.closed`; it raises (or returns) when the
  connection is lost;
- either ``publish(payload: bytes)``, which sends one payload to every process listening
  (itself included) and raises on failure;
- or, with :attr:`Backplane.routes` True, channels: ``publish_to(channel, payload)`` reaches
  only the processes listening on that channel (and says how many), ``listen()`` subscribes to
  :meth:`Backplane.channels` when it connects and reports each confirmed subscription with
  :meth:`Backplane.confirmed`, and ``subscribe_now``/``unsubscribe_now`` change the live
  subscription. Every process listens on :data:`ALL` and its own inbox (``p:<route>``); the
  cluster asks for more (``t:<topic>``, ``c:<collection>``) with :meth:`Backplane.want` as its
  clients subscribe, and lets go of them, in batches, with :meth:`Backplane.sweep`, which the
  listener calls on every turn of its loop (it acts on a timer, and promptly while more than
  :data:`MAX_UNSWEPT_CHANNELS` channels are held that no client needs).

It may also override :attr:`Backplane.has_peers` (False for a bus nobody else can join) and
:meth:`Backplane.close` (to wake a listener blocked in ``listen()``), calling the base's.

This base owns the rest: the :class:`Envelope` with this process's origin id (which starts with
its route) and its :class:`~.envelope.Stamp` (channel, sequence, time: see :mod:`.freshness`),
dropping its own echoes and stale or replayed envelopes, the listener greenlet/thread with reconnect and capped
exponential backoff, starting lazily (and again after a fork, with a fresh origin and route),
the up/down state with one log line per change, and a write-only mode for publishers that
never listen (jobs, scripts).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
import socket
import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from ..runtime.ids import random_chars
from .envelope import Envelope, EnvelopeError, Stamp
from .freshness import ReplayGuard
from .signing import sign, verified

if TYPE_CHECKING:
    from ..runtime.concurrency import Runtime

log = logging.getLogger("flask_rtbroker.backplane")

READY = b""
"""Yielded by ``listen()`` once, as soon as it receives; not a payload."""

STATE_UP = "up"
STATE_DOWN = "down"

EnvelopeHandler = Callable[[Envelope], None]
StateHandler = Callable[[str, "BaseException | None"], None]


ROUTE_LENGTH = 8
"""Characters of a process's route: the start of its origin and of its clients' ids."""
ALL = "all"
"""The channel every process listens on: counts, clear-auth and unrouted kinds."""
SWEEP_INTERVAL = 10.0
"""Seconds between two sweeps of the channels no local client needs any more."""
MAX_UNSWEPT_CHANNELS = 1000
"""Channels a process may hold that no local client needs before a sweep comes at once (at
most every :data:`PROMPT_SWEEP_INTERVAL` seconds) and drops those not asked for in the last
:data:`PROMPT_GRACE` seconds: the slack a churning client can leave behind."""
PROMPT_SWEEP_INTERVAL = 0.25
"""Least seconds between two sweeps made because :data:`MAX_UNSWEPT_CHANNELS` was passed; also
at least nine times what the last sweep took, so they take at most a tenth of the listener's time."""
PROMPT_GRACE = 0.5
"""Seconds a channel is kept after :meth:`Backplane.want` returned, by a prompt sweep: time for
the POST that asked to hand its keys to its client."""
UNKNOWN = -1
"""What :meth:`Backplane.send` returns when the backend cannot tell how many processes listen."""
DEFAULT_MAX_AGE = 30.0
"""Seconds a stamped envelope stays fresh (see :mod:`.freshness`)."""


def new_route() -> str:
    """A random route: :data:`ROUTE_LENGTH` characters of ``[A-Za-z0-9]``."""
    return random_chars(ROUTE_LENGTH)


def new_origin(route: str) -> str:
    """A process-unique origin id: the *route*, then host and pid."""
    return f"{route}@{socket.gethostname()}:{os.getpid()}"


def route_of(identifier: str) -> str:
    """The route an origin or a client id starts with."""
    return identifier[:ROUTE_LENGTH]


def inbox(route: str) -> str:
    """The channel of the process with *route*: forwarded POSTs, replies, sends."""
    return f"p:{route}"


class Backplane:
    """Base class of backplanes; subclasses implement :meth:`publish` and :meth:`listen`."""

    url = "custom"
    routes = False
    """True when a payload reaches only the listeners of its channel (see the module doc)."""

    def __init__(
        self,
        *,
        write_only: bool = False,
        secret: bytes | None = None,
        max_age: float = DEFAULT_MAX_AGE,
        accept_unstamped: bool = False,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 2.0,
    ) -> None:
        self.write_only = write_only
        self.secret = secret
        """The shared secret that signs and checks every envelope (see :mod:`.signing`), or None."""
        self.rejected = 0
        """Payloads dropped because they were not envelopes or (with a secret) not signed by a peer."""
        self.replayed = 0
        """Envelopes dropped because they were stale, seen already or on a channel not theirs."""
        self.guard = ReplayGuard(max_age, accept_unstamped=accept_unstamped or secret is None)
        """Which received envelopes are fresh and new; without a secret, unstamped ones pass too."""
        self._sequence = itertools.count(1)
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.route = new_route()
        self.origin = new_origin(self.route)
        self._origin_pid = os.getpid()
        """The process route, origin and locks were made in: a process forked after it makes its own."""
        self.received = 0
        """Payloads this process's listener has taken off the backplane (its own echoes included)."""
        self.keep_channels: Callable[[], set[str]] | None = None
        """What :meth:`sweep` keeps, when the cluster sets it: the channels local clients need."""
        self._wanted: dict[str, float] = {}
        """Channels asked for with :meth:`want`, and when they were last asked for."""
        self._subscribed: set[str] = set()
        """Channels a SUBSCRIBE was sent for on the live connection (or will be on the next)."""
        self._listening: set[str] = set()
        self._confirmations: dict[str, Any] = {}
        self._make_locks()
        self._next_sweep = 0.0
        self._next_prompt_sweep = 0.0
        self._sweep_soon = False
        """Set by :meth:`want` when more than :data:`MAX_UNSWEPT_CHANNELS` may be unneeded."""
        self._kept = 0
        """How many of the wanted channels the last sweep found needed by local clients."""
        self.state: str | None = None
        self._pid: int | None = None
        self._closed = False
        self._runtime: Runtime | None = None
        self._on_envelope: EnvelopeHandler | None = None
        self._on_state: StateHandler | None = None
        self._ready: Any = None
        self._started_at = 0.0

    def _make_locks(self) -> None:
        """Make the locks of this process: at construction, and again on the first start in a
        process forked after it (gunicorn's workers with ``--preload``). The parent's would be
        OS locks made before gevent patched ``threading``: a greenlet waiting on one that another
        greenlet holds across I/O (a Redis SUBSCRIBE while connecting) stalls the whole worker."""
        self._channels_lock = threading.Lock()

    # -- implemented by backends ---------------------------------------------------------------

    def publish(self, payload: bytes) -> None:
        """Send *payload* to every listening process; raise on failure."""
        raise NotImplementedError

    def listen(self) -> Iterator[bytes]:
        """Yield :data:`READY`, then every payload received; raise or return when disconnected."""
        raise NotImplementedError

    def publish_to(self, channel: str, payload: bytes) -> int:
        """Send *payload* to the processes listening on *channel*; return how many; raise on failure."""
        raise NotImplementedError

    def subscribe_now(self, channels: list[str]) -> None:
        """Add *channels* to the live subscription (confirmed later through :meth:`confirmed`)."""
        raise NotImplementedError

    def unsubscribe_now(self, channels: list[str]) -> None:
        """Drop *channels* from the live subscription."""
        raise NotImplementedError

    @property
    def has_peers(self) -> bool:
        """False when no other process can be listening (a private in-memory bus)."""
        return True

    # -- channels (routing backends) -----------------------------------------------------------

    def channels(self) -> set[str]:
        """Every channel this process listens on: :data:`ALL`, its inbox and what it was asked for."""
        with self._channels_lock:
            return {ALL, inbox(self.route), *self._wanted}

    def confirmed(self, channel: str) -> None:
        """Called by ``listen()``: the subscription to *channel* is live."""
        with self._channels_lock:
            self._listening.add(channel)
            waiting = self._confirmations.pop(channel, None)
        if waiting is not None:
            waiting.set()

    def listening_to(self, channel: str) -> bool:
        """True once a subscription to *channel* was confirmed on the live connection."""
        return channel in self._listening

    def want(self, channels: Iterable[str], timeout: float) -> bool:
        """Listen on *channels* too, and wait (at most *timeout* seconds) until every one is
        confirmed: a payload published after that reaches this process. True when they all are;
        False when the listener is down (they are subscribed when it reconnects) or too slow."""
        if not self.routes or self.write_only:
            return True
        now = time.monotonic()
        with self._channels_lock:
            channels = list(channels)
            self._wanted.update(dict.fromkeys(channels, now))  # asked for now: no sweep drops it soon
            missing = [channel for channel in channels if channel not in self._listening]
            new = [channel for channel in missing if channel not in self._subscribed]
            self._subscribed.update(new)
            waits = [self._confirmations.setdefault(channel, self._event()) for channel in missing]
            if new and len(self._wanted) - self._kept > MAX_UNSWEPT_CHANNELS:
                self._sweep_soon = True
        if new and self.state == STATE_UP:
            try:
                self.subscribe_now(new)
            except Exception as exc:  # noqa: BLE001 - the listener reconnects and subscribes them all
                log.warning("could not subscribe to %d backplane channel(s): %s", len(new), exc)
                self._asked(channels)
                return False
        try:
            if self.state != STATE_UP:
                return False
            deadline = time.monotonic() + timeout
            return all(wait.wait(max(0.0, deadline - time.monotonic())) for wait in waits)
        finally:
            self._asked(channels)

    def _asked(self, channels: list[str]) -> None:
        """Date *channels* as asked for now (a :meth:`want` returns): no sweep drops them for a while."""
        now = time.monotonic()
        with self._channels_lock:
            wanted = self._wanted
            for channel in channels:
                if channel in wanted:
                    wanted[channel] = now

    def sweep(self, now: float | None = None) -> None:
        """Stop listening on the channels :attr:`keep_channels` no longer lists and nobody asked
        for in the last :data:`SWEEP_INTERVAL` seconds (a POST asks before its client holds the
        keys); batched, every :data:`SWEEP_INTERVAL` seconds, and while more than
        :data:`MAX_UNSWEPT_CHANNELS` are unneeded, at most every :data:`PROMPT_SWEEP_INTERVAL`
        seconds with a grace of :data:`PROMPT_GRACE` only; a needed channel a sweep dropped
        (its client got it later than the grace) is subscribed again. Called by routing
        backends' ``listen()`` on every turn; *now* (a ``time.monotonic()`` value) runs it as
        of that time."""
        now = time.monotonic() if now is None else now
        due = now >= self._next_sweep
        if not (due or (self._sweep_soon and now >= self._next_prompt_sweep)) or self.keep_channels is None:
            return
        if due:
            self._next_sweep = now + SWEEP_INTERVAL
        started = time.monotonic()
        keep = self.keep_channels()
        with self._channels_lock:
            wanted = self._wanted
            unneeded = [channel for channel in wanted if channel not in keep]
            recent = now - (PROMPT_GRACE if len(unneeded) > MAX_UNSWEPT_CHANNELS else SWEEP_INTERVAL)
            gone = [channel for channel in unneeded if wanted[channel] < recent]
            for channel in gone:
                del wanted[channel]
            self._subscribed.difference_update(gone)
            self._listening.difference_update(gone)
            lost = [channel for channel in keep if channel not in wanted]  # a client got it after a sweep dropped it
            wanted.update(dict.fromkeys(lost, now))
            new = [channel for channel in lost if channel not in self._subscribed]
            self._subscribed.update(new)
            self._kept = len(wanted) - (len(unneeded) - len(gone))
            self._sweep_soon = len(unneeded) - len(gone) > MAX_UNSWEPT_CHANNELS  # kept by the grace: again soon
        if gone:
            self.unsubscribe_now(gone)
        if new and self.state == STATE_UP:
            self.subscribe_now(new)
        self._next_prompt_sweep = now + max(PROMPT_SWEEP_INTERVAL, 9 * (time.monotonic() - started))

    def _event(self) -> Any:
        if self._runtime is not None:
            return self._runtime.event()
        return threading.Event()

    def _connection_lost(self) -> None:
        with self._channels_lock:
            self._listening.clear()
            self._subscribed = set(self._wanted)  # the next listen() subscribes them all

    # -- owned by the base ---------------------------------------------------------------------

    def start(self, runtime: "Runtime", on_envelope: EnvelopeHandler, on_state: StateHandler) -> None:
        """Start listening (unless write-only) in this process; again after a fork. Idempotent."""
        pid = os.getpid()
        if self._pid == pid:
            return
        self._own_origin()
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

    def send(self, envelope: Envelope, channel: str = ALL, on_stamp: Callable[[Stamp], None] | None = None) -> int | None:
        """Publish *envelope* on *channel*; return how many processes it reached (:data:`UNKNOWN`
        when the backend cannot tell); on failure report the backplane down and return None.
        The envelope goes out stamped with *channel*, this origin's next sequence number and the time
        (handed to *on_stamp* first)."""
        self._own_origin()
        stamp = Stamp(channel, next(self._sequence), int(time.time() * 1000))
        if on_stamp is not None:
            on_stamp(stamp)
        payload = replace(envelope, stamp=stamp).encode()
        if self.secret is not None:
            payload = sign(payload, self.secret)
        try:
            if self.routes:
                reached = self.publish_to(channel, payload)
            else:
                self.publish(payload)
                reached = UNKNOWN
        except Exception as exc:  # noqa: BLE001 - any backend failure means "down"
            self._set_state(STATE_DOWN, exc)
            return None
        if self.write_only:
            self._set_state(STATE_UP, None)
        return reached

    def envelope(self, kind: str, fields: dict | None = None, body: bytes = b"") -> Envelope:
        """Build an envelope from this process."""
        self._own_origin()
        return Envelope(self.origin, kind, fields or {}, body)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called: ``listen()`` should return."""
        return self._closed

    def close(self) -> None:
        """Stop the listener after its current wait."""
        self._closed = True

    def _own_origin(self) -> None:
        """In a forked child (an Emitter or app made before a fork, used after it, e.g. gunicorn
        --preload), take a route, origin, sequence and locks of its own, and nothing subscribed
        yet: siblings sharing a route take each other's clients for their own, the parent's
        sequence numbers from two processes would look like replays, and locks made before
        gevent patched threading stall the worker."""
        if self._origin_pid != os.getpid():
            self.route = new_route()
            self.origin = new_origin(self.route)
            self._origin_pid = os.getpid()
            self._sequence = itertools.count(1)
            self._make_locks()
            self._connection_lost()

    def _listens_on(self, channel: str) -> bool:
        """True when this process receives what is published on *channel* (every channel, on a
        backend that does not route)."""
        return not self.routes or channel in (ALL, inbox(self.route)) or channel in self._wanted

    def count_replay(self, reason: str) -> None:
        """Count a stale or replayed envelope (dropped); log the first and then every 1000th."""
        self.replayed += 1
        if self.replayed % 1000 == 1:
            log.warning("dropping stale or replayed backplane envelopes (%d so far): %s", self.replayed, reason)

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
            self._connection_lost()
            if self._closed:
                return
            self._set_state(STATE_DOWN, error)
            assert self._runtime is not None
            self._runtime.sleep(delay)
            delay = min(delay * 2, self.max_reconnect_delay)

    def _dispatch(self, payload: bytes) -> None:
        self.received += 1
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
        if envelope.stamp is not None and not self._listens_on(envelope.stamp.channel):
            self.count_replay(f"an envelope for channel {envelope.stamp.channel[:80]!r}, which this process does not listen on")
            return
        refusal = self.guard.refusal(envelope.origin, envelope.stamp, time.time())
        if refusal is not None:
            self.count_replay(refusal)
            return
        try:
            self._on_envelope(envelope)
        except EnvelopeError as exc:  # a handler found its fields malformed
            self._reject(str(exc))
        except Exception:  # noqa: BLE001 - one bad message must not stop the listener
            log.exception("error handling a %r backplane message from %r", envelope.kind, envelope.origin)
