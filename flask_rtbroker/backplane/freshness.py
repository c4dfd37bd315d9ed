"""Replay protection: every stamped envelope is accepted once, and only while it is fresh.

A sender stamps each envelope with the channel it is published on, a per-origin sequence number
and its send time (see :class:`~.envelope.Stamp`); with a secret the stamp is signed with the
rest of the envelope, so nobody without the secret can change it. A receiver keeps, per origin,
the highest sequence seen and a bitmap of the :data:`WINDOW` sequences below it, and drops:

- a stamp older than *max_age* seconds (or as far in the future: clocks of hosts may differ
  by less than that);
- a sequence already seen, or more than :data:`WINDOW` below the highest one of its origin;
- with a secret, an envelope without a stamp (from a version before stamps), unless
  ``accept_unstamped`` is set for a rolling upgrade.

Memory is bounded: :data:`MAX_ORIGINS` origins are remembered (the least recently heard from
is forgotten first: under 1 MB in all, ``tests/test_backplane_contract.py``), and an origin
silent for twice *max_age* is forgotten, which is safe since everything it sent before is then
stale. Only a deployment with more than :data:`MAX_ORIGINS` processes sending within that time
could see an envelope of a forgotten, still active origin replayed.
"""

from __future__ import annotations

from collections import OrderedDict

from .envelope import Stamp

WINDOW = 4096
"""Sequences remembered below an origin's highest (envelopes published by several threads of
one process may arrive slightly out of order)."""
MAX_ORIGINS = 4096
"""Origins (sending processes) remembered at once."""


class _Seen:
    """The sequences of one origin: the highest, and a bitmap of the :data:`WINDOW` below it."""

    __slots__ = ("highest", "bits", "heard_at")

    def __init__(self, sequence: int, now: float) -> None:
        self.highest = sequence
        self.bits = 1  # bit i: sequence highest - i was seen
        self.heard_at = now

    def first_time(self, sequence: int) -> bool:
        """Record *sequence*; False when it was seen already or is too far below the highest."""
        if sequence > self.highest:
            self.bits = ((self.bits << (sequence - self.highest)) | 1) & ((1 << WINDOW) - 1)
            self.highest = sequence
            return True
        behind = self.highest - sequence
        if behind >= WINDOW or self.bits >> behind & 1:
            return False
        self.bits |= 1 << behind
        return True


class ReplayGuard:
    """Decides whether a received envelope is fresh and seen for the first time."""

    def __init__(self, max_age: float, *, accept_unstamped: bool = True) -> None:
        self.max_age = max_age
        self.accept_unstamped = accept_unstamped
        """Let envelopes without a stamp through (no secret, or a rolling upgrade)."""
        self._origins: OrderedDict[str, _Seen] = OrderedDict()

    def refusal(self, origin: str, stamp: Stamp | None, now: float) -> str | None:
        """Why the envelope from *origin* with *stamp*, received at *now* (``time.time()``),
        must be dropped; None when it is to be handled (and is now remembered)."""
        if stamp is None:
            return None if self.accept_unstamped else "an envelope without a stamp (from a version before 0.3, or forged)"
        age = now - stamp.sent_at / 1000
        if not -self.max_age <= age <= self.max_age:
            return f"an envelope sent {age:.1f}s ago, outside the {self.max_age:g}s freshness window"
        seen = self._origins.get(origin)
        if seen is None:
            self._forget_old(now)
            self._origins[origin] = _Seen(stamp.sequence, now)
            return None
        self._origins.move_to_end(origin)
        seen.heard_at = now
        if not seen.first_time(stamp.sequence):
            return f"a replayed envelope (sequence {stamp.sequence} of {origin[:80]!r} was seen already)"
        return None

    def _forget_old(self, now: float) -> None:
        """Forget origins silent for twice the window and, past :data:`MAX_ORIGINS`, the least recent."""
        silent = now - 2 * self.max_age
        while self._origins:
            origin, seen = next(iter(self._origins.items()))
            if seen.heard_at >= silent and len(self._origins) < MAX_ORIGINS:
                break
            del self._origins[origin]
