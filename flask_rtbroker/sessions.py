"""Sessions: a subscriber's session outlives its stream for ``RTBROKER_RESUME_WINDOW`` seconds.

When a stream ends for a reason the SDK reconnects after (its lifetime, the idle timeout, the
peer going away), its client is not dropped: it leaves the registry (no POST, no ``send`` finds
it) but stays subscribed and keeps queueing, within its own queue bounds. That is a *ghost*.
The next connection's first subscription POST claims one:

- **explicitly**, with the old client id in the :data:`RESUME_HEADER` request header (the SDK
  sends it when the app sets it in ``pb.beforeSend``): exactly that ghost, if the identity the
  POST's auth decides is the ghost's; the sends targeted at the old id are replayed too;
- **implicitly**, when the identity and the whole set of keys (their ``?options=`` included)
  are the ghost's, byte for byte; among several candidates the one dropped from the same IP,
  then the oldest (the worst case is a duplicate, never a silent loss). Targeted sends held for
  the ghost are dropped: they never cross to another connection without an explicit claim.

The claim moves the ghost's queue in front of everything the new client receives: the ghost
leaves the topic index and the new client enters it with no switch in between, and a delivery
that had already picked the ghost reaches the new client through ``successor``. So nothing is
delivered to both and nothing is lost between. The ghost's store entries come along, the auth
and IP aside (the new POST decides them).

A client subscribed to :data:`SESSION_TOPIC` receives, right after its connection's first POST
and before any replayed message, ``{"recovered": bool, "replayed": n, "reason": ...}``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Callable, Hashable

from .client import AUTH_KEY, IP_KEY, DefaultClient, DisconnectReason
from .runtime.ids import CLIENT_ID_LENGTH
from .protocol import encoding
from .identity import hashable_identity, identity_token
from .protocol.message import Message
from .protocol.options import base_topic

if TYPE_CHECKING:
    from .broker import Broker
    from .runtime.concurrency import Runtime
    from .config import Settings
    from .topic_index import Subscribers

log = logging.getLogger("flask_rtbroker")

SESSION_TOPIC = "@rtbroker/session"
"""The key whose subscribers hear, after each connection's first POST, whether it resumed."""
RESUME_HEADER = "X-Rtbroker-Resume"
"""The request header of an explicit claim: the old client id."""
KEPT_REASONS = frozenset({
    DisconnectReason.LIFETIME, DisconnectReason.IDLE, DisconnectReason.CLOSED, DisconnectReason.SHUTDOWN})
"""Stream ends the SDK reconnects after; any other end (slow, discarded, revoked) drops the
client (a shutdown keeps it only while the process hands its ghosts over to other processes)."""
STARTED_KEY = "@rtbroker/session.started"
"""Store key set by a connection's first POST (only that one claims): :data:`EXPLICIT` when
that POST carried :data:`RESUME_HEADER` (even empty), else True."""
EXPLICIT = "explicit"
_NOT_CARRIED = frozenset({AUTH_KEY, IP_KEY, STARTED_KEY})

Match = tuple[Hashable, frozenset[str]]
"""What an implicit claim compares: the identity and the set of keys."""
SendLocal = Callable[[DefaultClient, Message], bool]
Forget = Callable[[DefaultClient], None]
NewClient = Callable[[], DefaultClient]
WireMatch = tuple[str, str]
"""What an implicit claim compares across processes: the identity token ("" for a guest) and
:func:`keys_digest`."""


def keys_digest(keys: Any) -> str:
    """A digest of a set of keys, the same in every process."""
    return hashlib.sha256(encoding.dumps(sorted(keys))).hexdigest()


def wire_match_of(auth: Any, keys: Any) -> WireMatch | None:
    """The cross-process match of an identity and its keys; None when the identity has no
    token (only this process can match it)."""
    token = "" if auth is None else identity_token(auth)
    return None if token is None else (token, keys_digest(keys))


@dataclass
class HandedOver:
    """A ghost another process handed over: its deliveries as (event, JSON data, origin id),
    in order, and its store entries that JSON can carry."""

    deliveries: list[tuple[str, bytes, tuple[str, int] | None]]
    store: dict[str, Any]
    overflowed: bool


