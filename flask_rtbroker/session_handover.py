"""Session hand-over between processes: a reconnect that lands on another process claims the
ghost its stream left behind (see :mod:`.sessions`).

=================  =============================================  ================================
kind               header fields                                  body
=================  =============================================  ================================
session-query      ``rid``, ``a`` identity token, ``ks`` keys     —
                   digest
session-candidate  ``rid``, ``to`` origin, ``g`` ghost id ("":    —
                   none), ``t`` drop time (ms), ``ip``
session-claim      ``rid``, ``to`` origin, ``g`` ghost id,        —
                   ``a`` identity token
session-handed     ``rid``, ``to`` origin, ``ok``                 JSON: ``d`` deliveries [event,
                                                                  data, origin, sequence], ``s``
                                                                  store, ``o`` overflowed
=================  =============================================  ================================

An implicit claim asks every process (``session-query`` on ``all``; each answers, with its
matching ghosts or none, so the asker stops waiting once every process it reached answered),
takes the candidate dropped from the same IP, else the oldest, and claims it from its owner's
inbox; an explicit claim goes to the owner the old id's route names. The owner hands the ghost
over in one step (it leaves the owner's index with what it queued). Deduplication against
what the claimer received meanwhile relies on every process seeing the backplane's messages in
one order (one Redis server; not a Redis Cluster's shards).
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from . import wire

from .protocol import encoding
from .backplane import Envelope
from .backplane.base import ALL, UNKNOWN, inbox, route_of
from .errors import InvalidJSON
from .sessions import HandedOver, WireMatch

if TYPE_CHECKING:
    from .cluster import Cluster, Node

log = logging.getLogger("flask_rtbroker.sessions")

MAX_CANDIDATES = 4
"""Ghosts one process offers an implicit claim at most (its oldest)."""
QUERY_WAIT = 0.5
"""Seconds an implicit claim waits at most for every process to answer (a process that does not
answer, e.g. one of an older version, costs a first POST this much once, and its ghost)."""


def _field(envelope: Envelope, name: str, kind: type) -> Any:
    value = envelope.fields.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        raise wire.WireError(f"field {name!r} of a {envelope.kind} must be a {kind.__name__}")
    return value


@dataclass(frozen=True)
class Query:
    """Which process holds a ghost of this identity token and keys digest?"""

    KIND: ClassVar[str] = "session-query"
    request_id: str
    token: str
    digest: str
    body: bytes = b""
    channel: ClassVar[str] = ALL

    def fields(self) -> dict[str, Any]:
        return {"rid": self.request_id, "a": self.token, "ks": self.digest}


@dataclass(frozen=True)
class Candidate:
    """One ghost a process offers (``ghost_id`` empty: none)."""

    KIND: ClassVar[str] = "session-candidate"
    request_id: str
    to: str
    ghost_id: str
    dropped_ms: int
    ip: str
    body: bytes = b""

    @property
    def channel(self) -> str:
        return inbox(route_of(self.to))

    def fields(self) -> dict[str, Any]:
        return {"rid": self.request_id, "to": self.to, "g": self.ghost_id, "t": self.dropped_ms, "ip": self.ip}


@dataclass(frozen=True)
class Claim:
    """Hand the ghost *ghost_id* over to the process *to*, if its identity token is *token*."""

    KIND: ClassVar[str] = "session-claim"
    request_id: str
    to: str
    ghost_id: str
    token: str
    body: bytes = b""

    @property
    def channel(self) -> str:
        return inbox(route_of(self.ghost_id))

    def fields(self) -> dict[str, Any]:
        return {"rid": self.request_id, "to": self.to, "g": self.ghost_id, "a": self.token}


@dataclass(frozen=True)
class Handed:
    """The owner's answer to a :class:`Claim`: the ghost (``ok``) or nothing."""

    KIND: ClassVar[str] = "session-handed"
    request_id: str
    to: str
    ok: bool
    body: bytes = b""

    @property
    def channel(self) -> str:
        return inbox(route_of(self.to))

    def fields(self) -> dict[str, Any]:
        return {"rid": self.request_id, "to": self.to, "ok": self.ok}


def encode_handed(handed: HandedOver) -> bytes:
    """The body of a :class:`Handed`."""
    deliveries = [[event, data.decode("utf-8"), *(origin_id or ("", 0))] for event, data, origin_id in handed.deliveries]
    return encoding.dumps({"d": deliveries, "s": handed.store, "o": handed.overflowed})


def decode_handed(body: bytes) -> HandedOver:
    """Parse the body of a :class:`Handed`; :class:`~flask_rtbroker.wire.WireError` when malformed."""
    try:
        value = encoding.loads_untrusted(body)
    except InvalidJSON as exc:
        raise wire.WireError(f"a session-handed body: {exc}") from None
    if not isinstance(value, dict) or not isinstance(value.get("d"), list) or not isinstance(value.get("s"), dict):
        raise wire.WireError("a session-handed body must hold d (a list) and s (an object)")
    deliveries: list[tuple[str, bytes, tuple[str, int] | None]] = []
    for item in value["d"]:
        if not (isinstance(item, list) and len(item) == 4 and all(isinstance(x, str) for x in item[:3])
                and isinstance(item[3], int) and not isinstance(item[3], bool)):
            raise wire.WireError("a session-handed delivery must be [event, data, origin, sequence]")
        event, data, origin, sequence = item
        wire_check_name(event)
        deliveries.append((event, data.encode("utf-8"), (origin, sequence) if origin else None))
    return HandedOver(deliveries, value["s"], bool(value.get("o")))


