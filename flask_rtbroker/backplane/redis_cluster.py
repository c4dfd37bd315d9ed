"""Redis Cluster backplane: sharded pub/sub (Redis 7+), ``redis+cluster://host:port[,host:port...]``.

Needs the ``redis`` package: ``pip install 'flask-rtbroker[redis]'``. A sharded channel lives on
the master of its hash slot, so a process's channels spread over the shards: it holds one
subscriber connection per master that serves any of them, and publishes with ``SPUBLISH`` to the
channel's master. When a connection drops (a master died), a slot moved (``MOVED``, or the
server's own ``sunsubscribe``) or a replica took over, the listener asks the cluster again which
master serves each slot and subscribes the affected channels there; the other shards' channels
are untouched. Delivery is at-most-once: what is published on a shard while its channels move
is lost, as with Redis itself.
"""

from __future__ import annotations

import logging
import os
import selectors
import threading
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from ..errors import ConfigurationError, MissingDependency
from .base import ALL, READY, STATE_DOWN, Backplane, inbox
from .redis import DEFAULT_CHANNEL_PREFIX, IDLE_WAIT

if TYPE_CHECKING:
    from ..runtime.concurrency import Runtime

log = logging.getLogger("flask_rtbroker.backplane")

SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""The URL schemes of this backend and the redis-py scheme each stands for (``rediss``: TLS)."""
HASH_SLOTS = 16384
RETRY_INTERVAL = 0.25
"""Seconds between two attempts to subscribe channels whose master is unreachable (a failover)."""
REFRESH_INTERVAL = 0.1
"""Seconds a slot map is reused before a failure may ask the cluster for a new one."""
HEALTH_INTERVAL = 15.0
"""Seconds of silence after which a subscriber connection is sent a PING."""
PING_TIMEOUT = 5.0
"""Seconds a PING may go unanswered before its connection counts as lost."""
BATCH = 100
"""Replies read from one connection before the listener turns to the next."""


def _import_redis() -> Any:
    try:
        import redis
        import redis.backoff
        import redis.connection
        import redis.crc
        import redis.retry
    except ImportError:
        raise MissingDependency(
            "RTBROKER_BACKPLANE is a redis+cluster:// URL but the redis package is not installed; "
            "install the extra: pip install 'flask-rtbroker[redis]'"
        ) from None
    return redis


def _split(url: str) -> tuple[str, str, str, str]:
    """*url* as (scheme, userinfo with its ``@`` or "", the hosts, the rest from ``/`` or ``?``)."""
    scheme, _, rest = url.partition("://")
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, hosts = netloc.rpartition("@")
    return scheme, userinfo + at, hosts, tail


def redacted(url: str) -> str:
    """*url* without its password (``redis+cluster://user:***@host:port,...``)."""
    scheme, userinfo, hosts, tail = _split(url)
    user, colon, _ = userinfo[:-1].partition(":")
    if colon:
        userinfo = f"{user}:***@"
    return f"{scheme}://{userinfo}{hosts}{tail}"


def parse_url(url: str, redis: Any) -> tuple[list[str], dict[str, Any]]:
    """The seed nodes (``host:port``) of a cluster URL and the connection settings for every node."""
    scheme, userinfo, hosts, tail = _split(url)
    seeds = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not (colon and host and port.isdigit()):
            raise ConfigurationError(
                f"RTBROKER_BACKPLANE {redacted(url)!r}: name the nodes as host:port[,host:port...]"
            )
        seeds.append(f"{host.strip('[]')}:{int(port)}")
    try:  # redis-py reads the credentials, TLS and query options of an equivalent one-host URL
        kwargs: dict[str, Any] = redis.connection.parse_url(f"{SCHEMES[scheme]}://{userinfo}seed{tail}")
    except ValueError as exc:
        raise ConfigurationError(f"RTBROKER_BACKPLANE {redacted(url)!r}: {exc}") from None
    if kwargs.pop("db", 0) != 0:
        raise ConfigurationError(f"RTBROKER_BACKPLANE {redacted(url)!r}: a Redis Cluster has database 0 only")
    kwargs.pop("host", None)
    kwargs.pop("port", None)
    kwargs.update(
        protocol=2,  # pub/sub replies as plain arrays
        health_check_interval=0,  # redis-py's would read a subscriber's replies; the listener PINGs itself
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        socket_keepalive=True,
        retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),  # failures surface at once; we re-route
    )
    return seeds, kwargs


