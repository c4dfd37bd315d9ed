"""Presence cost: what a join and a leave cost per connection, and what a member takes in memory.

    .venv/bin/python -m benchmarks.presence_cost [--members 2000] [--streams 200]

1. Store operations (in process, a fresh redis-server from the test fixtures): *members* guests
   join one topic (``add``: one Lua script), then leave (``remove`` + ``expire`` after the
   grace period: two scripts); microseconds per join and per leave, Redis store and the memory
   store side by side, and a PING's round trip for scale; Redis ``used_memory`` per member (the topic's HASHes, counters and the
   per-process HASH).
2. The process side (in process, tracemalloc, the Redis client's own buffers left out): bytes this
   process keeps per connection when *members* guest connections become members (the
   per-connection record, the guest session id in the client's store, and with the memory
   backplane the store itself).
3. End to end (``gunicorn -k gevent -w 1`` running ``examples.notify_app:app`` on the redis-server,
   presence on ``room/*``, grace 0): *streams* SSE streams POST one key each, ``room/bench``
   (a presence join) or ``plain/bench`` (no presence), alternately; POST latency p50 / p99 of
   each, then the streams close and the leaves are waited for.

Printed and saved to benchmarks/results/presence_cost.json. Every connection is loopback.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import redis
import requests
from flask import Flask

from benchmarks.run import HOST, ROOT, Server
from flask_rtbroker import RealtimeBroker
from flask_rtbroker.presence.redis_store import RedisPresenceStore
from flask_rtbroker.presence.store import MemoryPresenceStore, PresenceStore
from flask_rtbroker.testing import SSEClient
from tests.redis_server import RedisServer

RESULTS = ROOT / "benchmarks" / "results" / "presence_cost.json"
DOCUMENT = b'{"key":"0123456789abcdef01234567","info":{"id":"abcdefghijklmno","collectionName":"users"}}'


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0


def store_ops(store: PresenceStore, members: int, topic: str) -> dict[str, float]:
    """Microseconds per join (add) and per leave (remove, then expire) of *members* members."""
    names = [f"g:member{i:08d}" for i in range(members)]
    started = time.perf_counter()
    for name in names:
        store.add(topic, name, DOCUMENT)
    joined = time.perf_counter()
    for name in names:
        store.remove(topic, name)
        store.expire(topic, name)
    left = time.perf_counter()
    return {"join_us": round((joined - started) / members * 1e6, 1), "leave_us": round((left - joined) / members * 1e6, 1)}


def redis_memory_per_member(client: Any, store: RedisPresenceStore, members: int) -> float:
    before = client.info("memory")["used_memory"]
    for i in range(members):
        store.add("room/memory", f"g:member{i:08d}", DOCUMENT)
    after = client.info("memory")["used_memory"]
    return round((after - before) / members, 1)


def process_memory_per_connection(backplane: str, redis_url: str | None, members: int) -> float:
    """Bytes allocated here per connection turned member (tracemalloc), store included when in memory."""
    app = Flask(__name__)
    app.config.update(RTBROKER_BACKPLANE=redis_url or backplane, RTBROKER_ALLOW_LOCAL_BACKPLANE=True)
    broker = RealtimeBroker(app)
    with app.app_context():
        broker.presence("room/*")
    state = app.extensions["rtbroker"]
    presence = state.presence
    clients = []
    for _ in range(members):
        client = state.new_client()
        client.subscribe("room/1")
        clients.append(client)
    presence.subscriptions_changed(clients[0], [])  # the store and keeper exist before measuring
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for client in clients[1:]:
        presence.subscriptions_changed(client, [])
    time.sleep(1.0)  # the join events' publishes leave the backplane's queue
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    ignore = [tracemalloc.Filter(False, pattern) for pattern in ("*/redis/*", "*/hiredis/*", tracemalloc.__file__)]
    grown = sum(stat.size_diff for stat in after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "filename"))
    for client in clients:
        presence.disconnected(client)
    state.close()
    return round(grown / (members - 1), 1)


def end_to_end(redis_url: str, streams: int, tmp: Path) -> dict[str, Any]:
    env = {"RTBROKER_BACKPLANE": redis_url, "NOTIFY_APP_PRESENCE": "room/*", "RTBROKER_PRESENCE_GRACE": "0"}
    server = Server("ours", tmp, extra_env=env).start()
    latencies: dict[str, list[float]] = {"room/bench": [], "plain/bench": []}
    opened: list[SSEClient] = []
    session = requests.Session()
    try:
        for i in range(streams):
            sse = SSEClient.connect(HOST, server.port)
            opened.append(sse)
            topic = "room/bench" if i % 2 else "plain/bench"
            started = time.perf_counter()
            response = session.post(f"http://{HOST}:{server.port}/api/realtime",
                                    json={"clientId": sse.client_id, "subscriptions": [topic]}, timeout=10)
            latencies[topic].append(time.perf_counter() - started)
            assert response.status_code == 204, response.text
        count = session.get(f"http://{HOST}:{server.port}/presence", params={"topic": "room/bench"}, timeout=10).json()["count"]
        for sse in opened:
            sse.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            after = session.get(f"http://{HOST}:{server.port}/presence", params={"topic": "room/bench"}, timeout=10).json()["count"]
            if after == {"clients": 0, "users": 0}:
                break
            time.sleep(0.05)
    finally:
        server.stop()
    if after != {"clients": 0, "users": 0}:
        print(server.log_path.read_text(errors="replace")[-3000:])
    ms = lambda values, q: round(percentile(values, q) * 1000, 2)  # noqa: E731
    return {
        "presence_post_ms": {"p50": ms(latencies["room/bench"], 0.5), "p99": ms(latencies["room/bench"], 0.99)},
        "plain_post_ms": {"p50": ms(latencies["plain/bench"], 0.5), "p99": ms(latencies["plain/bench"], 0.99)},
        "count_while_open": count,
        "count_after_close": after,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        redis_server = RedisServer(tmp).start()
        try:
            client = redis.Redis.from_url(redis_server.url)
            store = RedisPresenceStore(client, "bench", "process1", 15.0)
            started = time.perf_counter()
            for _ in range(args.members):
                client.ping()
            ping_us = round((time.perf_counter() - started) / args.members * 1e6, 1)
            result: dict[str, Any] = {
                "members": args.members,
                "redis_ping_us": ping_us,
                "redis_store": store_ops(store, args.members, "room/ops"),
                "memory_store": store_ops(MemoryPresenceStore(), args.members, "room/ops"),
                "redis_bytes_per_member": redis_memory_per_member(client, store, args.members),
                "process_bytes_per_connection": {
                    "redis": process_memory_per_connection("redis", redis_server.url, args.members),
                    "memory": process_memory_per_connection("memory://", None, args.members),
                },
                "end_to_end": end_to_end(redis_server.url, args.streams, tmp),
            }
        finally:
            redis_server.stop()
    result["command"] = f".venv/bin/python -m benchmarks.presence_cost --members {args.members} --streams {args.streams}"
    print(json.dumps(result, indent=2))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
