"""Backplane channel churn: a client looping POSTs of fresh topics gets 429 past its bucket of
added keys (``RTBROKER_MAX_SUBSCRIPTION_CHANGES``) with its subscriptions intact, the process's
channels stay near what its clients hold, unneeded ones go at once past ``MAX_UNSWEPT_CHANNELS``
(not after the 10 s timer), and a normal client's POSTs stay fast; on a real redis-server and a
real Redis Cluster, with a second process publishing to prove no needed channel was swept."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import redis
import requests
from flask import Flask

from flask_rtbroker import RealtimeBroker
from flask_rtbroker.backplane.base import MAX_UNSWEPT_CHANNELS
from flask_rtbroker.change_rate import REFILL_SECONDS
from flask_rtbroker.testing.app_client import RealtimeTestClient
from tests.live import LiveServer
from tests.redis_cluster_server import RedisClusterServer
from tests.redis_server import RedisServer

TOO_MANY_CHANGES = {"data": {}, "message": "Too many subscription changes; try again later.", "status": 429}
PER_POST = 1000
"""Fresh topics per hostile POST: PocketBase's most keys per request."""

ChannelCount = Callable[[], int]


# -- the bucket, in process ----------------------------------------------------------------------


def rate_app(limit: int) -> tuple[Flask, RealtimeBroker]:
    app = Flask(__name__)
    app.config.update(RTBROKER_MAX_SUBSCRIPTION_CHANGES=limit, RTBROKER_HEARTBEAT=0)
    return app, RealtimeBroker(app)


def post_keys(rt: RealtimeTestClient, *keys: str) -> Any:
    """POST exactly *keys* as the client's whole subscription set."""
    return rt.http.post(rt.url, json={"clientId": rt.client_id, "subscriptions": list(keys)})


def test_added_keys_are_bounded_per_client_and_a_refusal_changes_nothing() -> None:
    app, broker = rate_app(3)
    with RealtimeTestClient(app) as rt, RealtimeTestClient(app) as other:
        too_many = post_keys(rt, "a", "b", "c", "d")
        assert too_many.status_code == 400
        assert too_many.get_json()["data"]["subscriptions"] == {
            "code": "validation_too_many_subscription_changes",
            "message": "A request must not add more than 3 subscriptions (RTBROKER_MAX_SUBSCRIPTION_CHANGES).",
            "params": {"max": 3},
        }
        assert post_keys(rt, "a", "b").status_code == 204
        assert post_keys(rt, "a", "b").status_code == 204  # keys kept cost nothing
        assert post_keys(rt, "a").status_code == 204  # nor do keys removed
        assert post_keys(rt, "a", "c").status_code == 204  # the third added key: the bucket is empty
        refused = post_keys(rt, "a", "c", "e")
        assert (refused.status_code, refused.get_json()) == (429, TOO_MANY_CHANGES)
        assert sorted(rt.client.subscriptions()) == ["a", "c"]  # state intact
        assert post_keys(other, "a", "b", "c").status_code == 204  # a bucket per client
        with app.app_context():
            broker.notify("c", 1)
        assert (rt.next_event().name, other.next_event().name) == ("c", "c")


def test_the_bucket_refills_over_a_minute() -> None:
    from flask_rtbroker import change_rate

    class Holder:
        pass

    client = Holder()
    assert change_rate.available(client, 100, now=50.0) == 100
    change_rate.spend(client, 100, 100, now=50.0)
    assert change_rate.available(client, 100, now=50.0) == 0
    assert change_rate.available(client, 100, now=50.0 + REFILL_SECONDS / 4) == pytest.approx(25)
    assert change_rate.available(client, 100, now=50.0 + 2 * REFILL_SECONDS) == 100  # never above the capacity
    change_rate.spend(client, 0, 100, now=60.0)
    assert change_rate.available(client, 100, now=50.0) == 0


# -- live: two gunicorn processes on a real backplane --------------------------------------------


@pytest.fixture(scope="module", params=["redis", "redis-cluster"])
def backplane(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ChannelCount]]:
    """(URL, a function counting the app's topic channels subscribed on the server)."""
    workdir = tmp_path_factory.mktemp(request.param)
    if request.param == "redis":
        server = RedisServer(workdir).start()
        client = redis.Redis.from_url(server.url)
        yield server.url, lambda: len(client.pubsub_channels("flask_rtbroker:0:t:*"))
        client.close()
        server.stop()
        return
    cluster = RedisClusterServer(workdir).start()
    yield cluster.url, lambda: sum(
        len(node.command("PUBSUB", "SHARDCHANNELS", "flask_rtbroker:t:*")) for node in cluster.masters()
    )
    cluster.stop()