def _address(node: str) -> tuple[str, int]:
    host, _, port = node.rpartition(":")
    return host, int(port)


def wait_any_readable(runtime: "Runtime", filenos: list[int], timeout: float) -> None:
    """Wait until one of *filenos* is readable or *timeout* passes: with threads in a selector,
    under gevent with a watch on each socket and one waker, so the hub never blocks."""
    if not runtime.watches_sockets:
        with selectors.DefaultSelector() as selector:
            for fileno in filenos:
                selector.register(fileno, selectors.EVENT_READ)
            selector.select(timeout)
        return
    waker = runtime.waker()
    watches = [runtime.watch_readable(fileno, waker.set) for fileno in filenos]
    try:
        waker.wait(timeout)
    finally:
        for watch in watches:
            if watch is not None:
                watch.stop()
                watch.close()


class _Shard:
    """The subscriber connection to one master and the (physical) channels subscribed on it."""

    __slots__ = ("node", "connection", "channels", "seen", "pinged")

    def __init__(self, node: str, connection: Any) -> None:
        self.node = node
        self.connection = connection
        self.channels: set[str] = set()
        self.seen = time.monotonic()
        self.pinged: float | None = None

    def send(self, command: str, channels: Iterable[str], key_slot: Any) -> None:
        """Send *command* for *channels*, one command per hash slot (a cluster refuses more), in one write."""
        by_slot: dict[int, list[str]] = defaultdict(list)
        for channel in channels:
            by_slot[key_slot(channel.encode())].append(channel)
        commands = [(command, *group) for group in by_slot.values()]
        self.connection.send_packed_command(self.connection.pack_commands(commands))

    def close(self) -> None:
        try:
            self.connection.disconnect()
        except Exception:  # noqa: BLE001 - it is being thrown away
            pass