RemoteClaim = Callable[["WireMatch", str, "str | None"], "HandedOver | None"]
"""``(match, ip, resume id) -> HandedOver | None``: ask the other processes for a ghost (this
blocks, a round trip or two on the backplane)."""


class Reason(StrEnum):
    """The ``reason`` of the session event."""

    RESUMED = "resumed"
    """A ghost was claimed: everything it queued follows."""
    NEW = "new"
    """No ghost matched (a first connection, or another identity or set of keys)."""
    EXPIRED = "expired"
    """A matching ghost existed but was dropped: its window passed, or a ghost budget evicted it."""
    OVERFLOW = "overflow"
    """The matching ghost overflowed its queue bounds: what it queued is gone."""
    IDENTITY = "identity"
    """An explicit claim named a ghost of another identity (not claimed)."""


@dataclass(frozen=True)
class Resumption:
    """What a connection's first POST found: the session event's data."""

    recovered: bool
    replayed: int
    reason: Reason

    def payload(self) -> dict[str, Any]:
        """The session event's data."""
        return {"recovered": self.recovered, "replayed": self.replayed, "reason": str(self.reason)}


@dataclass(eq=False)
class Ghost:
    """A client whose stream ended, kept until *expires* (monotonic seconds)."""

    client: DefaultClient
    match: Match
    ip: str
    expires: float
    wire_match: WireMatch | None = None
    """Its match for the other processes' implicit claims (None: explicit claims only)."""
    dropped_at: float = field(default_factory=time.time)
    targeted: list[Message] = field(default_factory=list)
    """Sends addressed to its id since it became a ghost (only an explicit claim gets them)."""
    targeted_bytes: int = 0


def is_client_id(value: str) -> bool:
    """True when *value* has the shape of a client id (40 ASCII letters and digits)."""
    return len(value) == CLIENT_ID_LENGTH and value.isascii() and value.isalnum()


def match_of(auth: Any, keys: Any) -> Match:
    """What an implicit claim compares for an identity and its keys."""
    return hashable_identity(auth), frozenset(keys)


