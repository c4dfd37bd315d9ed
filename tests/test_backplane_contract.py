"""The backplane contract, run against every backend: memory, a real redis-server, a real Redis
Cluster (sharded pub/sub) and a real PostgreSQL."""

from __future__ import annotations

import queue
import time
import tracemalloc
from typing import TYPE_CHECKING, Callable, Iterator

import pytest

from flask_rtbroker import BackplaneUnavailable, Emitter
from flask_rtbroker.backplane import STATE_DOWN, STATE_UP, Backplane, Envelope, from_url
from flask_rtbroker.backplane.base import ALL, MAX_UNSWEPT_CHANNELS, PROMPT_GRACE, SWEEP_INTERVAL, UNKNOWN, inbox
from flask_rtbroker.backplane.envelope import EnvelopeError, Stamp
from flask_rtbroker.backplane.freshness import MAX_ORIGINS, WINDOW, ReplayGuard
from flask_rtbroker.runtime.concurrency import ThreadingRuntime
from flask_rtbroker.errors import ConfigurationError
from tests.redis_server import RedisServer

if TYPE_CHECKING:
    from tests.redis_cluster_server import RedisClusterServer

Factory = Callable[..., Backplane]


class Peer:
    """A started backplane recording what it receives and its state changes."""

    def __init__(self, backplane: Backplane) -> None:
        self.backplane = backplane
        self.received: "queue.Queue[Envelope]" = queue.Queue()
        self.states: "queue.Queue[str]" = queue.Queue()
        backplane.start(ThreadingRuntime(2), self.received.put, lambda state, error: self.states.put(state))

    def wait_state(self, state: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.states.get(timeout=max(0.01, deadline - time.monotonic())) == state:
                    return
            except queue.Empty:
                break
        raise AssertionError(f"backplane never became {state}")

    def next(self, timeout: float = 5.0) -> Envelope:
        return self.received.get(timeout=timeout)

    def assert_nothing(self, wait: float = 0.3) -> None:
        with pytest.raises(queue.Empty):
            self.received.get(timeout=wait)


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg://...``, as ``postgres_url`` gives) as libpq's ``postgresql://...``."""
    scheme, _, rest = url.partition("://")
    return f"{scheme.partition('+')[0]}://{rest}"


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator["RedisClusterServer"]:
    """One Redis Cluster (6 nodes take seconds to start) for the module's tests; each test has its own channel prefix."""
    from tests.redis_cluster_server import RedisClusterServer  # imports redis-py: only for this case

    cluster = RedisClusterServer(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


ROUTING_BACKENDS = pytest.mark.parametrize(
    "make_backplane", ["memory", "redis", pytest.param("redis-cluster", marks=pytest.mark.live)], indirect=True,
)
"""For tests of channel bookkeeping: the backends that route by channel (PostgreSQL sends every
process everything)."""


# postgres and redis-cluster are marked live here: conftest's LIVE_PARAMS names one live case per fixture (redis).
@pytest.fixture(params=[
    "memory", "redis", pytest.param("redis-cluster", marks=pytest.mark.live), pytest.param("postgres", marks=pytest.mark.live),
])
def make_backplane(request: pytest.FixtureRequest, tmp_path) -> Iterator[Factory]:
    created: list[Backplane] = []
    redis: RedisServer | None = None
    defaults: dict[str, str] = {}
    if request.param == "redis":
        redis = RedisServer(tmp_path).start()
        url = redis.url
    elif request.param == "redis-cluster":
        url = request.getfixturevalue("redis_cluster").url
        defaults["channel_prefix"] = f"contract-{request.node.name}"  # one cluster serves the module
    elif request.param == "postgres":
        url = libpq_url(request.getfixturevalue("postgres_url"))
        defaults["channel_prefix"] = f"contract-{request.node.name}"  # one database serves every test
    else:
        url = f"memory://contract-{request.node.name}"

    def make(**kwargs) -> Backplane:
        backplane = from_url(url, **{**defaults, **kwargs})
        created.append(backplane)
        return backplane

    make.redis = redis  # type: ignore[attr-defined]
    yield make
    for backplane in created:
        backplane.close()
    if redis:
        redis.stop()


def test_round_trip_and_own_echo_skipped(make_backplane: Factory) -> None:
    a, b = Peer(make_backplane()), Peer(make_backplane())
    a.wait_state(STATE_UP)
    b.wait_state(STATE_UP)
    assert a.backplane.send(a.backplane.envelope("notify", {"t": "x"}, b'{"n":1}'))
    got = b.next()
    assert (got.origin, got.kind, got.fields, got.body) == (a.backplane.origin, "notify", {"t": "x"}, b'{"n":1}')
    a.assert_nothing()


def test_order_from_one_publisher_is_preserved(make_backplane: Factory) -> None:
    a, b = Peer(make_backplane()), Peer(make_backplane())
    a.wait_state(STATE_UP)
    b.wait_state(STATE_UP)
    for i in range(200):
        a.backplane.send(a.backplane.envelope("notify", {"i": i}))
    assert [b.next().fields["i"] for _ in range(200)] == list(range(200))


def test_write_only_emitter_reaches_listeners(make_backplane: Factory) -> None:
    listener = Peer(make_backplane())
    listener.wait_state(STATE_UP)
    emitter = Emitter(make_backplane(write_only=True))
    client_id = listener.backplane.route + "c" * 32  # a client of the listener's process
    emitter.notify("example", {"test": 123}, to=[client_id])
    emitter.send(client_id, "direct", [1])
    first, second = listener.next(), listener.next()
    assert (first.kind, first.fields, first.body) == ("notify", {"t": "example", "to": [client_id]}, b'{"test":123}')
    assert (second.kind, second.fields, second.body) == ("send", {"c": client_id, "n": "direct"}, b"[1]")


def started(make_backplane: Factory, count: int) -> list[Peer]:
    peers = [Peer(make_backplane()) for _ in range(count)]
    for peer in peers:
        peer.wait_state(STATE_UP)
    return peers


def test_a_channel_reaches_its_listeners_only_on_a_routing_backend(make_backplane: Factory) -> None:
    a, b, c = started(make_backplane, 3)
    assert b.backplane.want(["t:news"], timeout=5)
    assert b.backplane.listening_to("t:news") or not b.backplane.routes
    reached = a.backplane.send(a.backplane.envelope("notify", {"t": "news"}), "t:news")
    assert b.next().fields == {"t": "news"}
    if a.backplane.routes:
        assert reached == 1
        c.assert_nothing()
    else:  # PostgreSQL: one channel, every process gets everything and keeps what is its own
        assert reached == UNKNOWN
        assert c.next().fields == {"t": "news"}


def test_every_process_hears_the_all_channel_and_its_own_inbox(make_backplane: Factory) -> None:
    a, b, c = started(make_backplane, 3)
    a.backplane.send(a.backplane.envelope("count", {"rid": "1"}), ALL)
    assert b.next().kind == c.next().kind == "count"
    reached = a.backplane.send(a.backplane.envelope("send", {"n": 1}), inbox(b.backplane.route))
    assert b.next().fields == {"n": 1}
    if a.backplane.routes:
        assert reached == 1
        c.assert_nothing()
    nobody = a.backplane.send(a.backplane.envelope("send", {"n": 2}), inbox("NoSuchRt"))
    assert nobody == (0 if a.backplane.routes else UNKNOWN)


def test_a_sweep_lets_go_of_channels_no_longer_needed(make_backplane: Factory) -> None:
    a, b = started(make_backplane, 2)
    if not b.backplane.routes:
        assert b.backplane.want(["t:x"], timeout=1)  # nothing to subscribe: everything arrives anyway
        return
    assert b.backplane.want(["t:x", "t:y"], timeout=5)
    b.backplane.keep_channels = lambda: {"t:y"}
    b.backplane.sweep(now=time.monotonic() + SWEEP_INTERVAL + 1)  # past the time t:x was asked for
    deadline = time.monotonic() + 5
    while a.backplane.send(a.backplane.envelope("notify"), "t:x") != 0:
        assert time.monotonic() < deadline, "the swept channel still has a listener"
        time.sleep(0.02)
    assert a.backplane.send(a.backplane.envelope("notify", {"kept": 1}), "t:y") == 1
    fields = [b.next().fields]
    while fields[-1] != {"kept": 1} and len(fields) < 10_000:  # the t:x ones sent before the sweep landed, then it
        fields.append(b.next().fields)
    assert fields[-1] == {"kept": 1} and all(f == {} for f in fields[:-1])


@ROUTING_BACKENDS
def test_a_sweep_listens_again_on_a_needed_channel_it_does_not_hold(make_backplane: Factory) -> None:
    """A client that got its key after a sweep dropped the channel (a POST slower than the
    grace): the next sweep subscribes it again, so the client is not cut off for good."""
    a, b = started(make_backplane, 2)
    b.backplane.keep_channels = lambda: {"t:late"}
    b.backplane.sweep(now=time.monotonic() + SWEEP_INTERVAL + 1)
    deadline = time.monotonic() + 5
    while a.backplane.send(a.backplane.envelope("notify", {"late": 1}), "t:late") != 1:
        assert time.monotonic() < deadline, "the needed channel was not subscribed again"
        time.sleep(0.02)
    assert b.next().fields == {"late": 1}


@ROUTING_BACKENDS
def test_unneeded_channels_past_the_cap_go_without_waiting_for_the_timer(make_backplane: Factory) -> None:
    a, b = started(make_backplane, 2)
    backplane = b.backplane
    backplane.keep_channels = lambda: {"t:kept"}
    start = time.monotonic()
    backplane.sweep(now=start)  # the timer's sweep: the next one is SWEEP_INTERVAL away
    churned = [f"t:churn-{i}" for i in range(MAX_UNSWEPT_CHANNELS + 1)]
    assert backplane.want(["t:kept", *churned], timeout=10)
    backplane.sweep(now=start + PROMPT_GRACE / 2)  # asked for too lately: kept
    assert backplane.listening_to(churned[0])
    backplane.sweep(now=time.monotonic() + PROMPT_GRACE + 0.01)  # long before the timer's next one
    assert not any(map(backplane.listening_to, churned)) and backplane.listening_to("t:kept")
    assert a.backplane.send(a.backplane.envelope("notify", {"kept": 1}), "t:kept") == 1
    assert b.next().fields == {"kept": 1}


def test_redis_listener_reconnects_after_redis_comes_back(redis_server: RedisServer) -> None:
    a, b = Peer(from_url(redis_server.url)), Peer(from_url(redis_server.url))
    a.wait_state(STATE_UP)
    b.wait_state(STATE_UP)
    redis_server.stop()
    b.wait_state(STATE_DOWN)
    assert not a.backplane.send(a.backplane.envelope("notify", {"lost": True}))
    redis_server.start()
    b.wait_state(STATE_UP, timeout=10)
    assert a.backplane.send(a.backplane.envelope("notify", {"after": True}))
    assert b.next().fields == {"after": True}
    a.backplane.close()
    b.backplane.close()


def test_redis_publishing_survives_its_connection_being_closed(redis_server: RedisServer) -> None:
    import redis

    a, b = Peer(from_url(redis_server.url)), Peer(from_url(redis_server.url))
    a.wait_state(STATE_UP)
    b.wait_state(STATE_UP)
    assert a.backplane.send(a.backplane.envelope("notify", {"n": 1}))
    assert b.next().fields == {"n": 1}
    admin = redis.Redis(port=redis_server.port)
    killed = admin.client_kill_filter(_type="normal", skipme=True)  # the publishing connections, not the listeners
    assert killed >= 1
    for n in (2, 3):  # the first publish finds its connection closed and sends again on a new one
        assert a.backplane.send(a.backplane.envelope("notify", {"n": n}))
        assert b.next().fields == {"n": n}
    b.assert_nothing()
    admin.close()
    a.backplane.close()
    b.backplane.close()


def test_emitter_fails_loudly_when_redis_is_down(redis_server: RedisServer) -> None:
    emitter = Emitter(redis_server.url)
    redis_server.stop()
    with pytest.raises(BackplaneUnavailable, match="could not publish"):
        emitter.notify("t", 1)


def test_emitter_refuses_a_private_memory_bus() -> None:
    with pytest.raises(ConfigurationError, match="shared backplane"):
        Emitter("memory://")


def test_garbage_payloads_are_dropped() -> None:
    for payload in [b"", b"no header", b'{"v":2,"o":"x","k":"n"}\n', b'{"v":1}\n', b"[1]\n"]:
        with pytest.raises(EnvelopeError):
            Envelope.decode(payload)
    envelope = Envelope("o", "k", {"a": [1]}, b"line1\nline2")
    assert Envelope.decode(envelope.encode()) == envelope
    stamped = Envelope("o", "k", {"a": [1]}, b"", Stamp("t:x", 3, 1_700_000_000_000))
    assert Envelope.decode(stamped.encode()) == stamped
    for stamp in ['"ch":"all"', '"ch":"all","q":1', '"ch":1,"q":1,"ts":1', '"ch":"all","q":true,"ts":1', '"ch":"all","q":1,"ts":"1"']:
        with pytest.raises(EnvelopeError, match="stamp"):
            Envelope.decode(b'{"v":1,"o":"x","k":"n",' + stamp.encode() + b"}\n")


def test_the_replay_guard_takes_each_sequence_once_within_its_window_and_bounds_its_origins() -> None:
    guard = ReplayGuard(30.0, accept_unstamped=False)
    now = time.time()
    sent = int(now * 1000)
    accepted = [guard.refusal("o", Stamp(ALL, sequence, sent), now) is None for sequence in [5, 3, 4, 3, 5, 6, 2]]
    assert accepted == [True, True, True, False, False, True, True], "out of order is fine, twice is not"
    assert guard.refusal("o", Stamp(ALL, 6 + WINDOW, sent), now) is None
    assert guard.refusal("o", Stamp(ALL, 6, sent), now) is not None, "too far behind to tell: dropped"
    assert guard.refusal("o", None, now) is not None and ReplayGuard(30.0).refusal("o", None, now) is None
    tracemalloc.start()
    try:
        for n in range(MAX_ORIGINS + 10):  # full bitmaps: a sequence far past the first
            assert guard.refusal(f"origin-{n}@host:{n}", Stamp(ALL, 1, sent), now) is None
            assert guard.refusal(f"origin-{n}@host:{n}", Stamp(ALL, WINDOW + 1, sent), now) is None
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(guard._origins) == MAX_ORIGINS and held < 1_000_000, f"{held} bytes"
    later = now + 61  # twice the window: every origin silent since then is forgotten
    assert guard.refusal("new", Stamp(ALL, 1, int(later * 1000)), later) is None and len(guard._origins) == 1


@pytest.mark.parametrize("url", ["kafka://x", "redis", 42])
def test_bad_backplane_urls(url: object) -> None:
    with pytest.raises(ConfigurationError, match="RTBROKER_BACKPLANE"):
        from_url(url)


def test_a_process_forked_after_the_backplane_was_made_starts_with_its_own_route() -> None:
    """gunicorn ``--preload``: the app (and its backplane) is made in the master, which never
    starts it; each worker must still get a route of its own, or a POST reaching the sibling of
    a stream's worker would take the id for its own and answer 404 at once."""
    import os

    backplane = from_url("memory://forked")
    parent_route = backplane.route
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: start (as a worker's first request does), report the route, leave
        try:
            backplane.start(ThreadingRuntime(2), lambda envelope: None, lambda state, error: None)
            os.write(write_end, backplane.route.encode() + b" " + backplane.origin.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        child_route, child_origin = os.read(read_end, 1000).decode().split(" ")
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    assert child_route != parent_route and child_origin.startswith(child_route) and str(pid) in child_origin
    backplane.start(ThreadingRuntime(2), lambda envelope: None, lambda state, error: None)
    assert backplane.route == parent_route  # the process that made it keeps it
    backplane.close()


FORKED_LOCKS = """\
import os, sys
from flask_rtbroker.backplane import from_url
backplane = from_url(sys.argv[1])  # made before gevent patches, as in gunicorn's master with --preload
pid = os.fork()
if pid == 0:
    from gevent import monkey
    monkey.patch_all()  # what gunicorn's gevent worker does after the fork
    import threading
    from flask_rtbroker.runtime.concurrency import GeventRuntime
    patched = type(threading.Lock())
    backplane.start(GeventRuntime(2), lambda envelope: None, lambda state, error: None)
    locks = [backplane._channels_lock, backplane._pubsub_lock, backplane._publisher._lock]
    print(all(type(lock) is patched for lock in locks), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
"""


def test_a_forked_worker_makes_its_own_locks_after_gevent_patched_threading() -> None:
    """With ``--preload`` the backplane's locks were OS locks made before the worker's monkey
    patching; a greenlet waiting on one held by another greenlet across I/O (the listener's
    SUBSCRIBE while it connects) stalled the whole worker, and a subscription POST forwarded to
    it timed out as a 404. The forked worker's first start makes gevent's locks."""
    import subprocess
    import sys

    from tests.live import free_port

    result = subprocess.run(
        [sys.executable, "-c", FORKED_LOCKS, f"redis://127.0.0.1:{free_port()}/0"],  # nobody listens: never connects
        capture_output=True, text=True, timeout=60,
    )
    assert result.stdout.strip() == "True", result.stdout + result.stderr[-3000:]
