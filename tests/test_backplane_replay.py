"""Replays on a real redis-server and a real PostgreSQL: someone who may listen and publish on
the app's channels (a raw client, not a broker) captures a forwarded POST and a private send,
then publishes them again. Nothing is obeyed twice: the unsubscribed client stays unsubscribed,
the send is delivered once, and every copy is counted in ``backplane_replayed_total``."""

from __future__ import annotations

import base64
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import psycopg
import pytest
import redis
from flask import Flask

from flask_rtbroker import DefaultClient, Emitter, RealtimeBroker
from flask_rtbroker.backplane.postgres import channel_name
from flask_rtbroker.client import IP_KEY
from flask_rtbroker.testing import parse_events
from tests.redis_server import RedisServer
from tests.test_backplane_contract import libpq_url

SECRET = "replay-test-secret-0123456789"
REPLAYS = 5
PRIVATE = "x" * 7_000
"""A send's data: over the NOTIFY limit once encoded, so on PostgreSQL it goes through the table."""


def wait_until(condition: Callable[[], Any], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@dataclass
class Tap:
    """A raw client on the app's channels: records every payload and publishes them again."""

    publish: Callable[[Any], None]
    reader: threading.Thread | None = None
    captured: list[tuple[Any, bytes]] = field(default_factory=list)
    """(what to publish again, the envelope bytes it carries)."""

    def find(self, *parts: bytes) -> list[Any]:
        """What to publish again for every captured payload containing all of *parts*."""
        return [raw for raw, envelope in self.captured if all(part in envelope for part in parts)]


def redis_tap(url: str, prefix: str, stop: threading.Event) -> Tap:
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub()
    pubsub.psubscribe(f"{prefix}:*")
    pubsub.get_message(timeout=2)  # the psubscribe confirmation
    tap = Tap(lambda raw: client.publish(*raw))

    def read() -> None:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.05)
            if message is not None and message["type"] == "pmessage":
                tap.captured.append(((message["channel"], message["data"]), message["data"]))
        pubsub.close()

    tap.reader = threading.Thread(target=read, daemon=True)
    tap.reader.start()
    return tap


def postgres_tap(url: str, prefix: str, stop: threading.Event) -> Tap:
    channel = channel_name(prefix)
    listener = psycopg.connect(url, autocommit=True)
    listener.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel)))
    publisher = psycopg.connect(url, autocommit=True)
    tap = Tap(lambda raw: publisher.execute("SELECT pg_notify(%s, %s)", (channel, raw)))

    def envelope(text: str) -> bytes:
        if text.startswith("b:"):
            return base64.b64decode(text[2:])
        row_id = int(text.split(":")[1])  # k:<id>:<token>: the row holds the token, then the payload
        with psycopg.connect(url, autocommit=True) as reader:
            return bytes(reader.execute("SELECT payload FROM flask_rtbroker_backplane WHERE id = %s", (row_id,)).fetchone()[0])

    def read() -> None:
        while not stop.is_set():
            for notify in listener.notifies(timeout=0.05, stop_after=1):
                tap.captured.append((notify.payload, envelope(notify.payload)))
        listener.close()

    tap.reader = threading.Thread(target=read, daemon=True)
    tap.reader.start()
    return tap


@dataclass
class Deployment:
    """Two apps on one backend and a tap on their channels."""

    a: Flask
    b: Flask
    tap: Tap
    brokers: dict[Flask, RealtimeBroker]

    def connect(self, app: Flask) -> DefaultClient:
        """A client registered in *app* as a stream would (from the test client's address)."""
        broker = self.brokers[app]
        with app.app_context():
            client = broker.state().new_client()
            broker.subscriptions_broker.register(client)
        client.set(IP_KEY, "127.0.0.1")  # the owner's IP check of a forwarded POST passes
        return client

    def stat(self, app: Flask, name: str) -> int:
        return app.extensions["rtbroker"].stats()[name]


