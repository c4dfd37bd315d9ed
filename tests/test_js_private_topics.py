"""Private topics with the official PocketBase JS SDK (Node): topic rules never trap it.

The example app (examples/notify_app.py) guards ``private/*``, ``user/<id>`` and ``staff/*`` with
topic rules, checked at delivery. With the recipe this replaces (a ``before_subscribe`` that
answers 403) the SDK looped forever once its token went stale and kept re-sending a refused key
with every later subscribe; here every subscription POST is accepted, and who may not read a
topic simply receives nothing on it, on one process or across two on a real redis-server.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import pytest
import requests

from tests.jsrun import require_node, run_node
from tests.live import LiveServer
from tests.redis_server import RedisServer

TOKENS = '{"tokA": "userA", "tokB": "userB"}'


@pytest.fixture(autouse=True)
def _node_available() -> None:
    require_node()


def with_log(*servers: LiveServer) -> Callable[[], str]:
    return lambda: "\n".join(f"server log ({s.log_path}):\n{s.log()}" for s in servers)


class Publisher:
    """Notifies topics at fixed periods from a thread until stopped; counts what it sent."""

    def __init__(self, server: LiveServer, periods: dict[str, float], first: int = 0) -> None:
        self.server, self.periods = server, periods
        self.sent = {topic: 0 for topic in periods}
        self.delivered = {topic: 0 for topic in periods}
        self._stop = threading.Event()
        self._next = {topic: first for topic in periods}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Publisher":
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        due = dict.fromkeys(self.periods, started)
        deadline = started + 30  # bounded whatever happens to the script
        while not self._stop.is_set() and time.monotonic() < deadline:
            now = time.monotonic()
            for topic, period in self.periods.items():
                if now >= due[topic]:
                    self.delivered[topic] += self.server.notify(topic, {"n": self._next[topic]})
                    self._next[topic] += 1
                    self.sent[topic] += 1
                    due[topic] += period
            self._stop.wait(max(0.0, min(due.values()) - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_a_stale_token_never_loops_and_the_public_topic_keeps_flowing(make_server: Callable[..., LiveServer]) -> None:
    server = make_server("gunicorn-gevent", env={
        "RTBROKER_TEST_TOKENS": TOKENS, "RTBROKER_MAX_LIFETIME": "2", "RTBROKER_LIFETIME_JITTER": "0",
    })
    publishers: list[Publisher] = []

    def post(path: str, body: dict[str, Any]) -> None:
        requests.post(f"{server.url}{path}", json=body, timeout=10).raise_for_status()

    def subscribed(message: dict[str, Any]) -> dict[str, Any]:
        post("/test/token", {"token": "tokA", "user": None})  # signed out elsewhere: tokA is stale
        post("/test/auth", {"user": "userA", "clear": True})  # and the open connection is a guest now
        publishers.append(Publisher(server, {"seq": 0.04, "user/userA": 0.2, "user/userB": 0.2}).start())
        return {}

    def window_end(message: dict[str, Any]) -> dict[str, Any]:
        publishers[0].stop()
        return {"sent": publishers[0].sent, "delivered": publishers[0].delivered}

    def revalidate(message: dict[str, Any]) -> dict[str, Any]:
        post("/test/token", {"token": "tokA", "user": "userA"})
        publishers.append(Publisher(server, {"user/userA": 0.1}, first=10_000).start())
        return {}

    def done(message: dict[str, Any]) -> dict[str, Any]:
        publishers[-1].stop()
        return {}

    try:
        result = run_node("private_stale_token.mjs", server.url, timeout=45, context=with_log(server), steps={
            "subscribed": subscribed, "window-end": window_end, "revalidate": revalidate, "done": done})
    finally:
        for publisher in publishers:
            publisher.stop()
    sent, stale, healthy = result["sent"], result["window"]["stale"], result["window"]["healthy"]
    refused = [p for p in result["windowPosts"] if p["status"] != 204]
    print(f"sent {sent}; public received: stale tab {len(stale['seq'])}, healthy tab {len(healthy['seq'])}; "
          f"refused POSTs {len(refused)} of {len(result['windowPosts'])}; stale tab's private {len(stale['private'])}")
    assert not refused, f"no refused POST (at most 1 allowed), so no loop: {refused}"
    assert stale["connects"] >= 4, "the streams did end every 2 s and the SDK came back each time"
    assert stale["private"] == [], "userA's topic delivers nothing once its token is stale"
    assert len(healthy["private"]) >= 0.8 * sent["user/userB"], "the healthy tab's own topic flows"
    assert len(healthy["seq"]) >= 0.95 * sent["seq"], (healthy, sent)  # sessions replay the reconnect gaps
    assert len(stale["seq"]) >= 0.95 * sent["seq"], (
        f"the stale tab keeps its public messages: {len(stale['seq'])} (healthy {len(healthy['seq'])}) of {sent['seq']}"
    )
    assert result["privateAfterRevalidate"] and min(result["privateAfterRevalidate"]) >= 10_000, (
        "a token valid again reads its topic again after the next POST"
    )


def test_a_forbidden_topic_does_not_block_later_subscribes(make_server: Callable[..., LiveServer]) -> None:
    server = make_server("gunicorn-gevent", env={"RTBROKER_TEST_TOKENS": TOKENS, "RTBROKER_TOPIC_DENIED_EVENT": "true"})

    def subscribed(message: dict[str, Any]) -> dict[str, Any]:
        return {"delivered": {topic: server.notify(topic, {"topic": topic}) for topic in
                              ("user/userB", "staff/news", "user/userA", "news")}}

    result = run_node("private_refused_topic.mjs", server.url, steps={"subscribed": subscribed}, context=with_log(server))
    assert [p["status"] for p in result["posts"]] == [204] * 5, "every subscribe is accepted"
    assert result["posts"][-1]["body"]["subscriptions"] == ["PB_CONNECT", "user/userB", "staff/news", "user/userA", "news"]
    assert result["errors"] == []
    assert result["delivered"] == {"user/userB": 0, "staff/news": 0, "user/userA": 1, "news": 1}
    assert result["got"] == {
        "user/userB": [{"denied": "user/userB"}],  # RTBROKER_TOPIC_DENIED_EVENT: one event, then nothing
        "staff/news": [{"denied": "staff/news"}],
        "user/userA": [{"topic": "user/userA"}],
        "news": [{"topic": "news"}],
    }
    assert result["connects"] == 1, "one connection throughout"


def test_clear_auth_and_refresh_auth_reach_the_sdk_through_another_process(
    make_server: Callable[..., LiveServer], redis_server: RedisServer
) -> None:
    env = {"RTBROKER_BACKPLANE": redis_server.url, "RTBROKER_TEST_TOKENS": TOKENS}
    a, b = make_server("gunicorn-gevent", env=env), make_server("gunicorn-gevent", env=env)

    def change(body: dict[str, Any]) -> int:
        response = requests.post(f"{a.url}/test/auth", json=body, timeout=10)
        response.raise_for_status()
        return int(response.json()["changed"])

    def publish(marker: str) -> dict[str, int]:
        delivered = {topic: a.notify(topic, {"topic": topic, "at": marker}) for topic in ("staff/news", "user/userA")}
        a.notify("news", {"topic": "news", "at": marker})  # last: once it arrives, the others had their chance
        return delivered

    steps = {
        "subscribed": lambda message: {"delivered": publish("signed-in")},
        "refresh": lambda message: {"changed": change({"user": "userA", "staff": True}), "delivered": publish("staff")},
        "clear": lambda message: {"changed": change({"user": "userA", "clear": True}), "delivered": publish("guest")},
    }
    result = run_node("private_auth_cluster.mjs", b.url, steps=steps, context=with_log(a, b))
    assert result["changed"] == {"refresh": 0, "clear": 0}, "the connection lives in the other process"
    assert result["got"] == {
        "signed-in": ["user/userA", "news"],  # not staff yet
        "staff": ["staff/news", "user/userA", "news"],  # refresh_auth gave the connection the staff flag
        "guest": ["news"],  # clear_auth made it a guest: neither private topic
    }
    assert [p["status"] for p in result["posts"]] == [204] and result["connects"] == 1


def test_the_traps_of_a_refused_post_that_topic_rules_avoid(make_server: Callable[..., LiveServer]) -> None:
    """Why the recipe moved: the same SDK against a before_subscribe that refuses with 403."""
    server = make_server("gunicorn-gevent", target="tests.refusing_app:app",
                         env={"RTBROKER_TEST_TOKENS": TOKENS, "RTBROKER_MAX_LIFETIME": "1"})

    def stale(message: dict[str, Any]) -> dict[str, Any]:
        requests.post(f"{server.url}/test/token", json={"token": "tokA", "user": None}, timeout=10).raise_for_status()
        return {}

    result = run_node("refused_post_traps.mjs", server.url, steps={"stale": stale}, context=with_log(server))
    assert result["blocked"] == {"other": 403, "news": 403}, "one refused key fails every later subscribe"
    assert result["accepted"] == {"news": None, "own": None}
    watched = result["watched"]
    print(f"after the token went stale, the SDK's POSTs in 4 s answered {watched}")
    assert len(watched) >= 3 and set(watched) == {403}, f"a stale token: refused, reconnect, refused... {watched}"
