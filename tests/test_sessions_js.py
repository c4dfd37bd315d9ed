"""Sessions outlive streams, with the official JS SDK unmodified (docs/sessions.rst).

One gunicorn gevent worker ends every stream after 2 s (no jitter); a notify on ``seq`` every
20 ms for 8 s must reach a guest, a signed-in client and an explicit claimer exactly once each,
in order; each learns on ``@rtbroker/session`` that its reconnects recovered, and a client whose
reconnect POST comes after the resume window learns that it did not.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any, Callable

import requests

from tests.jsrun import run_node
from tests.live import LiveServer
from tests.redis_server import RedisServer
from tests.rr_proxy import RoundRobinProxy

PERIOD = 0.02
DURATION = 8.0
ROTATION = 2


def publish_sequence(*urls: str, duration: float = DURATION, period: float = PERIOD) -> int:
    """Notify ``seq`` with ``{"n": 0, 1, ...}`` every *period* seconds for *duration*, through
    each of *urls* in turn; return how many."""
    session = requests.Session()
    sent = 0
    start = time.monotonic()
    while time.monotonic() - start < duration and sent < int(duration / period) + 1:
        response = session.post(f"{urls[sent % len(urls)]}/notify", json={"topic": "seq", "data": {"n": sent}}, timeout=10)
        response.raise_for_status()
        sent += 1
        time.sleep(max(0.0, start + sent * period - time.monotonic()))
    return sent


def check_lossless(result: dict[str, Any], name: str, sent: int, reconnects: float = DURATION / ROTATION - 1) -> None:
    """No message missed, doubled or reordered; every reconnect of the client (at least
    *reconnects*) reported recovered."""
    client = result[name]
    assert (client["missed"], client["duplicated"], client["outOfOrder"]) == (0, 0, 0), (name, json.dumps(client))
    assert client["received"] == sent
    sessions = client["sessions"]
    assert client["connects"] >= reconnects, (name, client)  # the server really ended streams
    # The first connection says "new" (unless its first POST lacked the key: then nothing).
    assert [s for s in sessions if s["reason"] == "new"] in ([], [sessions[0]]), sessions
    rest = [s for s in sessions if s["reason"] != "new"]
    assert len(rest) >= max(reconnects, client["connects"] - 1), (name, sessions)  # one per reconnect
    assert all(s["recovered"] and s["reason"] == "resumed" for s in rest), (name, sessions)
    assert sum(s["replayed"] for s in rest) >= 1, (name, sessions)  # something was published in a gap


def test_no_message_lost_across_lifetime_rotations(make_server: Callable[..., LiveServer]) -> None:
    server = make_server("gunicorn-gevent", env={
        "RTBROKER_MAX_LIFETIME": str(ROTATION), "RTBROKER_LIFETIME_JITTER": "0", "RTBROKER_RESUME_WINDOW": "3",
        "RTBROKER_TEST_TOKENS": json.dumps({"tokU": "u1"}),
    })
    published: dict[str, int] = {}

    def subscribed(message: dict[str, Any]) -> dict[str, Any]:
        published["sent"] = publish_sequence(server.url)
        return {"sent": published["sent"]}

    result = run_node("session_resume.mjs", server.url, steps={
        "subscribed": subscribed, "late-done": lambda message: {},
    }, timeout=90, context=server.log)
    sent = published["sent"]
    assert sent >= 0.9 * DURATION / PERIOD
    for name in ("guest", "user", "explicit"):
        check_lossless(result, name, sent)
    late = result["late"]["sessions"]
    assert late[0]["recovered"] is False and late[0]["reason"] == "expired", late
    stats = requests.get(f"{server.url}/stats", timeout=10).json()
    assert stats["sessions_resumed_total"] >= 3 * (DURATION / ROTATION - 1), stats


def test_no_message_lost_when_reconnects_land_on_another_process(make_server: Callable[..., LiveServer],
                                                                 redis_server: RedisServer) -> None:
    """Two processes on one redis-server; each client reaches them through a round-robin proxy of
    its own, so its streams alternate between the processes: every claim takes the ghost from the
    other process through the backplane (and POSTs on a kept-alive connection are forwarded)."""
    env = {"RTBROKER_BACKPLANE": redis_server.url, "RTBROKER_MAX_LIFETIME": str(ROTATION),
           "RTBROKER_LIFETIME_JITTER": "0", "RTBROKER_TEST_TOKENS": json.dumps({"tokU": "u1"})}
    # No keep-alive: each request is a connection of its own, routed by what it asks.
    a, b = make_server(env=env, args=["--keep-alive", "0"]), make_server(env=env, args=["--keep-alive", "0"])
    proxies = [RoundRobinProxy([a.port, b.port], streams_rotate=True).start() for _ in range(4)]
    published: dict[str, int] = {}

    def subscribed(message: dict[str, Any]) -> dict[str, Any]:
        # One publishing process: the order across processes is the order of one caller's
        # notifies through one process (a process delivers its own notifies at once and the
        # other's when Redis brings them, so alternating publishers may interleave differently).
        published["sent"] = publish_sequence(a.url)
        return {"sent": published["sent"]}

    try:
        result = run_node("session_resume.mjs", proxies[3].url, "no-late", *(p.url for p in proxies[:3]),
                          steps={"subscribed": subscribed}, timeout=90, context=lambda: f"A:\n{a.log()}\nB:\n{b.log()}")
    finally:
        for proxy in proxies:
            proxy.stop()
    sent = published["sent"]
    for name in ("guest", "user", "explicit"):
        check_lossless(result, name, sent)
    stats = [requests.get(f"{s.url}/stats", timeout=10).json() for s in (a, b)]
    handed_over = sum(s["sessions_handed_over_total"] for s in stats)
    resumed = sum(s["sessions_resumed_total"] for s in stats)
    assert handed_over >= 3 * (DURATION / ROTATION - 1) and handed_over == resumed, stats  # every claim crossed


def test_no_message_lost_across_a_graceful_reload(make_server: Callable[..., LiveServer], redis_server: RedisServer) -> None:
    """Two gunicorn workers on redis-server, 30 min lifetimes, ``kill -HUP`` of the master mid-run:
    the old workers keep their streams' ghosts (and their requests open) until the new workers
    claimed them through the backplane."""
    server = make_server(env={"RTBROKER_BACKPLANE": redis_server.url, "RTBROKER_TEST_TOKENS": json.dumps({"tokU": "u1"})},
                         args=["-w", "2", "--graceful-timeout", "10"])
    published: dict[str, int] = {}

    def subscribed(message: dict[str, Any]) -> dict[str, Any]:
        assert server.process is not None
        reload = threading.Timer(2.0, lambda: os.kill(server.process.pid, signal.SIGHUP))  # type: ignore[union-attr]
        reload.start()
        published["sent"] = publish_sequence(server.url, duration=6.0)
        reload.join()
        return {"sent": published["sent"]}

    result = run_node("session_resume.mjs", server.url, "no-late", steps={"subscribed": subscribed}, timeout=90,
                      context=server.log)
    sent = published["sent"]
    for name in ("guest", "user", "explicit"):
        check_lossless(result, name, sent, reconnects=1)
    assert "Hang up: Master" in server.log()
