"""The per-client bound on subscription changes (``RTBROKER_MAX_SUBSCRIPTION_CHANGES``).

Every key a client adds that it did not hold is a backplane channel its process listens on
and later sweeps, whether the client keeps it for an hour or drops it with its next POST. So
each added key takes one token from the client's bucket, which holds at most the setting's
number of tokens and refills evenly over :data:`REFILL_SECONDS`: a client may add that many
keys at once, then that many per :data:`REFILL_SECONDS`. Keys it keeps or removes cost nothing.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

REFILL_SECONDS = 60.0
"""Seconds an empty bucket takes to fill again."""


class _Bucket:
    __slots__ = ("tokens", "at")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


_buckets: "weakref.WeakKeyDictionary[Any, _Bucket]" = weakref.WeakKeyDictionary()
"""Each client's bucket, held weakly: a gone client's goes too."""


def available(client: Any, capacity: int, now: float | None = None) -> float:
    """How many keys *client* may add now, with buckets of *capacity*."""
    bucket = _buckets.get(client)
    if bucket is None:
        return float(capacity)
    now = time.monotonic() if now is None else now
    return min(float(capacity), bucket.tokens + (now - bucket.at) * capacity / REFILL_SECONDS)


def spend(client: Any, added: int, capacity: int, now: float | None = None) -> None:
    """Take *added* tokens from *client*'s bucket (a POST that added keys succeeded)."""
    if added <= 0:
        return
    now = time.monotonic() if now is None else now
    tokens = available(client, capacity, now) - added
    bucket = _buckets.get(client)
    if bucket is None:
        _buckets[client] = _Bucket(tokens, now)
    else:
        bucket.tokens, bucket.at = tokens, now