def wire_check_name(name: str) -> None:
    """An event name from another process must be one this process would send."""
    if "\n" in name or "\r" in name:
        raise wire.WireError("a session-handed event name contains a line break")


class _Pending:
    """A claim waiting for answers."""

    __slots__ = ("waker", "replies", "expected")

    def __init__(self, waker: Any) -> None:
        self.waker = waker
        self.replies: list[Any] = []
        self.expected = -1


class SessionHandover:
    """Connects one app's :class:`~flask_rtbroker.sessions.Sessions` to the other processes."""

    def __init__(self, state: "Node", cluster: "Cluster") -> None:
        self.state = state
        self.cluster = cluster
        self._pending: dict[str, _Pending] = {}
        for kind, handler in (
            (Query.KIND, self._on_query), (Candidate.KIND, self._on_reply),
            (Claim.KIND, self._on_claim), (Handed.KIND, self._on_reply),
        ):
            cluster.add_handler(kind, handler)
        state.sessions.remote = self.claim

    # -- the claimer -----------------------------------------------------------------------------

    def claim(self, match: WireMatch, ip: str, resume_id: str | None) -> HandedOver | None:
        """Find and claim a ghost held by another process (blocks: a round trip or two)."""
        cluster = self.cluster
        if not cluster.active:
            return None
        cluster.ensure_started()
        timeout = self.state.settings.forward_timeout
        origin = cluster.backplane.origin
        if resume_id:
            if route_of(resume_id) == cluster.route:
                return None
            ghost_id = resume_id
        else:
            candidates = self._ask(Query(secrets.token_hex(8), *match), min(timeout, QUERY_WAIT), many=True)
            offered = [c for c in candidates if isinstance(c, Candidate) and c.ghost_id]
            if not offered:
                return None
            best = min(offered, key=lambda c: (c.ip != ip, c.dropped_ms))
            ghost_id = best.ghost_id
        answers = self._ask(Claim(secrets.token_hex(8), origin, ghost_id, match[0]), timeout, many=False)
        handed = next((a for a in answers if isinstance(a, Handed)), None)
        if handed is None or not handed.ok:
            return None
        return decode_handed(handed.body)

    def _ask(self, request: Query | Claim, timeout: float, *, many: bool) -> list[Any]:
        """Publish *request*; collect the answers until every process it reached answered
        (*many*) or the first one came, within *timeout*."""
        pending = self._pending[request.request_id] = _Pending(self.state.runtime.waker())
        try:
            reached = wire.publish(self.cluster.backplane, request)
            if not reached:
                return []
            if many and reached != UNKNOWN:
                pending.expected = reached - 1  # every process listening on "all" but this one
                if pending.expected <= 0:
                    return []
            else:
                pending.expected = 1 if not many else -1
            deadline = time.monotonic() + timeout
            while len(pending.replies) < pending.expected or pending.expected < 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not pending.waker.wait(remaining):
                    break
                pending.waker.clear()
            return list(pending.replies)
        finally:
            del self._pending[request.request_id]

    def _on_reply(self, envelope: Envelope) -> None:
        rid = _field(envelope, "rid", str)
        if _field(envelope, "to", str) != self.cluster.backplane.origin:
            return
        pending = self._pending.get(rid)
        if pending is None:
            return
        if envelope.kind == Candidate.KIND:
            pending.replies.append(Candidate(rid, envelope.origin, _field(envelope, "g", str),
                                             _field(envelope, "t", int), _field(envelope, "ip", str)))
        else:
            pending.replies.append(Handed(rid, envelope.origin, _field(envelope, "ok", bool), envelope.body))
        pending.waker.set()

    # -- the owner -------------------------------------------------------------------------------

    def _on_query(self, envelope: Envelope) -> None:
        rid, token, digest = _field(envelope, "rid", str), _field(envelope, "a", str), _field(envelope, "ks", str)
        backplane = self.cluster.backplane
        ghosts = self.state.sessions.candidates((token, digest))[:MAX_CANDIDATES]
        if not ghosts:
            wire.publish(backplane, Candidate(rid, envelope.origin, "", 0, ""))
        for ghost in ghosts:
            wire.publish(backplane, Candidate(rid, envelope.origin, ghost.client.id, int(ghost.dropped_at * 1000), ghost.ip))

    def _on_claim(self, envelope: Envelope) -> None:
        rid, ghost_id, token = _field(envelope, "rid", str), _field(envelope, "g", str), _field(envelope, "a", str)
        if _field(envelope, "to", str) != envelope.origin:
            raise wire.WireError("a session-claim answered elsewhere than its sender")
        handed = self.state.sessions.hand_over(ghost_id, token)
        body = b"" if handed is None else encode_handed(handed)
        wire.publish(self.cluster.backplane, Handed(rid, envelope.origin, handed is not None, body))
