"""Presence with the official JS SDK on two gunicorn gevent processes sharing a real redis-server:
joins from either process, no flicker across 2-second lifetime rotations, a closed tab's leave
within the grace period plus a second, a SIGKILLed process's members leaving within the liveness
TTL, and ``presence_count`` agreeing across processes."""

from __future__ import annotations

import signal
import time
from typing import Any

import requests

from tests.jsrun import require_node, run_node
from tests.redis_server import RedisServer

GRACE = 1.5
TTL = 2.0
ENV = {
    "RTBROKER_TEST_TOKENS": '{"tokAnn": "ann", "tokBob": "bob"}',
    "NOTIFY_APP_PRESENCE": "room/*",
    "RTBROKER_PRESENCE_GRACE": str(GRACE),
    "RTBROKER_PRESENCE_TTL": str(TTL),
}
ROTATING = {"RTBROKER_MAX_LIFETIME": "2", "RTBROKER_LIFETIME_JITTER": "0"}


def presence(server: Any, topic: str = "room/lobby") -> dict[str, Any]:
    return requests.get(f"{server.url}/presence", params={"topic": topic}, timeout=10).json()


def agreed_count(*servers: Any, expected: dict[str, int], topic: str = "room/lobby",
                 timeout: float = 3.0) -> list[dict[str, int]]:
    """The counts every server reports once they agree on *expected* (streams may rotate meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        counts = [presence(server, topic)["count"] for server in servers]
        if all(count == expected for count in counts) or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


def test_presence_across_two_processes_with_the_sdk(make_server, redis_server: RedisServer) -> None:
    require_node()
    env = {"RTBROKER_BACKPLANE": redis_server.url, **ENV}
    a, b = make_server(env=env), make_server(env=env)
    seen: dict[str, Any] = {}

    def joined(message: dict[str, Any]) -> dict[str, Any]:
        seen["joined"] = agreed_count(a, b, expected={"clients": 4, "users": 3})
        seen["members"] = presence(b)["members"]
        return {}

    def kill(message: dict[str, Any]) -> dict[str, Any]:
        b.stop(signal.SIGKILL)  # master and worker: nothing unsubscribes, nothing restarts
        return {}

    def after(message: dict[str, Any]) -> dict[str, Any]:
        seen["after"] = presence(a)
        return {}

    result = run_node("presence_cluster.mjs", a.url, b.url, timeout=80,
                      steps={"joined": joined, "kill": kill, "after": after},
                      context=lambda: f"A:\n{a.log()[-3000:]}\nB:\n{b.log()[-3000:]}")
    events = result["events"]
    actions = [event["action"] for event in events]
    assert actions[0] == "sync" and events[0]["members"] == []
    joins = [event["member"] for event in events if event["action"] == "join"]
    assert sorted(str(member["info"]) for member in joins) == sorted([
        "{'id': 'ann', 'collectionName': 'users'}", "{'id': 'bob', 'collectionName': 'users'}", "{}"])
    assert seen["joined"] == [{"clients": 4, "users": 3}] * 2, "both processes count the same"
    assert sorted(member["connections"] for member in seen["members"]) == [1, 1, 2]  # ann: two tabs

    assert actions.count("join") == 3
    print(f"guest leave after {result['guestLeaveMs']} ms (grace {GRACE} s); "
          f"bob's leave {result['bobLeaveMs']} ms after SIGKILL (TTL {TTL} s)")
    assert result["guestLeaveMs"] < (GRACE + 1) * 1000
    assert result["bobLeaveMs"] < 30_000
    assert result["bobLeaveMs"] < (TTL + 2) * 1000  # the configured liveness, not the 30 s bound
    leaves = [event["member"]["info"] for event in events if event["action"] == "leave"]
    assert leaves == [{}, {"id": "bob", "collectionName": "users"}], "ann keeps her tab on A"
    assert seen["after"]["count"] == {"clients": 1, "users": 1}


def test_lifetime_rotations_show_no_leave_and_no_join(make_server, redis_server: RedisServer) -> None:
    """Every stream ends after 2 s and the SDK reconnects: within the grace period, so the
    watcher sees three joins (ann with two tabs, bob, a guest whose reconnects claim its session
    and so stay one member) and nothing else but its own syncs."""
    require_node()
    env = {"RTBROKER_BACKPLANE": redis_server.url, **ENV, **ROTATING}
    a, b = make_server(env=env), make_server(env=env)
    seen: dict[str, Any] = {}

    def rotated(message: dict[str, Any]) -> dict[str, Any]:
        seen["rotated"] = agreed_count(a, b, expected={"clients": 4, "users": 3}, topic="room/rotating")
        return {}

    result = run_node("presence_rotations.mjs", a.url, b.url, timeout=50, steps={"rotated": rotated},
                      context=lambda: f"A:\n{a.log()[-3000:]}\nB:\n{b.log()[-3000:]}")
    actions = [event["action"] for event in result["events"]]
    assert result["reconnects"] >= 4 * 2, "the members' streams rotated (about twice each)"
    assert actions.count("sync") >= 3, "the watcher's own stream rotated too (a sync after each POST)"
    assert actions.count("join") == 3 and actions.count("leave") == 0, actions
    assert seen["rotated"] == [{"clients": 4, "users": 3}] * 2