class Sessions:
    """The ghosts of one app in one process, by id and by :data:`Match`, oldest first."""

    def __init__(
        self, broker: "Broker", settings: "Settings", runtime: Callable[[], "Runtime"], forget: Forget,
        new_client: NewClient,
    ) -> None:
        self._broker = broker
        self._new_client = new_client
        self.remote: RemoteClaim | None = None
        """Set by :mod:`.session_handover` when other processes may hold ghosts."""
        self._window = settings.resume_window
        self._max_ghosts = settings.resume_max_ghosts
        self._memory = settings.resume_memory
        self._max_per_ip = settings.max_clients_per_ip
        self._max_targeted_bytes = settings.client_queue_bytes
        self._runtime = runtime
        self._forget = forget
        self._ghosts: OrderedDict[str, Ghost] = OrderedDict()
        self._by_match: dict[Match, list[Ghost]] = {}
        self._by_wire: dict[WireMatch, list[Ghost]] = {}
        self._per_ip: dict[str, int] = {}
        self._gone: OrderedDict[Hashable, float] = OrderedDict()
        """Matches and ids of ghosts dropped unclaimed within a window (to say ``expired``):
        when that memory ends, at most twice ``RTBROKER_RESUME_MAX_GHOSTS`` of them."""
        self._sweeper_pid: int | None = None
        self.resumed = 0
        self.expired = 0
        self.handed_over = 0

    def __len__(self) -> int:
        return len(self._ghosts)

    def ghost(self, client_id: str) -> DefaultClient | None:
        """The ghost client with *client_id*, if there is one."""
        ghost = self._ghosts.get(client_id)
        return ghost.client if ghost is not None else None

    def clients(self) -> list[DefaultClient]:
        """The ghost clients, oldest first (a snapshot)."""
        return [ghost.client for ghost in self._ghosts.values()]

    def queued_bytes(self) -> int:
        """The bytes every ghost holds queued (its targeted sends included)."""
        return sum(g.client.queued_bytes + g.targeted_bytes for g in self._ghosts.values())

    def stats(self) -> dict[str, int]:
        """Figures for ``broker.stats()``."""
        return {
            "session_ghosts": len(self._ghosts),
            "session_ghost_bytes": self.queued_bytes(),
            "sessions_resumed_total": self.resumed,
            "sessions_expired_total": self.expired,
            "sessions_handed_over_total": self.handed_over,
        }

    # -- a stream ends ---------------------------------------------------------------------------

    def keep(self, client: DefaultClient, reason: str) -> bool:
        """Keep *client*, whose stream ended for *reason*, as a ghost; False when it is not kept
        (sessions off, an end the SDK does not come back from, no subscriptions, discarded)."""
        if not self._window or reason not in KEPT_REASONS or client.is_discarded:
            return False
        keys = client.subscriptions()
        if not keys:
            return False
        if self._broker.detach(client.id) is None:
            return False
        ip = client.get(IP_KEY) or ""
        wire_match = None
        if client.get(STARTED_KEY) == EXPLICIT:  # an app that claims explicitly: no implicit claim takes it
            match: Match = (client.id, frozenset())
        else:
            match = match_of(client.get(AUTH_KEY), keys)
            wire_match = wire_match_of(client.get(AUTH_KEY), keys)
        ghost = Ghost(client, match, ip, time.monotonic() + self._window, wire_match)
        self._ghosts[client.id] = ghost
        self._by_match.setdefault(ghost.match, []).append(ghost)
        if wire_match is not None:
            self._by_wire.setdefault(wire_match, []).append(ghost)
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        if self._max_per_ip and self._per_ip[ip] > self._max_per_ip:
            self._drop(next(g for g in self._ghosts.values() if g.ip == ip))
        while len(self._ghosts) > self._max_ghosts:
            self._drop(next(iter(self._ghosts.values())))
        self._start_sweeper()
        return True

    def hold_targeted(self, client_id: str, message: Message) -> bool:
        """Keep a send addressed to a ghost's id for an explicit claim; False when *client_id*
        is no ghost. Past the client's queue bytes the ghost has overflowed."""
        ghost = self._ghosts.get(client_id)
        if ghost is None:
            return False
        size = len(message.data_lines) + len(message.name)
        if ghost.targeted_bytes + size > self._max_targeted_bytes:
            ghost.client.discard(DisconnectReason.SLOW)
            return True
        ghost.targeted.append(message)
        ghost.targeted_bytes += size
        return True

    def divert_targeted(self, subscribers: "Subscribers", message: Message) -> "Subscribers":
        """A notify narrowed to client ids: hold its deliveries to ghosts as targeted sends
        (see :meth:`hold_targeted`) and return the other subscribers."""
        if not self._ghosts:
            return subscribers
        kept = {}
        for client, keys in subscribers.items():
            if client.id in self._ghosts:
                for key in keys:
                    self.hold_targeted(client.id, message.renamed(key))
            else:
                kept[client] = keys
        return kept

    # -- a connection's first POST ---------------------------------------------------------------

    def start(
        self, client: DefaultClient, keys: list[str], auth: Any, ip: str, resume_id: str | None, send_local: SendLocal
    ) -> Resumption | None:
        """Give *client* its subscriptions *keys*; on its connection's first POST, claim a ghost
        (see the module docstring) and return what happened (None on later POSTs).

        Nothing in here switches greenlets: the hand-over is one step for every delivery."""
        if client.get(STARTED_KEY):
            client.set_subscriptions(keys)
            return None
        client.set(STARTED_KEY, EXPLICIT if resume_id is not None else True)
        if resume_id and not is_client_id(resume_id):
            resume_id = ""  # not an id any process made: claims nothing, names no inbox
        ghost, reason = self._find(client, keys, auth, ip, resume_id)
        session_keys = [key for key in keys if key == SESSION_TOPIC or base_topic(key) == SESSION_TOPIC]
        if ghost is None and self.remote is not None and reason != Reason.IDENTITY and resume_id != "":
            return self._claim_remote(client, keys, auth, ip, resume_id, session_keys, reason)
        if ghost is None:
            client.set_subscriptions(keys)
            return self._report(client, session_keys, Resumption(False, 0, reason))
        self._remove(ghost)
        old = ghost.client
        overflowed = old.is_discarded
        old.bind_index(None)
        old.successor = client
        old.discard(DisconnectReason.DISCARDED)
        replayed = 0 if overflowed else old.queued + (len(ghost.targeted) if resume_id else 0)
        resumption = Resumption(not overflowed, replayed, Reason.OVERFLOW if overflowed else Reason.RESUMED)
        self._report(client, session_keys, resumption)
        if not overflowed:
            client.adopt_queue(old)
        client.set_subscriptions(keys)
        for key, value in old.store().items():
            if key not in _NOT_CARRIED:
                client.set(key, value)
        if resume_id and not overflowed:
            for message in ghost.targeted:
                try:
                    send_local(client, message)
                except Exception:  # noqa: BLE001 - one send's hook failure skips that send only
                    log.exception("before_send failed for a send replayed to a resumed session")
        self._forget(old)
        self.resumed += 1
        return resumption

    def _claim_remote(
        self, client: DefaultClient, keys: list[str], auth: Any, ip: str, resume_id: str | None,
        session_keys: list[str], reason: Reason,
    ) -> Resumption:
        """Ask the other processes for the ghost (see :mod:`.session_handover`). Meanwhile a
        stand-in holds the keys and queues what arrives live; what the ghost also held (the same
        broadcast, by its origin id) is replayed once, from the stand-in's queue."""
        assert self.remote is not None
        stand_in = self._new_client()
        if auth is not None:  # the topic rules judge what it receives as they will the client
            stand_in.set(AUTH_KEY, auth)
        self._broker.register(stand_in)
        self._broker.detach(stand_in.id)  # indexed, out of the registry: like a ghost
        stand_in.set_subscriptions(keys)
        try:
            match = wire_match_of(auth, keys)
            handed = None if match is None else self.remote(match, ip, resume_id or None)
        except Exception:  # noqa: BLE001 - a failed recovery must never fail the POST
            log.exception("claiming a session from another process failed")
            handed = None
        # From here to the end nothing switches greenlets: the stand-in hands over in one step.
        if handed is None:
            resumption = self._report(client, session_keys, Resumption(False, 0, reason))
        elif handed.overflowed:
            resumption = self._report(client, session_keys, Resumption(False, 0, Reason.OVERFLOW))
        else:
            live = {m.origin_id for _, m in stand_in.queued_deliveries() if m.origin_id is not None}
            missed = [d for d in handed.deliveries if d[2] is None or d[2] not in live]
            resumption = self._report(client, session_keys, Resumption(True, len(missed), Reason.RESUMED))
            for event, data, origin_id in missed:
                message = Message.raw(event, data)
                message.origin_id = origin_id
                client.send(message)
            self.resumed += 1
        if handed is not None:
            for key, value in handed.store.items():
                if key not in _NOT_CARRIED:
                    client.set(key, value)
        stand_in.bind_index(None)
        stand_in.successor = client
        stand_in.discard(DisconnectReason.DISCARDED)
        client.adopt_queue(stand_in)
        client.set_subscriptions(keys)
        self._forget(stand_in)
        return resumption

    def candidates(self, match: WireMatch) -> list[Ghost]:
        """The ghosts another process's implicit claim may take, oldest first."""
        return list(self._by_wire.get(match, ()))

    def hand_over(self, ghost_id: str, token: str | None) -> HandedOver | None:
        """Give the ghost *ghost_id* to another process, if its identity token is *token* ("" for
        a guest): it leaves this process in one step, with what it queued; None when there is
        no such ghost or it is another identity's."""
        ghost = self._ghosts.get(ghost_id)
        if ghost is None:
            return None
        auth = ghost.client.get(AUTH_KEY)
        if ("" if auth is None else identity_token(auth)) != token:
            return None
        self._remove(ghost)
        self.handed_over += 1
        old = ghost.client
        overflowed = old.is_discarded
        deliveries = [(event, m.payload, m.origin_id) for event, m in old.queued_deliveries()]
        old.bind_index(None)
        old.discard(DisconnectReason.DISCARDED)
        old.clear_queue()
        self._forget(old)
        store = {}
        for key, value in old.store().items():
            if key in _NOT_CARRIED:
                continue
            try:
                encoding.dumps(value)
            except (TypeError, ValueError):
                continue  # only what JSON carries crosses processes
            store[key] = value
        return HandedOver([] if overflowed else deliveries, store, overflowed)

    def _find(
        self, client: DefaultClient, keys: list[str], auth: Any, ip: str, resume_id: str | None
    ) -> tuple[Ghost | None, Reason]:
        identity = hashable_identity(auth)
        if resume_id is not None:  # explicit: that ghost or none (an empty id: none)
            ghost = self._ghosts.get(resume_id)
            if ghost is None:
                return None, Reason.EXPIRED if self._was_dropped(resume_id) else Reason.NEW
            if hashable_identity(ghost.client.get(AUTH_KEY)) != identity:
                return None, Reason.IDENTITY
            return ghost, Reason.RESUMED
        match = (identity, frozenset(keys))
        candidates = self._by_match.get(match)
        if not candidates:
            return None, Reason.EXPIRED if self._was_dropped(match) else Reason.NEW
        same_ip = [g for g in candidates if g.ip == ip]
        return (same_ip or candidates)[0], Reason.RESUMED

    @staticmethod
    def _report(client: DefaultClient, session_keys: list[str], resumption: Resumption) -> Resumption:
        for key in session_keys:
            client.send(Message(key, resumption.payload()))
        return resumption

    # -- dropping ghosts -------------------------------------------------------------------------

    def _remove(self, ghost: Ghost) -> None:
        """Take *ghost* out of every map (claimed or dropped)."""
        del self._ghosts[ghost.client.id]
        candidates = self._by_match[ghost.match]
        candidates.remove(ghost)
        if not candidates:
            del self._by_match[ghost.match]
        if ghost.wire_match is not None:
            wired = self._by_wire[ghost.wire_match]
            wired.remove(ghost)
            if not wired:
                del self._by_wire[ghost.wire_match]
        self._per_ip[ghost.ip] -= 1
        if not self._per_ip[ghost.ip]:
            del self._per_ip[ghost.ip]

    def _drop(self, ghost: Ghost) -> None:
        """End *ghost* unclaimed: unindexed, discarded, remembered a while as gone."""
        self._remove(ghost)
        client = ghost.client
        client.discard(DisconnectReason.DISCARDED)
        client.bind_index(None)
        client.clear_queue()  # the process's queue bound forgets it
        self._forget(client)
        self.expired += 1
        until = time.monotonic() + self._window
        for gone in (ghost.match, client.id):
            self._gone.pop(gone, None)
            self._gone[gone] = until
        while len(self._gone) > 2 * self._max_ghosts:
            self._gone.popitem(last=False)

    def _was_dropped(self, key: Hashable) -> bool:
        """True when a ghost of *key* (a match or an id) was dropped unclaimed within a window."""
        until = self._gone.get(key)
        return until is not None and until > time.monotonic()

    def expire(self, now: float | None = None) -> int:
        """Drop the ghosts past their window, then the oldest while the ghosts hold more than
        ``RTBROKER_RESUME_MEMORY`` bytes; return how many were dropped."""
        now = time.monotonic() if now is None else now
        dropped = 0
        while self._ghosts:
            oldest = next(iter(self._ghosts.values()))
            if oldest.expires > now:
                break
            self._drop(oldest)
            dropped += 1
        if self._ghosts and self.queued_bytes() > self._memory:
            total = self.queued_bytes()
            while self._ghosts and total > self._memory:
                oldest = next(iter(self._ghosts.values()))
                total -= oldest.client.queued_bytes + oldest.targeted_bytes
                self._drop(oldest)
                dropped += 1
        real_now = time.monotonic()
        while self._gone and next(iter(self._gone.values())) <= real_now:
            self._gone.popitem(last=False)
        return dropped

    def drop_all(self) -> None:
        """Drop every ghost and stop expiring (the process is stopping or closing)."""
        self._sweeper_pid = None
        while self._ghosts:
            self._drop(next(iter(self._ghosts.values())))

    def _start_sweeper(self) -> None:
        if self._sweeper_pid != os.getpid():
            self._sweeper_pid = os.getpid()
            self._runtime().spawn(self._sweep)

    def _sweep(self) -> None:
        """Expire ghosts every tenth of the window (at most every second)."""
        interval, pid = max(0.05, min(1.0, self._window / 10)), os.getpid()
        while os.getpid() == pid and self._sweeper_pid == pid:
            self._runtime().sleep(interval)
            try:
                self.expire()
            except Exception:  # noqa: BLE001 - the sweeper must outlive one bad pass
                log.exception("expiring session ghosts failed")