@pytest.fixture(params=["redis", "postgres"])
def deployment(request: pytest.FixtureRequest, tmp_path) -> Iterator[Deployment]:
    """Two apps ("processes") with a secret on a real backend, and a tap on their channels."""
    prefix = f"replay-{uuid.uuid4().hex[:10]}"
    stop = threading.Event()
    server = None
    if request.param == "redis":
        server = RedisServer(tmp_path).start()
        url = server.url
        tap = redis_tap(url, prefix, stop)
    else:
        url = libpq_url(request.getfixturevalue("postgres_url"))
        tap = postgres_tap(url, prefix, stop)
    apps, brokers = [], {}
    for _ in range(2):
        app = Flask(__name__)
        app.config.update(RTBROKER_CONCURRENCY="threading", RTBROKER_BACKPLANE=url, RTBROKER_CHANNEL_PREFIX=prefix,
                          RTBROKER_BACKPLANE_SECRET=SECRET, RTBROKER_GRACEFUL_SHUTDOWN=False)
        brokers[app] = RealtimeBroker(app)
        apps.append(app)
    for app in apps:
        app.extensions["rtbroker"].cluster.ensure_started()
    wait_until(lambda: all(app.extensions["rtbroker"].cluster.backplane.state == "up" for app in apps))
    yield Deployment(apps[0], apps[1], tap, brokers)
    stop.set()
    assert tap.reader is not None
    tap.reader.join(5)
    for app in apps:
        app.extensions["rtbroker"].close()
    if server is not None:
        server.stop()


def post(app: Flask, client_id: str, subscriptions: list[str]) -> int:
    response = app.test_client().post("/api/realtime", json={"clientId": client_id, "subscriptions": subscriptions})
    return response.status_code


def test_a_captured_forwarded_post_and_send_published_again_are_dropped_and_counted(deployment: Deployment) -> None:
    a, b, tap = deployment.a, deployment.b, deployment.tap
    there = deployment.connect(b)
    assert post(a, there.id, ["private"]) == 204  # forwarded from a to b
    with a.app_context():
        deployment.brokers[a].send(there.id, "secret", {"data": PRIVATE})
    events: list[Any] = []
    wait_until(lambda: events.extend(parse_events(there.take())) or events)
    assert [(event.name, event.json()) for event in events] == [("secret", {"data": PRIVATE})]
    assert post(a, there.id, []) == 204  # the client unsubscribes
    assert list(there.subscriptions()) == []

    wait_until(lambda: tap.find(b'"k":"post"', b'"private"') and tap.find(b'"k":"send"', PRIVATE.encode()))
    forwarded = tap.find(b'"k":"post"', b'"private"')
    sends = tap.find(b'"k":"send"', PRIVATE.encode())
    assert len(forwarded) == 1 and len(sends) == 1, "the tap saw each once"
    before = deployment.stat(b, "backplane_replayed_total")
    for _ in range(REPLAYS):
        tap.publish(forwarded[0])
        tap.publish(sends[0])
    wait_until(lambda: deployment.stat(b, "backplane_replayed_total") - before == 2 * REPLAYS)
    time.sleep(0.2)  # anything obeyed would have been by now
    assert list(there.subscriptions()) == [], "not subscribed again"
    assert parse_events(there.take()) == [], "the send was not delivered again"
    assert deployment.stat(b, "backplane_rejected_total") == 0
    assert post(a, there.id, ["after"]) == 204, "the deployment works on"
    assert list(there.subscriptions()) == ["after"]


def test_processes_forked_after_an_emitter_was_made_are_not_taken_for_replays(deployment: Deployment) -> None:
    """An Emitter made before a fork (a preloaded app, a prefork job runner) is used by every
    child: each child sends with an origin and sequence of its own."""
    there = deployment.connect(deployment.b)
    there.subscribe("t")
    deployment.b.extensions["rtbroker"].cluster.listen_for(["t"])
    emitter = Emitter.from_config(deployment.a.config)
    emitter.notify("t", "parent")
    children = []
    for n in range(2):
        pid = os.fork()
        if pid == 0:  # the child: publish, then leave without running the parent's cleanup
            try:
                emitter.notify("t", f"child {n}")
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    events: list[Any] = []
    wait_until(lambda: len(events.__iadd__(parse_events(there.take()))) >= 3)
    assert sorted(event.json() for event in events) == ["child 0", "child 1", "parent"]
    assert deployment.stat(deployment.b, "backplane_replayed_total") == 0
    emitter.close()
