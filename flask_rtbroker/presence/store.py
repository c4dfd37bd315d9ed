"""Where presence is counted: the interface, and the one-process store of the memory backplane.

Per topic, a store keeps each member's document (the first one written wins) and its number of
connections, in total and per process. ``add`` and ``remove`` count one connection;
``expire`` runs a grace period after a member's count reached zero here and removes it when
no process counts it any more. A store shared by several processes also keeps their liveness
(:meth:`PresenceStore.beat`): the members of a process that stopped beating leave.
"""

from __future__ import annotations

import threading
from typing import Protocol

Members = tuple[list[tuple[bytes, int]], int]
"""``([(member document, connections), ...] at most the limit, total members)``."""


class PresenceStore(Protocol):
    """Presence state of every topic, seen alike by every process using it."""

    def add(self, topic: str, member: str, document: bytes) -> bool:
        """Count one more connection of *member*; True when that made it join."""

    def remove(self, topic: str, member: str) -> int:
        """Count one connection less (never below what this process added); return the
        member's connections left in every process."""

    def expire(self, topic: str, member: str) -> bytes | None:
        """After the grace period: drop *member* when no process counts it; its document when it left."""

    def members(self, topic: str, limit: int) -> Members:
        """At most *limit* members of *topic* with their connections, and how many there are."""

    def count(self, topic: str) -> tuple[int, int]:
        """``(connections, members)`` of *topic*."""

    def beat(self) -> tuple[bool, list[tuple[str, bytes]]]:
        """Renew this process's liveness; return whether it had lapsed (its counts were reaped
        and must be written again) and the ``(topic, document)`` leaves of dead processes."""


class _Member:
    __slots__ = ("document", "connections")

    def __init__(self, document: bytes) -> None:
        self.document = document
        self.connections = 0


class MemoryPresenceStore:
    """A :class:`PresenceStore` for one process (the memory backplane)."""

    def __init__(self) -> None:
        self._topics: dict[str, dict[str, _Member]] = {}
        self._lock = threading.Lock()

    def add(self, topic: str, member: str, document: bytes) -> bool:
        with self._lock:
            members = self._topics.setdefault(topic, {})
            entry = members.get(member)
            joined = entry is None
            if entry is None:
                entry = members[member] = _Member(document)
            entry.connections += 1
            return joined

    def remove(self, topic: str, member: str) -> int:
        with self._lock:
            entry = self._topics.get(topic, {}).get(member)
            if entry is None:
                return 0
            entry.connections = max(0, entry.connections - 1)
            return entry.connections

    def expire(self, topic: str, member: str) -> bytes | None:
        with self._lock:
            members = self._topics.get(topic)
            entry = members.get(member) if members is not None else None
            if members is None or entry is None or entry.connections > 0:
                return None
            del members[member]
            if not members:
                del self._topics[topic]
            return entry.document

    def members(self, topic: str, limit: int) -> Members:
        with self._lock:
            members = list(self._topics.get(topic, {}).values())
        return [(entry.document, entry.connections) for entry in members[:limit]], len(members)

    def count(self, topic: str) -> tuple[int, int]:
        with self._lock:
            members = self._topics.get(topic, {})
            return sum(entry.connections for entry in members.values()), len(members)

    def beat(self) -> tuple[bool, list[tuple[str, bytes]]]:
        return False, []