class RedisClusterBackplane(Backplane):
    """Redis Cluster sharded pub/sub, one channel per route, topic and collection: ``<prefix>:<channel>``.

    Publishing sends ``SPUBLISH`` to the master of the channel's slot (from a slot map asked of
    the cluster with ``CLUSTER SLOTS``, renewed after ``MOVED`` or a failure). The listener holds
    one connection per master that serves some of its channels and waits on all of them at once;
    it alone uses them: requests only note which channels changed and wake it, and it handles
    those (and the ones a lost connection or a moved slot left unplaced), never the whole set.
    """

    routes = True

    def __init__(self, url: str, *, channel_prefix: str = DEFAULT_CHANNEL_PREFIX, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        redis = _import_redis()
        if url.partition("://")[0] not in SCHEMES:
            raise ConfigurationError(
                f"RTBROKER_BACKPLANE {redacted(url)!r} is not a redis+cluster:// or rediss+cluster:// URL"
            )
        self.url = redacted(url)
        self._redis = redis
        self._key_slot = redis.crc.key_slot
        self._seeds, self._connection_kwargs = parse_url(url, redis)
        self._connection_class = self._connection_kwargs.pop("connection_class", redis.Connection)
        self.channel = channel_prefix
        """The namespace of this app's channels on the cluster."""
        self._slots: list[str | None] | None = None
        self._refreshed_at = 0.0
        self._clients: dict[str, Any] = {}
        self._wake_fd: int | None = None
        self._dirty = False
        self._touched: set[str] = set()
        """Channels :meth:`want` or :meth:`sweep` changed since the listener last looked."""
        self._touched_lock = threading.Lock()
        # the listener's own state, touched by it alone
        self._shards: dict[str, _Shard] = {}
        self._placed: dict[str, _Shard] = {}
        self._unplaced: set[str] = set()
        """Wanted (physical) channels not subscribed on any shard yet."""
        self._live: set[str] = set()
        self._lost = False

    def _make_locks(self) -> None:
        super()._make_locks()
        self._topology_lock = threading.Lock()
        self._clients_lock = threading.Lock()
        self._wake_lock = threading.Lock()

    def physical(self, channel: str) -> str:
        """The cluster channel of the logical *channel*."""
        return f"{self.channel}:{channel}"

    def _logical(self, physical: str) -> str:
        return physical[len(self.channel) + 1:]

    # -- topology and publishing ---------------------------------------------------------------

    def _client(self, node: str) -> Any:
        """A pooled client of *node* (for SPUBLISH, CLUSTER SLOTS and PING)."""
        with self._clients_lock:
            client = self._clients.get(node)
            if client is None:
                host, port = _address(node)
                pool = self._redis.ConnectionPool(
                    connection_class=self._connection_class, host=host, port=port, **self._connection_kwargs
                )
                client = self._clients[node] = self._redis.Redis(connection_pool=pool)
            return client

    def _refresh(self) -> list[str | None]:
        """The master of each slot, asked of the known nodes in turn (at most every
        :data:`REFRESH_INTERVAL` seconds); ConnectionError when none answers."""
        with self._topology_lock:
            if self._slots is not None and time.monotonic() - self._refreshed_at < REFRESH_INTERVAL:
                return self._slots
            known = dict.fromkeys([*(node for node in dict.fromkeys(self._slots or ()) if node), *self._seeds])
            failures = []
            for node in known:
                try:
                    reply = self._client(node).execute_command("CLUSTER", "SLOTS")
                except self._redis.RedisError as exc:
                    failures.append(f"{node}: {exc}")
                    continue
                slots: list[str | None] = [None] * HASH_SLOTS
                for start, end, master, *_ in reply:
                    host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
                    owner = f"{host or _address(node)[0]}:{int(master[1])}"
                    slots[int(start):int(end) + 1] = [owner] * (int(end) - int(start) + 1)
                self._slots, self._refreshed_at = slots, time.monotonic()
                self._forget_clients(set(slots) | set(self._seeds))
                return slots
            raise self._redis.ConnectionError(f"no Redis Cluster node answered CLUSTER SLOTS ({'; '.join(failures)})")

    def _forget_clients(self, keep: set[str | None]) -> None:
        """Disconnect the pooled clients of nodes that are no longer masters (nor seeds)."""
        with self._clients_lock:
            gone = [node for node in self._clients if node not in keep]
            for node in gone:
                self._clients.pop(node).connection_pool.disconnect()

    def _owner(self, slot: int) -> str:
        owner = (self._slots or self._refresh())[slot]
        if owner is None:
            raise self._redis.ConnectionError(f"no Redis Cluster master serves hash slot {slot}")
        return owner

    def publish_to(self, channel: str, payload: bytes) -> int:
        physical = self.physical(channel)
        slot = self._key_slot(physical.encode())
        try:
            return int(self._client(self._owner(slot)).execute_command("SPUBLISH", physical, payload))
        except self._redis.exceptions.MovedError as moved:  # the slot moved: publish where it went
            owner = f"{moved.host}:{moved.port}"
            if self._slots is not None:
                self._slots[slot] = owner
            return int(self._client(owner).execute_command("SPUBLISH", physical, payload))
        except (self._redis.ConnectionError, self._redis.TimeoutError):
            try:  # not sent again (at-most-once), but the next one goes to the new master
                self._refresh()
            except self._redis.RedisError:
                pass
            raise

    def subscribe_now(self, channels: list[str]) -> None:
        """Note *channels* and wake the listener: it subscribes those still wanted."""
        self._touch(channels)

    def unsubscribe_now(self, channels: list[str]) -> None:
        """Note *channels* and wake the listener: it unsubscribes those no longer wanted."""
        self._touch(channels)

    def _touch(self, channels: list[str]) -> None:
        with self._touched_lock:
            self._touched.update(channels)
        self._changed()

    def _changed(self) -> None:
        self._dirty = True
        with self._wake_lock:
            if self._wake_fd is not None:
                try:
                    os.write(self._wake_fd, b"!")
                except BlockingIOError:  # full: a wake-up is pending anyway
                    pass

    def close(self) -> None:
        super().close()
        self._changed()
        with self._clients_lock:
            for client in self._clients.values():
                client.connection_pool.disconnect()

    # -- the listener --------------------------------------------------------------------------

    def listen(self) -> Iterator[bytes]:
        assert self._runtime is not None, "start() sets the runtime"
        self._refresh()  # no node answers: raise, and the base retries with backoff
        permanent = {ALL, inbox(self.route)}
        ready = False
        retry_at: float | None = None
        hurried_at = float("-inf")  # the last retry made at once after a loss: the next waits its turn
        self._shards, self._placed, self._live, self._lost = {}, {}, set(), False
        with self._touched_lock:
            self._touched = set()  # what changes from now on is noted again
        self._unplaced = {self.physical(channel) for channel in self.channels()}
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        with self._wake_lock:
            self._wake_fd = wake_write
        self._dirty = True
        try:
            while not self.closed:
                now = time.monotonic()
                due = retry_at is not None and now >= retry_at
                if self._dirty or due:
                    complete = self._reconcile(refresh=due)
                    retry_at = None if complete else now + RETRY_INTERVAL
                    if due and complete and ready and self.state == STATE_DOWN:
                        if self._healthy():
                            yield READY  # a publish failed meanwhile (a failover); every master answers again
                        else:
                            retry_at = now + RETRY_INTERVAL
                if ready and self.state == STATE_DOWN and retry_at is None:
                    retry_at = now + RETRY_INTERVAL  # probe (and subscribe what was wanted meanwhile) until up
                self._check_health(now)
                self.sweep()
                active = False
                for shard in list(self._shards.values()):
                    for payload in self._drain(shard, now):
                        active = True
                        if payload is not None:
                            yield payload
                if self._lost:  # a connection dropped or a slot moved: re-subscribe now (at most every RETRY_INTERVAL)
                    self._lost = False
                    retry_at = hurried_at = max(now, hurried_at + RETRY_INTERVAL)
                if not ready and all(self.listening_to(channel) for channel in permanent):
                    ready = True
                    yield READY
                if active:
                    continue
                timeout = IDLE_WAIT if retry_at is None else max(0.0, min(IDLE_WAIT, retry_at - now))
                filenos = [wake_read, *(shard.connection._sock.fileno() for shard in self._shards.values())]
                wait_any_readable(self._runtime, filenos, timeout)
                try:
                    os.read(wake_read, 4096)
                except BlockingIOError:
                    pass
        finally:
            with self._wake_lock:
                self._wake_fd = None
            os.close(wake_read)
            os.close(wake_write)
            for shard in self._shards.values():
                shard.close()
            self._shards, self._placed, self._unplaced, self._live = {}, {}, set(), set()

    def _reconcile(self, refresh: bool) -> bool:
        """Bring the channels changed since the last call up to date (unsubscribe those no
        longer wanted, note the wanted ones not held), then subscribe every wanted channel not
        held (after asking the cluster for its slot map when *refresh*); True when all are held.
        Costs what changed and what is unplaced, not the whole set."""
        self._dirty = False
        with self._touched_lock:
            touched, self._touched = self._touched, set()
        if touched:
            self._settle(touched)
        if not self._unplaced:
            return True
        slots = self._refresh() if refresh or self._slots is None else self._slots
        by_node: dict[str, list[str]] = defaultdict(list)
        for name in self._unplaced:
            owner = slots[self._key_slot(name.encode())]
            if owner is not None:
                by_node[owner].append(name)
        for node, names in by_node.items():
            target = self._shards.get(node) or self._open(node)
            if target is not None and self._send(target, "SSUBSCRIBE", names):
                target.channels.update(names)
                self._placed.update(dict.fromkeys(names, target))
                self._unplaced.difference_update(names)
        return not self._unplaced

    def _settle(self, touched: set[str]) -> None:
        """Compare the *touched* (logical) channels with what is wanted now: unsubscribe the
        unwanted ones, mark the wanted ones not held unplaced, confirm again the wanted ones
        still subscribed (wanted again after a sweep, before it was carried out)."""
        permanent = (ALL, inbox(self.route))
        with self._channels_lock:
            wanted = {channel for channel in touched if channel in self._wanted or channel in permanent}
        stale: dict[_Shard, list[str]] = defaultdict(list)
        for channel in touched:
            name = self.physical(channel)
            shard = self._placed.get(name)
            if channel not in wanted:
                self._unplaced.discard(name)
                if shard is not None:
                    stale[shard].append(name)
            elif shard is None:
                self._unplaced.add(name)
            elif name in self._live and not self.listening_to(channel):
                self.confirmed(channel)
        for shard, names in stale.items():
            self._unplace(names)
            if not shard.channels:
                self._close(shard)
            else:
                self._send(shard, "SUNSUBSCRIBE", names)

    def _open(self, node: str) -> _Shard | None:
        """A subscriber connection to *node*, or None when it cannot be reached now."""
        host, port = _address(node)
        connection = self._connection_class(host=host, port=port, **self._connection_kwargs)
        try:
            connection.connect()
        except (self._redis.RedisError, OSError) as exc:
            log.debug("backplane %s cannot reach %s yet: %s", self.url, node, exc)
            return None
        shard = self._shards[node] = _Shard(node, connection)
        return shard

    def _send(self, shard: _Shard, command: str, names: list[str]) -> bool:
        """Send *command* for *names* on *shard*; on failure drop the shard and return False."""
        try:
            shard.send(command, names, self._key_slot)
        except (self._redis.RedisError, OSError) as exc:
            self._drop(shard, exc)
            return False
        return True

    def _drain(self, shard: _Shard, now: float) -> Iterator[bytes | None]:
        """Yield the payloads waiting on *shard* (at most :data:`BATCH` replies), and None for each
        other reply, handled here: confirmations, moved slots, pongs; drop the shard on failure."""
        try:
            for _ in range(BATCH):
                if self._shards.get(shard.node) is not shard or not shard.connection.can_read(0):
                    return
                reply = shard.connection.read_response()
                shard.seen, shard.pinged = now, None
                kind, name = reply[0], reply[1].decode("utf-8", "replace")
                if kind == b"smessage":
                    yield reply[2]
                    continue
                if self._placed.get(name) is shard:
                    if kind == b"ssubscribe":
                        self._live.add(name)
                        self.confirmed(self._logical(name))
                    elif kind == b"sunsubscribe":  # the server let go of it: its slot moved
                        log.info("backplane %s: %s no longer serves %s; re-subscribing", self.url, shard.node, name)
                        self._misplaced(shard, [name])
                yield None
        except self._redis.exceptions.MovedError as moved:
            if self._slots is not None:
                self._slots[moved.slot_id] = f"{moved.host}:{moved.port}"
            self._misplaced(shard, [name for name in shard.channels if self._key_slot(name.encode()) == moved.slot_id])
            yield None
        except (self._redis.RedisError, OSError) as exc:
            self._drop(shard, exc)
            yield None

    def _unplace(self, names: Iterable[str]) -> None:
        """Forget where *names* are subscribed, and their confirmations: :meth:`want` waits for
        them again until the listener holds them anew."""
        logical = []
        for name in names:
            shard = self._placed.pop(name, None)
            if shard is not None:
                shard.channels.discard(name)
            self._live.discard(name)
            logical.append(self._logical(name))
        with self._channels_lock:
            self._listening.difference_update(logical)

    def _misplaced(self, shard: _Shard, names: list[str]) -> None:
        """*names* are not (or no longer) served by *shard*'s master: subscribe them where they are now."""
        self._unplace(names)
        self._unplaced.update(names)
        if not shard.channels:
            self._close(shard)
        self._lost = True

    def _close(self, shard: _Shard) -> None:
        self._shards.pop(shard.node, None)
        shard.close()

    def _drop(self, shard: _Shard, error: BaseException) -> None:
        """*shard*'s connection failed: its channels are subscribed again where their slots are now."""
        if self._shards.get(shard.node) is not shard:
            return
        log.warning(
            "backplane %s lost %s (%s); re-subscribing its %d channel(s)", self.url, shard.node, error, len(shard.channels)
        )
        self._close(shard)
        names = list(shard.channels)
        self._unplace(names)
        self._unplaced.update(names)
        self._lost = True

    def _check_health(self, now: float) -> None:
        """PING connections silent for :data:`HEALTH_INTERVAL`; drop those that leave it unanswered."""
        for shard in list(self._shards.values()):
            if shard.pinged is not None and now - shard.pinged > PING_TIMEOUT:
                self._drop(shard, TimeoutError(f"no answer to PING in {PING_TIMEOUT:.0f}s"))
            elif shard.pinged is None and now - shard.seen > HEALTH_INTERVAL:
                shard.pinged = now
                try:
                    shard.connection.send_command("PING", check_health=False)
                except (self._redis.RedisError, OSError) as exc:
                    self._drop(shard, exc)

    def _healthy(self) -> bool:
        """True when every master of the slot map answers a PING."""
        try:
            for node in {node for node in self._refresh() if node is not None}:
                self._client(node).ping()
        except (self._redis.RedisError, OSError):
            return False
        return True
