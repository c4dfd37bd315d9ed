"""The Redis presence store against a real redis-server, two "processes" (stores with their own
ids) side by side: counts across processes, the grace period's expiry, the liveness of processes
and the reaping of a dead one's members, the capped member read."""

from __future__ import annotations

import time

import redis
from flask import Flask

from flask_rtbroker import RealtimeBroker

from flask_rtbroker.presence.redis_store import RedisPresenceStore
from tests.redis_server import RedisServer

DOC = b'{"key":"k","info":{}}'


def stores(server: RedisServer, ttl: float = 1.0) -> tuple[RedisPresenceStore, RedisPresenceStore, redis.Redis]:
    client = redis.Redis.from_url(server.url)
    return RedisPresenceStore(client, "t", "one", ttl), RedisPresenceStore(client, "t", "two", ttl), client


def test_a_member_is_counted_across_processes_and_leaves_when_none_counts_it(redis_server: RedisServer) -> None:
    one, two, client = stores(redis_server)
    assert one.add("room", "u:ann", DOC) is True
    assert two.add("room", "u:ann", b"ignored: the first document stays") is False
    assert one.count("room") == (2, 1)
    assert one.remove("room", "u:ann") == 1  # two still counts her
    assert one.expire("room", "u:ann") is None
    assert two.remove("room", "u:ann") == 0
    assert one.members("room", 10) == ([(DOC, 0)], 1)  # within her grace period she is still listed
    assert two.add("room", "u:ann", DOC) is False  # back within the grace period: no join
    assert two.remove("room", "u:ann") == 0
    assert two.expire("room", "u:ann") == DOC
    assert one.count("room") == (0, 0)
    assert one.remove("room", "u:ann") == 0  # never below what this process added
    assert sorted(client.keys("t:pr:*")) == [b"t:pr:procs"]  # an empty room leaves no key behind


def test_a_dead_process_is_reaped_once_and_only_its_last_members_leave(redis_server: RedisServer) -> None:
    one, two, client = stores(redis_server, ttl=0.5)
    one.add("room", "u:ann", DOC)
    one.add("room", "u:bob", b'{"key":"b","info":{}}')
    one.add("room", "g:gone", b'{"key":"g","info":{}}')
    one.remove("room", "g:gone")  # its grace period was running when "one" died
    two.add("room", "u:bob", b'{"key":"b","info":{}}')
    assert two.beat() == (False, [])
    time.sleep(0.7)  # "one" stops beating
    lapsed, leaves = two.beat()
    assert not lapsed
    assert sorted(leaves) == [("room", b'{"key":"g","info":{}}'), ("room", DOC)]  # bob stays: two counts him
    assert two.count("room") == (1, 1)
    assert two.beat() == (False, [])  # reaped once
    assert client.keys("t:pr:t:one") == []


def test_a_process_taken_for_dead_learns_it_lapsed(redis_server: RedisServer) -> None:
    one, two, _ = stores(redis_server, ttl=0.3)
    one.add("room", "u:ann", DOC)
    two.beat()
    time.sleep(0.5)
    assert two.beat()[1] == [("room", DOC)]
    lapsed, _ = one.beat()
    assert lapsed  # it must count its connections again
    assert one.beat() == (False, [])


def test_members_read_is_capped_with_the_count(redis_server: RedisServer) -> None:
    one, _, _ = stores(redis_server)
    for i in range(50):
        one.add("big", f"g:{i}", b'{"key":"%d","info":{}}' % i)
    members, total = one.members("big", 7)
    assert total == 50 and len(members) == 7 and len(set(members)) == 7
    assert all(connections == 1 for _, connections in members)


def test_presence_runs_on_a_redis_cluster(tmp_path) -> None:
    """Every script touches one topic's hash slot; the process sets and the liveness ZSET live
    elsewhere: the same semantics on a 3-master cluster, topics spread over the masters; then an
    app whose backplane is that cluster."""
    from flask_rtbroker.presence import cluster_client
    from tests.redis_cluster_server import RedisClusterServer

    cluster = RedisClusterServer(tmp_path, replicas=0).start()
    try:
        client = cluster_client(redis, cluster.url)
        one = RedisPresenceStore(client, "c", "one", 0.5)
        two = RedisPresenceStore(client, "c", "two", 0.5)
        topics = [f"room/{i}" for i in range(6)]
        for topic in topics:
            assert one.add(topic, "u:ann", DOC) is True
            assert two.add(topic, "u:ann", DOC) is False
        assert len({cluster.master_of(one._keys(topic)[0]).port for topic in topics}) > 1
        assert one.remove("room/0", "u:ann") == 1 and two.remove("room/0", "u:ann") == 0
        assert two.expire("room/0", "u:ann") == DOC
        assert one.members("room/1", 5) == ([(DOC, 2)], 1) and one.count("room/1") == (2, 1)
        two.beat()
        time.sleep(0.7)  # "one" stops beating: ann stays where "two" counts her
        assert two.beat() == (False, [])
        assert [one.count(topic) for topic in topics[1:]] == [(1, 1)] * 5
        app_on_the_cluster(cluster.url)
    finally:
        cluster.stop()


def app_on_the_cluster(url: str) -> None:
    """An app whose backplane is the cluster gets its presence there: a member and a watcher."""
    app = Flask(__name__)
    app.config.update(RTBROKER_BACKPLANE=url, RTBROKER_PRESENCE_GRACE=0)
    broker = RealtimeBroker(app)
    broker.presence("hall/*")
    member, watcher = broker.test_client(app), broker.test_client(app)
    try:
        member.subscribe("hall/1")
        watcher.subscribe("@presence/hall/1")
        [sync] = [event.data for event in watcher.get_received()]
        assert sync["action"] == "sync" and sync["count"] == 1
        with app.app_context():
            assert broker.presence_count("hall/1") == {"clients": 1, "users": 1}
        member.disconnect()
        deadline = time.monotonic() + 5
        events: list = []
        while not events and time.monotonic() < deadline:
            events = [event.data["action"] for event in watcher.get_received(0.5)]
        assert events == ["leave"]
    finally:
        watcher.disconnect()
        app.extensions["rtbroker"].close()


def test_a_redis_restart_that_lost_everything_is_counted_again(redis_server: RedisServer) -> None:
    """While Redis is down, subscriptions still answer 204 (presence is best effort); once it is
    back without its data, the process notices at its next renewal and counts its connections
    again: the member joins again and the counts are right."""
    app = Flask(__name__)
    app.config.update(RTBROKER_BACKPLANE=redis_server.url, RTBROKER_PRESENCE_TTL=0.6, RTBROKER_PRESENCE_GRACE=0)
    broker = RealtimeBroker(app)
    broker.presence("hall/*")
    member, watcher = broker.test_client(app), broker.test_client(app)
    try:
        member.subscribe("hall/1")
        watcher.subscribe("@presence/hall/1")
        assert [event.data["action"] for event in watcher.get_received()] == ["sync"]
        redis_server.stop()
        late = broker.test_client(app)
        assert late.subscribe("hall/1").status_code == 204
        redis_server.start()
        deadline = time.monotonic() + 10
        with app.app_context():
            while broker.presence_count("hall/1") != {"clients": 2, "users": 2} and time.monotonic() < deadline:
                time.sleep(0.1)
            assert broker.presence_count("hall/1") == {"clients": 2, "users": 2}
        assert [event.data["action"] for event in watcher.get_received()] == ["join", "join"]
        late.disconnect()
    finally:
        for client in (member, watcher):
            client.disconnect()
        app.extensions["rtbroker"].close()
