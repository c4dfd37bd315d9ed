"""Two server processes sharing a real redis-server: any process can take any request."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Iterator

import pytest
import requests

from flask_rtbroker.testing import SSEClient, StreamEnded
from tests.live import HOST, ROOT, LiveServer
from tests.redis_server import RedisServer

TOKENS = '{"tokA": "userA", "tokB": "userB"}'
EMIT_SCRIPT = """
import sys
from flask_rtbroker import Emitter
Emitter(sys.argv[1]).notify(sys.argv[2], {"from": "emitter"})
"""


@pytest.fixture
def cluster(make_server, redis_server: RedisServer) -> Iterator[tuple[LiveServer, LiveServer]]:
    env = {"RTBROKER_BACKPLANE": redis_server.url, "RTBROKER_TEST_TOKENS": TOKENS, "RTBROKER_FORWARD_TIMEOUT": "1"}
    a = make_server("gunicorn-gevent", env=env)
    b = make_server("gunicorn-gevent", env=env)
    yield a, b


def post(server: LiveServer, client_id: str, subscriptions: list[str], **headers: str) -> requests.Response:
    return requests.post(f"{server.url}/api/realtime", json={"clientId": client_id, "subscriptions": subscriptions},
                         headers=headers, timeout=10)


def assert_no_event(sse: SSEClient, wait: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        sse.next_event(timeout=wait)


def test_stream_on_a_subscribe_via_b_notify_from_b_and_emitter(cluster, redis_server: RedisServer) -> None:
    a, b = cluster
    with a.stream() as sse:
        assert post(b, sse.client_id, ["example"]).status_code == 204
        assert b.notify("example", {"from": "b"}) == 0  # no local subscriber in B
        event = sse.next_event(timeout=5)
        assert (event.name, event.json()) == ("example", {"from": "b"})
        subprocess.run([sys.executable, "-c", EMIT_SCRIPT, redis_server.url, "example"], cwd=ROOT, check=True, timeout=30)
        assert sse.next_event(timeout=5).json() == {"from": "emitter"}
        assert a.notify("example", {"from": "a"}) == 1
        assert sse.next_event(timeout=5).json() == {"from": "a"}
        assert_no_event(sse)  # each arrived exactly once


def test_targeted_notify_by_id_crosses_processes(cluster) -> None:
    a, b = cluster
    with a.stream() as one, a.stream() as two:
        for sse in (one, two):
            assert post(b, sse.client_id, ["chat"]).status_code == 204
        assert b.notify("chat", "only two", to=[two.client_id]) == 0
        assert two.next_event(timeout=5).json() == "only two"
        assert_no_event(one)


def test_forwarded_post_errors_match_local_ones(cluster) -> None:
    a, b = cluster
    with a.stream(source_address=("127.0.0.2", 0)) as sse:
        wrong_ip = post(b, sse.client_id, ["x"])
        assert (wrong_ip.status_code, wrong_ip.content) == (
            400, b'{"data":{},"message":"Invalid realtime client.","status":400}')
    with a.stream() as sse:
        assert post(b, sse.client_id, ["x"], Authorization="tokA").status_code == 204
        switched = post(b, sse.client_id, ["x"], Authorization="tokB")
        assert (switched.status_code, switched.content) == (403, (
            b'{"data":{},"message":"The current and the previous request authorization don\'t match.","status":403}'))
        assert post(b, sse.client_id, ["x", "y"], Authorization="Bearer tokA").status_code == 204
        assert a.notify("y", 1) == 1
        assert sse.next_event(timeout=5).name == "y"
    started = time.monotonic()
    unknown = post(b, "nobody" * 5, ["x"])
    assert (unknown.status_code, unknown.content) == (
        404, b'{"data":{},"message":"Missing or invalid client id.","status":404}')
    assert time.monotonic() - started < 0.5  # no process has that route: no wait for RTBROKER_FORWARD_TIMEOUT
    invalid = post(b, "", ["x"])
    assert invalid.status_code == 400 and b"validation_required" in invalid.content


def test_cluster_wide_client_count(cluster) -> None:
    a, b = cluster
    with a.stream(), a.stream(), b.stream():
        stats = requests.get(f"{b.url}/stats?cluster=1", timeout=10).json()
        assert (stats["clients"], stats["cluster"]) == (1, 3)


def read_all(clients: list[SSEClient], settle: float = 0.3) -> list[list[int]]:
    """What each client received so far: wait *settle* once, then read what is buffered."""
    time.sleep(settle)
    got: list[list[int]] = []
    for sse in clients:
        seen: list[int] = []
        while len(seen) < 1000:
            try:
                seen.append(sse.next_event(timeout=0.02).json()["n"])
            except TimeoutError:
                break
        got.append(seen)
    return got


def test_redis_outage_keeps_local_delivery_and_cross_process_resumes(cluster, redis_server: RedisServer) -> None:
    """100 clients over two processes; Redis is killed and restarted while notifies continue."""
    a, b = cluster
    streams = [(a if i % 2 else b).stream() for i in range(100)]
    try:
        for i, sse in enumerate(streams):
            assert post(a if i % 2 else b, sse.client_id, ["feed"]).status_code == 204
        on_a = [s for i, s in enumerate(streams) if i % 2]
        on_b = [s for i, s in enumerate(streams) if not i % 2]

        assert b.notify("feed", {"n": 0}) == 50
        assert read_all(streams, settle=1.0) == [[0]] * 100

        redis_server.stop()
        assert [b.notify("feed", {"n": n}) for n in (1, 2, 3)] == [50, 50, 50]  # local never stops
        assert read_all(on_b) == [[1, 2, 3]] * 50
        assert read_all(on_a, settle=0) == [[]] * 50  # at-most-once: lost while Redis was down

        redis_server.start()
        started = time.monotonic()
        resumed_after = None
        for n in range(100, 200):
            if time.monotonic() - started > 15:
                break
            b.notify("feed", {"n": n})
            try:
                on_a[0].next_event(timeout=0.5)
                resumed_after = time.monotonic() - started
                break
            except TimeoutError:
                continue
        assert resumed_after is not None, "cross-process delivery did not resume within 15 s"
        print(f"\ncross-process delivery resumed {resumed_after:.2f}s after Redis restarted; "
              f"lost during the outage: 3 notifies x 50 clients on A = 150 deliveries, 0 on B")
        read_all(streams)  # drop what arrived while probing
        assert b.notify("feed", {"n": 999}) == 50
        assert read_all(streams, settle=1.0) == [[999]] * 100
    finally:
        for sse in streams:
            sse.close()