def two_processes(make_server: Any, url: str, **env: str) -> tuple[LiveServer, LiveServer]:
    """The process holding the clients (with *env*) and one that only publishes."""
    holder = make_server("gunicorn-gevent", env={"RTBROKER_BACKPLANE": url, **env})
    publisher = make_server("gunicorn-gevent", env={"RTBROKER_BACKPLANE": url})
    return holder, publisher


def post(server: LiveServer, client_id: str, keys: list[str]) -> tuple[requests.Response, float]:
    start = time.perf_counter()
    response = server.subscribe(client_id, keys)
    return response, time.perf_counter() - start


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def churn(holder: LiveServer, hostile_id: str, normal_id: str, seconds: float,
          count: ChannelCount) -> tuple[list[requests.Response], list[float], list[int], list[str]]:
    """One hostile client loops POSTs of fresh topics (a normal client's POST after each) for
    *seconds*; return the hostile answers, the normal POSTs' seconds, the channel counts seen
    after each round and the hostile client's last accepted keys."""
    answers, normal, channels, accepted = [], [], [], []
    deadline = time.monotonic() + seconds
    round_ = 0
    while time.monotonic() < deadline and round_ < 500:
        keys = [f"churn{round_}-{i}" for i in range(PER_POST)]
        response = holder.subscribe(hostile_id, keys)
        answers.append(response)
        if response.status_code == 204:
            accepted = keys
        answer, took = post(holder, normal_id, ["normal", f"normal-{round_ % 2}"])
        assert answer.status_code == 204, answer.text
        normal.append(took)
        channels.append(count())
        round_ += 1
    return answers, normal, channels, accepted


def delivered(publisher: LiveServer, stream: Any, topic: str) -> bool:
    publisher.notify(topic, topic)
    event = stream.next_event(timeout=5)
    return event.name == topic and event.json() == topic


def test_a_churning_client_gets_429_and_the_channels_stay_bounded(
    make_server: Any, backplane: tuple[str, ChannelCount]
) -> None:
    url, count = backplane
    holder, publisher = two_processes(make_server, url)
    with holder.stream() as hostile, holder.stream() as normal:
        assert holder.subscribe(normal.client_id, ["normal"]).status_code == 204
        answers, latencies, channels, accepted = churn(holder, hostile.client_id, normal.client_id, 1.5, count)
        statuses = [answer.status_code for answer in answers]
        assert statuses[:2] == [204, 204] and len(statuses) > 3, statuses  # 2,000 added keys, then 429
        assert set(statuses[2:]) == {429}
        assert all(answer.json() == TOO_MANY_CHANGES for answer in answers[2:])
        held = PER_POST + 2
        assert max(channels) <= 2 * held + MAX_UNSWEPT_CHANNELS, channels
        assert p99(latencies) <= 0.5, sorted(latencies)[-5:]
        # state intact and nothing needed swept: another process reaches both clients
        assert delivered(publisher, hostile, accepted[-1])
        assert delivered(publisher, normal, "normal")


def test_unneeded_channels_go_at_once_past_the_cap(make_server: Any, backplane: tuple[str, ChannelCount]) -> None:
    url, count = backplane
    holder, publisher = two_processes(make_server, url, RTBROKER_MAX_SUBSCRIPTION_CHANGES="0")  # no bucket
    with holder.stream() as hostile, holder.stream() as normal:
        assert holder.subscribe(normal.client_id, ["normal"]).status_code == 204
        answers, latencies, channels, accepted = churn(holder, hostile.client_id, normal.client_id, 1.5, count)
        assert {answer.status_code for answer in answers} == {204}
        rounds = len(answers)
        assert rounds >= 4, rounds
        held = PER_POST + 2
        assert max(channels) < rounds * PER_POST  # swept while the churn went on
        start = time.monotonic()
        while count() > held + MAX_UNSWEPT_CHANNELS and time.monotonic() - start < 5:
            time.sleep(0.05)
        settled = time.monotonic() - start
        assert settled < 2.0, (settled, count())  # promptly, not at the 10 s timer
        assert p99(latencies) <= 0.5, sorted(latencies)[-5:]
        assert delivered(publisher, hostile, accepted[-1])
        assert delivered(publisher, normal, "normal")
