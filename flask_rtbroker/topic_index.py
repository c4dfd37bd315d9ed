"""TopicIndex: notify topic -> the clients subscribed to it, so a notify costs O(subscribers).

Every subscription key is indexed under itself and, when it carries SDK ``options``, under the
topic it was made from as well (see :func:`flask_rtbroker.protocol.options.base_topic`). A lookup returns
a snapshot, so callers iterate it without holding the lock.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, Hashable, TypeVar

from .protocol.options import base_topic, subscription_cost

Client = TypeVar("Client", bound=Hashable)
"""The indexed client type (a :class:`~flask_rtbroker.client.DefaultClient` in the broker)."""

Subscribers = dict[Client, tuple[str, ...]]


class TopicIndex(Generic[Client]):
    """Maps each notify topic to ``{client: (matching subscription keys, ...)}``."""

    __slots__ = ("_topics", "_single", "_lock", "subscription_bytes", "on_new_topics")

    def __init__(self, on_new_topics: "Callable[[list[str]], None] | None" = None) -> None:
        self._topics: dict[str, dict[Client, tuple[str, ...]]] = {}
        self._single: dict[str, tuple[str]] = {}
        """``key -> (key,)``, shared by every client holding just that key under a topic (the
        usual case), so a subscriber costs no tuple of its own; dropped with the topic of that name
        (every holder of a key is indexed under it), so it never outlives the topics."""
        self._lock = threading.Lock()
        self.subscription_bytes = 0
        """What every indexed key counts together (see :func:`~flask_rtbroker.protocol.options.subscription_cost`)."""
        self.on_new_topics = on_new_topics
        """Called (outside the lock) with the topics an :meth:`add` gave their first subscriber."""

    @staticmethod
    def _topics_of(key: str) -> tuple[str, ...]:
        base = base_topic(key)
        return (key,) if base is None else (key, base)

    def add(self, client: Client, keys: list[str]) -> None:
        """Index *client* under each subscription key in *keys*."""
        new: list[str] = []
        with self._lock:
            self.subscription_bytes += subscription_cost(keys)
            for key in keys:
                single = self._single.get(key)
                if single is None:
                    single = self._single[key] = (key,)
                for topic in self._topics_of(key):
                    holders = self._topics.get(topic)
                    if holders is None:
                        holders = self._topics[topic] = {}
                        new.append(topic)
                    held = holders.get(client)
                    holders[client] = single if held is None else held + single
        if new and self.on_new_topics is not None:
            self.on_new_topics(new)

    def remove(self, client: Client, keys: list[str]) -> None:
        """Remove *client*'s entries for each subscription key in *keys* (keys it holds)."""
        with self._lock:
            held = [key for key in keys if key in self._topics.get(key, {}).get(client, ())]  # every key is indexed under itself
            self.subscription_bytes -= subscription_cost(held)
            for key in keys:
                for topic in self._topics_of(key):
                    holders = self._topics.get(topic)
                    if holders is None or client not in holders:
                        continue
                    remaining = tuple(k for k in holders[client] if k != key)
                    if remaining:
                        holders[client] = remaining
                    else:
                        del holders[client]
                        if not holders:
                            del self._topics[topic]
                            self._single.pop(topic, None)  # nobody holds the key *topic* now

    def subscribers(self, topic: str) -> Subscribers[Client]:
        """Return a snapshot ``{client: keys}`` of the clients whose keys match *topic*.

        A dict copy: one allocation however many subscribers, so a broadcast creates no
        per-subscriber objects for the garbage collector to track.
        """
        holders = self._topics.get(topic)
        if not holders:
            return {}
        with self._lock:
            return holders.copy()

    def count(self, topic: str) -> int:
        """How many clients hold a key matching *topic* (no snapshot taken)."""
        return len(self._topics.get(topic, ()))

    def topics(self) -> list[str]:
        """A snapshot of every topic with at least one subscriber (keys and their base topics)."""
        with self._lock:
            return list(self._topics)

    def total_topics(self) -> int:
        """Return how many distinct topics have at least one subscriber."""
        return len(self._topics)
