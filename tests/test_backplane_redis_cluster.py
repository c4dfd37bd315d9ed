"""The Redis Cluster backplane beyond the contract: channels spread over the shards, two apps,
a slot that moves, a master killed mid-stream (run with ``-s`` for the measured loss and
recovery), and gevent's hub. The tests on a cluster start six redis-server processes: ``live``."""

from __future__ import annotations

import queue
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask

from flask_rtbroker import RealtimeBroker, wire
from flask_rtbroker.backplane import STATE_UP, from_url
from flask_rtbroker.backplane.base import ALL, SWEEP_INTERVAL, inbox
from flask_rtbroker.backplane.redis_cluster import RedisClusterBackplane
from flask_rtbroker.errors import ConfigurationError, MissingDependency
from flask_rtbroker.testing import Event, parse_events
from tests.gevent_probe import probe
from tests.redis_cluster_server import RedisClusterServer
from tests.test_backplane_contract import Peer

@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServer]:
    """One cluster for the module's tests (6 nodes take seconds to start); the failover test has its own."""
    cluster = RedisClusterServer(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def prefix() -> str:
    """A channel prefix of this test's own: the cluster is shared by the module."""
    return f"rc-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def peers(redis_cluster: RedisClusterServer, prefix: str) -> Iterator[list[Peer]]:
    """Three started listeners on the cluster, closed after the test."""
    started = [Peer(RedisClusterBackplane(redis_cluster.url, channel_prefix=prefix)) for _ in range(3)]
    for peer in started:
        peer.wait_state(STATE_UP)
    yield started
    for peer in started:
        peer.backplane.close()


def cluster_backplane(peer: Peer) -> RedisClusterBackplane:
    backplane = peer.backplane
    assert isinstance(backplane, RedisClusterBackplane)
    return backplane


def masters_of(cluster: RedisClusterServer, backplane: RedisClusterBackplane, channels: Any) -> set[str]:
    """The ``host:port`` of the masters serving *channels* now."""
    return {f"127.0.0.1:{cluster.master_of(backplane.physical(channel)).port}" for channel in channels}


def one_channel_per_master(cluster: RedisClusterServer, backplane: RedisClusterBackplane) -> list[str]:
    """Topic channels whose slots are on different masters, one per master."""
    found: dict[int, str] = {}
    for i in range(1000):
        channel = f"t:topic-{i}"
        found.setdefault(cluster.master_of(backplane.physical(channel)).port, channel)
        if len(found) == len(cluster.masters()):
            return list(found.values())
    raise AssertionError("no channel found for every master")


def drain(peer: Peer, wait: float = 0.3) -> list[dict[str, Any]]:
    """The fields of everything *peer* received until nothing came for *wait* seconds."""
    got = []
    while True:
        try:
            got.append(peer.received.get(timeout=wait).fields)
        except queue.Empty:
            return got


# -- without a server -------------------------------------------------------------------------


def test_urls_seeds_and_passwords_never_shown() -> None:
    for url, shown, seeds in [
        ("redis+cluster://127.0.0.1:7000", "redis+cluster://127.0.0.1:7000", ["127.0.0.1:7000"]),
        ("redis+cluster://:s3cretPW@a:1,b:2/", "redis+cluster://:***@a:1,b:2/", ["a:1", "b:2"]),
        ("rediss+cluster://user:s3cretPW@[::1]:7000?ssl_cert_reqs=none",
         "rediss+cluster://user:***@[::1]:7000?ssl_cert_reqs=none", ["::1:7000"]),
    ]:
        backplane = from_url(url, channel_prefix="app")
        assert isinstance(backplane, RedisClusterBackplane) and backplane.url == shown
        assert backplane._seeds == seeds and backplane.physical("t:x") == "app:t:x"
        assert backplane._connection_kwargs.get("password") == ("s3cretPW" if "s3cret" in url else None)
    for bad in ["redis+cluster://", "redis+cluster://host", "redis+cluster://u:s3cretPW@a:1,b", "redis+cluster://a:1/3"]:
        with pytest.raises(ConfigurationError, match="RTBROKER_BACKPLANE") as error:
            from_url(bad)
        assert "s3cretPW" not in str(error.value)


def test_missing_redis_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(MissingDependency, match=r"flask-rtbroker\[redis\]"):
        from_url("redis+cluster://127.0.0.1:7000")


# -- on a real cluster ------------------------------------------------------------------------


@pytest.mark.live
def test_channels_spread_over_the_shards_and_reach_only_their_listeners(
    redis_cluster: RedisClusterServer, peers: list[Peer]
) -> None:
    publisher, a, b = peers
    topics_a, topics_b = [f"t:a{i}" for i in range(30)], [f"t:b{i}" for i in range(30)]
    assert a.backplane.want(topics_a, timeout=5) and b.backplane.want(topics_b, timeout=5)
    for peer in (a, b):  # one subscriber connection per master that serves some of its channels
        backplane = cluster_backplane(peer)
        assert set(backplane._shards) == masters_of(redis_cluster, backplane, backplane.channels())
        assert len(backplane._shards) == 3
    for topic in topics_a + topics_b:
        assert publisher.backplane.send(publisher.backplane.envelope("notify", {"t": topic}), topic) == 1
    assert sorted(f["t"] for f in drain(a)) == sorted(topics_a)
    assert sorted(f["t"] for f in drain(b)) == sorted(topics_b)
    publisher.assert_nothing(0.0)

    backplane = cluster_backplane(a)  # a sweep keeps one topic: the other shards' connections close
    a.backplane.keep_channels = lambda: {topics_a[0]}
    a.backplane.sweep(now=time.monotonic() + SWEEP_INTERVAL + 1)  # past the time they were asked for
    expected = masters_of(redis_cluster, backplane, [ALL, inbox(a.backplane.route), topics_a[0]])
    deadline = time.monotonic() + 5
    while set(backplane._shards) != expected or publisher.backplane.send(
        publisher.backplane.envelope("notify"), topics_a[1]
    ) != 0:
        assert time.monotonic() < deadline, f"still connected to {set(backplane._shards)}, expected {expected}"
        time.sleep(0.02)
    assert publisher.backplane.send(publisher.backplane.envelope("notify", {"kept": 1}), topics_a[0]) == 1
    assert drain(a)[-1] == {"kept": 1}


@pytest.mark.live
def test_a_notify_on_one_app_reaches_a_client_of_another(redis_cluster: RedisClusterServer, prefix: str) -> None:
    apps = []
    for _ in range(2):
        app = Flask(__name__)
        app.config.update(RTBROKER_CONCURRENCY="threading", RTBROKER_BACKPLANE=redis_cluster.url,
                          RTBROKER_CHANNEL_PREFIX=prefix, RTBROKER_GRACEFUL_SHUTDOWN=False)
        apps.append((app, RealtimeBroker(app)))
    (sender_app, sender), (receiver_app, receiver) = apps
    try:
        with receiver_app.app_context():
            client = receiver.state().new_client()
            receiver.subscriptions_broker.register(client)
            client.subscribe("t")
            receiver.state().cluster.ensure_started()
        backplane = receiver_app.extensions["rtbroker"].cluster.backplane
        deadline = time.monotonic() + 5
        while not backplane.listening_to(wire.topic_channel("t")):
            assert time.monotonic() < deadline, "the receiver never listened on the topic's channel"
            time.sleep(0.01)
        with sender_app.app_context():
            assert sender.notify("t", {"n": 1}) == 0  # no subscriber here
            assert sender.send(client.id, "direct", [2]) is False  # not here: to the owner's inbox
            assert sender.count_clients() == 1
        events: list[Event] = []
        deadline = time.monotonic() + 5
        while len(events) < 2 and time.monotonic() < deadline:
            events += parse_events(client.take())
            time.sleep(0.01)
        assert [(event.name, event.json()) for event in events] == [("t", {"n": 1}), ("direct", [2])]
    finally:
        for app, _ in apps:
            app.extensions["rtbroker"].close()


@pytest.mark.live
def test_a_moved_slot_is_followed_by_listener_and_publisher(redis_cluster: RedisClusterServer, peers: list[Peer]) -> None:
    publisher, listener, _ = peers
    backplane = cluster_backplane(listener)
    channel = "t:moving"
    assert listener.backplane.want([channel], timeout=5)
    assert publisher.backplane.send(publisher.backplane.envelope("notify", {"n": 0}), channel) == 1
    assert listener.next().fields == {"n": 0}
    source = redis_cluster.master_of(backplane.physical(channel))
    target = next(node for node in redis_cluster.masters() if node is not source)
    redis_cluster.move_slot(backplane.physical(channel), target)  # the source sends sunsubscribe
    deadline = time.monotonic() + 5
    while backplane._placed.get(backplane.physical(channel)) is None or \
            backplane._placed[backplane.physical(channel)].node != f"127.0.0.1:{target.port}" or \
            not listener.backplane.listening_to(channel):
        assert time.monotonic() < deadline, "the listener did not follow the slot"
        time.sleep(0.01)
    # the publisher's slot map still names the source: MOVED sends it to the target
    assert publisher.backplane.send(publisher.backplane.envelope("notify", {"n": 1}), channel) == 1
    assert listener.next().fields == {"n": 1}


GEVENT_SETUP = """
url, prefix = sys.argv[1:]
from flask_rtbroker.backplane.redis_cluster import RedisClusterBackplane
listener = RedisClusterBackplane(url, channel_prefix=prefix)
publisher = RedisClusterBackplane(url, channel_prefix=prefix, write_only=True)
listener.start(runtime, received.append, lambda state, error: None)
listener.wait_ready(10)
topics = [f"t:{i}" for i in range(12)]
assert listener.want(topics, 5)
def publish():
    for topic in topics:
        publisher.send(publisher.envelope("notify", {"t": topic}), topic)
"""


@pytest.mark.live
def test_waiting_on_every_shard_under_gevent_leaves_the_hub_free(redis_cluster: RedisClusterServer, prefix: str) -> None:
    report, _ = probe(GEVENT_SETUP, redis_cluster.url, prefix, report='report["shards"] = len(listener._shards)')
    assert report["state"] == STATE_UP and report["shards"] == 3, report
    assert sorted(fields["t"] for fields in report["received"]) == sorted(f"t:{i}" for i in range(12)), report
    assert report["ticks"] >= 50, report  # a greenlet ticking every 10 ms ran all along


# -- failover ---------------------------------------------------------------------------------

RECOVERY_BOUND = 10.0
"""Seconds within which delivery on the dead master's channel must resume."""


class NumberedPublisher(threading.Thread):
    """Publishes ``{"c": channel, "n": n}`` on every channel each 10 ms, recording when each was sent."""

    def __init__(self, backplane: Any, channels: list[str]) -> None:
        super().__init__(daemon=True)
        self.backplane, self.channels = backplane, channels
        self.sent: dict[str, list[float]] = {channel: [] for channel in channels}
        """Per channel, the time each number was published (its index is the number)."""
        self.failed: dict[str, set[int]] = {channel: set() for channel in channels}
        self.stop = threading.Event()

    def run(self) -> None:
        for n in range(6000):  # 60 s at most
            if self.stop.is_set():
                return
            for channel in self.channels:
                self.sent[channel].append(time.monotonic())
                if self.backplane.send(self.backplane.envelope("notify", {"c": channel, "n": n}), channel) is None:
                    self.failed[channel].add(n)
            time.sleep(0.01)


class NumberedReceiver:
    """When each ``{"c": channel, "n": n}`` reached *peer*."""

    def __init__(self, peer: Peer, channels: list[str]) -> None:
        self.peer = peer
        self.received: dict[str, dict[int, float]] = {channel: {} for channel in channels}

    def take(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            try:
                fields = self.peer.received.get(timeout=0.05).fields
            except queue.Empty:
                continue
            self.received[fields["c"]][fields["n"]] = time.monotonic()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisClusterServer]:
    """A cluster of the test's own: it kills a master."""
    cluster = RedisClusterServer(tmp_path).start()
    yield cluster
    cluster.stop()


@pytest.mark.live
def test_a_master_killed_mid_stream_loses_only_its_shards_messages_and_delivery_resumes(
    own_cluster: RedisClusterServer,
) -> None:
    listener, sender = (Peer(RedisClusterBackplane(own_cluster.url, channel_prefix="failover")) for _ in range(2))
    listener.wait_state(STATE_UP)
    sender.wait_state(STATE_UP)  # it listens too, so its failed publishes take it down until it probes its way up
    backplane = cluster_backplane(listener)
    channels = one_channel_per_master(own_cluster, backplane)
    assert listener.backplane.want(channels, timeout=5)
    victim, others = channels[0], channels[1:]
    publisher, receiver = NumberedPublisher(sender.backplane, channels), NumberedReceiver(listener, channels)
    publisher.start()
    receiver.take(0.5)
    assert all(receiver.received[channel] for channel in channels), "nothing arrived before the failover"
    dead = own_cluster.kill_master_of(backplane.physical(victim))
    killed_at = time.monotonic()
    recovered_at = None
    while recovered_at is None:  # when the first victim message published after the kill arrived
        assert time.monotonic() - killed_at < RECOVERY_BOUND, "delivery on the dead master's channel never resumed"
        receiver.take(0.05)
        sent_after = [n for n, at in enumerate(list(publisher.sent[victim])) if at > killed_at]
        recovered_at = min((receiver.received[victim][n] for n in sent_after if n in receiver.received[victim]), default=None)
    receiver.take(0.5)
    publisher.stop.set()
    publisher.join(5)
    receiver.take(0.5)

    sent, received, failed = publisher.sent, receiver.received, publisher.failed[victim]
    lost = [n for n in range(len(sent[victim])) if n not in received[victim]]
    accepted_at = min(at for n, at in enumerate(sent[victim]) if at > killed_at and n not in failed)
    promoted = own_cluster.master_of(backplane.physical(victim))
    print(f"\nfailover of {dead.port} -> {promoted.port}: delivery resumed {recovered_at - killed_at:.2f} s after "
          f"the kill (the new master took its first SPUBLISH after {accepted_at - killed_at:.2f} s); lost "
          f"{len(lost)} of {len(sent[victim])} messages on the dead master's channel (n {lost[0]}..{lost[-1]}, "
          f"{len(failed)} of them failed to publish); other shards lost "
          f"{sum(len(sent[c]) - len(received[c]) for c in others)} of {sum(len(sent[c]) for c in others)}")
    assert promoted is not dead
    assert lost == list(range(lost[0], lost[-1] + 1)), "one gap, around the failover"
    assert all(sent[victim][n] < recovered_at for n in lost)
    for channel in others:
        assert not publisher.failed[channel]
        assert sorted(received[channel]) == list(range(len(sent[channel]))), f"{channel} lost messages"
    assert listener.backplane.state == STATE_UP
    assert set(backplane._shards) == masters_of(own_cluster, backplane, backplane.channels())
    deadline = time.monotonic() + 5
    while sender.backplane.state != STATE_UP:
        assert time.monotonic() < deadline, "the sender stayed down after the failover"
        time.sleep(0.05)
    listener.backplane.close()
    sender.backplane.close()
