"""Presence on Redis, shared by every process and host of the app.

Per topic (keys ``<prefix>:pr:{<digest>}:<part>``, the topic's digest as hash tag):

- ``m``: HASH member -> document (written once, when the member joins);
- ``u``: HASH member -> connections in every process (0 while its grace period runs);
- ``n``: the topic's connections;
- ``p:<process>``: HASH member -> that process's connections (0 while its grace runs there).

Per process: ``<prefix>:pr:t:<process>``, the SET of topics it counts in, and its score in the
ZSET ``<prefix>:pr:procs``: the (Redis clock) time its liveness lapses, renewed every third of
``RTBROKER_PRESENCE_TTL``. A process that renews finds the lapsed ones: the one whose ``ZREM``
succeeds subtracts their counts, and their members no live process counts leave. Writes happen
per connection added or removed (one script each), never per message; reads are O(members).
Every script touches one topic's keys (one hash slot, so a Redis Cluster runs them too); the
process's set is kept apart, after the script, under a lock per topic stripe (only its process
writes it, until it is reaped).
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from .store import Members

_ADD = """
redis.call('HINCRBY', KEYS[4], ARGV[1], 1)
redis.call('INCR', KEYS[3])
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return {redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]), redis.call('HLEN', KEYS[4])}
"""

_REMOVE = """
local mine = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if mine <= 0 then return tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') end
redis.call('HINCRBY', KEYS[3], ARGV[1], -1)
if redis.call('DECR', KEYS[2]) <= 0 then redis.call('DEL', KEYS[2]) end
return redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
"""

_EXPIRE = """
if redis.call('HGET', KEYS[3], ARGV[1]) == '0' then redis.call('HDEL', KEYS[3], ARGV[1]) end
local mine = redis.call('EXISTS', KEYS[3])
if tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') > 0 then return {false, mine} end
redis.call('HDEL', KEYS[2], ARGV[1])
local document = redis.call('HGET', KEYS[1], ARGV[1])
if document then redis.call('HDEL', KEYS[1], ARGV[1]) end
return {document, mine}
"""

_REAP = """
local entries = redis.call('HGETALL', KEYS[4])
local left = {}
for i = 1, #entries, 2 do
  local member, connections = entries[i], tonumber(entries[i + 1])
  local total = tonumber(redis.call('HGET', KEYS[2], member) or '0')
  if connections > 0 then
    if redis.call('DECRBY', KEYS[3], connections) <= 0 then redis.call('DEL', KEYS[3]) end
    total = redis.call('HINCRBY', KEYS[2], member, 0 - connections)
  end
  if total <= 0 then
    redis.call('HDEL', KEYS[2], member)
    local document = redis.call('HGET', KEYS[1], member)
    if document then
      redis.call('HDEL', KEYS[1], member)
      left[#left + 1] = document
    end
  end
end
redis.call('DEL', KEYS[4])
return left
"""

_MEMBERS = """
local total = redis.call('HLEN', KEYS[1])
local limit = tonumber(ARGV[1])
local flat
if total <= limit then flat = redis.call('HGETALL', KEYS[1])
else flat = redis.call('HRANDFIELD', KEYS[1], limit, 'WITHVALUES') end
local out = {total}
for i = 1, #flat, 2 do
  out[#out + 1] = flat[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], flat[i]) or '0'
end
return out
"""

_BEAT = """
local now = redis.call('TIME')
local seconds = tonumber(now[1]) + tonumber(now[2]) / 1000000
local lapsed = redis.call('ZADD', KEYS[1], seconds + tonumber(ARGV[2]), ARGV[1])
return {lapsed, redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', seconds, 'LIMIT', 0, 16)}
"""


TOPIC_LOCKS = 64
"""Lock stripes ordering a topic's script and the process set's update in this process."""


class RedisPresenceStore:
    """A :class:`~.store.PresenceStore` on Redis for the process *process* (a random id)."""

    def __init__(self, redis: Any, prefix: str, process: str, ttl: float) -> None:
        self._redis = redis
        self._prefix = f"{prefix}:pr"
        self.process = process
        self._ttl = ttl
        self._beaten = False
        self._topic_locks = [threading.Lock() for _ in range(TOPIC_LOCKS)]
        self._add, self._remove, self._expire, self._reap, self._members, self._beat = (
            redis.register_script(text) for text in (_ADD, _REMOVE, _EXPIRE, _REAP, _MEMBERS, _BEAT)
        )

    def _keys(self, topic: str, process: str | None = None) -> list[str]:
        tag = hashlib.sha256(topic.encode("utf-8", "surrogatepass")).hexdigest()[:20]
        base = f"{self._prefix}:{{{tag}}}"
        return [f"{base}:m", f"{base}:u", f"{base}:n", f"{base}:p:{process or self.process}"]

    def _topics_key(self, process: str) -> str:
        return f"{self._prefix}:t:{process}"

    def _topic_lock(self, topic: str) -> threading.Lock:
        return self._topic_locks[hash(topic) % TOPIC_LOCKS]

    def add(self, topic: str, member: str, document: bytes) -> bool:
        if not self._beaten:
            self.beat()  # be known as live before counting anything
        with self._topic_lock(topic):
            joined, mine = self._add(keys=self._keys(topic), args=[member, document])
            if mine == 1:  # this process's first member there: the reaper must find the topic
                self._redis.sadd(self._topics_key(self.process), topic)
        return bool(joined)

    def remove(self, topic: str, member: str) -> int:
        m, u, n, p = self._keys(topic)
        return int(self._remove(keys=[u, n, p], args=[member]))

    def expire(self, topic: str, member: str) -> bytes | None:
        m, u, n, p = self._keys(topic)
        with self._topic_lock(topic):
            document, mine = self._expire(keys=[m, u, p], args=[member])
            if not mine:
                self._redis.srem(self._topics_key(self.process), topic)
        return document or None

    def members(self, topic: str, limit: int) -> Members:
        m, u, _, _ = self._keys(topic)
        flat = self._members(keys=[m, u], args=[limit])
        return [(flat[i], int(flat[i + 1])) for i in range(1, len(flat), 2)], int(flat[0])

    def count(self, topic: str) -> tuple[int, int]:
        m, _, n, _ = self._keys(topic)
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(n)
        pipe.hlen(m)
        connections, members = pipe.execute()
        return int(connections or 0), int(members)

    def beat(self) -> tuple[bool, list[tuple[str, bytes]]]:
        lapsed, dead = self._beat(keys=[f"{self._prefix}:procs"], args=[self.process, self._ttl])
        lapsed = bool(lapsed) and self._beaten  # the first beat adds this process: nothing lapsed
        self._beaten = True
        leaves: list[tuple[str, bytes]] = []
        for process in dead:
            process = process.decode() if isinstance(process, bytes) else process
            if process == self.process or not self._redis.zrem(f"{self._prefix}:procs", process):
                continue  # another process reaps it
            topics_key = self._topics_key(process)
            for topic in self._redis.smembers(topics_key):
                topic = topic.decode("utf-8", "surrogatepass")
                for document in self._reap(keys=self._keys(topic, process)):
                    leaves.append((topic, document))
            self._redis.delete(topics_key)
        return lapsed, leaves
