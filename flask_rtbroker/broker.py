"""Broker: the registry of connected clients of one app in one process.

Mirrors PocketBase's ``subscriptions.Broker`` and adds a :class:`TopicIndex` so that finding
the subscribers of a topic does not walk every connected client.
"""

from __future__ import annotations

from typing import Callable, Iterator

from .client import DefaultClient
from .errors import ClientNotFound, InvalidArgument
from .topic_index import Subscribers, TopicIndex


class Broker:
    """Registered clients by id, plus the topic index their subscriptions maintain."""

    __slots__ = ("_clients", "_index")

    def __init__(self, on_new_topics: Callable[[list[str]], None] | None = None) -> None:
        """*on_new_topics* hears of every topic that gets its first subscriber (see :class:`TopicIndex`)."""
        self._clients: dict[str, DefaultClient] = {}
        self._index: TopicIndex[DefaultClient] = TopicIndex(on_new_topics)

    def register(self, client: DefaultClient) -> None:
        """Add *client*; its current and future subscriptions are indexed."""
        self._clients[client.id] = client
        client.bind_index(self._index)

    def unregister(self, client_id: str) -> None:
        """Discard and remove the client with *client_id*; unknown ids are ignored."""
        client = self._clients.pop(client_id, None)
        if client is None:
            return
        client.discard()
        client.bind_index(None)

    def detach(self, client_id: str) -> DefaultClient | None:
        """Remove the client with *client_id* from the registry but keep it indexed and
        undiscarded: it still receives its topics' deliveries (a session's ghost, see
        :mod:`.sessions`). Return it, or None for an unknown id."""
        return self._clients.pop(client_id, None)

    def get_client(self, client_id: str) -> DefaultClient:
        """Return the client with *client_id* or raise :class:`ClientNotFound`."""
        try:
            return self._clients[client_id]
        except KeyError:
            raise ClientNotFound(client_id) from None

    def clients(self) -> dict[str, DefaultClient]:
        """Return a copy of the registered clients, keyed by id."""
        return dict(self._clients)

    def chunked_clients(self, chunk_size: int) -> list[list[DefaultClient]]:
        """Return the registered clients split into lists of at most *chunk_size*."""
        if chunk_size < 1:
            raise InvalidArgument("chunk_size must be at least 1")
        values = list(self._clients.values())
        return [values[i : i + chunk_size] for i in range(0, len(values), chunk_size)]

    def total_clients(self) -> int:
        """Return how many clients are registered."""
        return len(self._clients)

    def subscribers(self, topic: str) -> Subscribers:
        """Return ``{client: matching keys}`` for every client with a subscription matching *topic*.

        A key matches when it equals *topic*, or when it is *topic* with the SDK's
        ``?options=``/``&options=`` appended.
        """
        return self._index.subscribers(topic)

    def count_subscribers(self, topic: str) -> int:
        """How many clients hold a key matching *topic*."""
        return self._index.count(topic)

    def topics(self) -> list[str]:
        """Every topic some client of this process is subscribed to (a snapshot)."""
        return self._index.topics()

    def total_topics(self) -> int:
        """Return how many distinct topics have subscribers."""
        return self._index.total_topics()

    @property
    def subscription_bytes(self) -> int:
        """What the registered clients' keys count together against ``RTBROKER_SUBSCRIPTION_MEMORY``."""
        return self._index.subscription_bytes

    def __iter__(self) -> Iterator[DefaultClient]:
        return iter(list(self._clients.values()))

