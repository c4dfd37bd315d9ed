"""Sessions in process (flask_rtbroker/sessions.py): what a claim carries, to whom, and the bounds.

Streams end by their lifetime (0.3 s here), exactly as on a server; the next connection's first
POST goes through the real view. The JS SDK cases live in tests/test_sessions_js.py.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import pytest
from flask import Flask, Request

from flask_rtbroker import DefaultClient, RealtimeBroker
from flask_rtbroker.sessions import RESUME_HEADER, SESSION_TOPIC
from flask_rtbroker.state import EXTENSION_KEY, BrokerState
from flask_rtbroker.testing.app_client import RealtimeTestClient
from flask_rtbroker.testing import ReadTimeout, StreamEnded

LIFETIME = 0.3
KEYS = ["news", SESSION_TOPIC]


@pytest.fixture
def app() -> Iterator[Flask]:
    app = Flask(__name__)
    app.config.update(RTBROKER_MAX_LIFETIME=LIFETIME, RTBROKER_LIFETIME_JITTER=0, RTBROKER_RESUME_WINDOW=2,
                      RTBROKER_CONCURRENCY="threading")
    broker = RealtimeBroker(app)

    @broker.auth_loader
    def load(request: Request) -> Any:
        token = request.headers.get("Authorization")
        return {"id": token, "collectionName": "users"} if token else None

    app.extensions["test_broker"] = broker
    yield app
    app.extensions[EXTENSION_KEY].close()


def state_of(app: Flask) -> BrokerState:
    return app.extensions[EXTENSION_KEY]


def broker_of(app: Flask) -> RealtimeBroker:
    return app.extensions["test_broker"]


def ended(rt: RealtimeTestClient, timeout: float = 3.0) -> RealtimeTestClient:
    """Wait until the server ended *rt*'s stream (its lifetime)."""
    deadline = time.monotonic() + timeout
    while rt.connected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not rt.connected
    return rt


def connect(app: Flask, keys: list[str] = KEYS, token: str | None = None, **headers: str) -> RealtimeTestClient:
    rt = RealtimeTestClient(app, headers={"Authorization": token} if token else None)
    assert rt.set_subscriptions(keys, headers=headers).status_code == 204
    return rt


def events(rt: RealtimeTestClient) -> list[tuple[str, Any]]:
    out = []
    while True:
        try:
            event = rt.next_event(timeout=0.3)
        except (ReadTimeout, StreamEnded):
            return out
        out.append((event.name, event.data))


def test_an_implicit_claim_replays_in_order_and_reports_it(app: Flask) -> None:
    broker = broker_of(app)
    first = connect(app)
    assert events(first) == [(SESSION_TOPIC, {"recovered": False, "replayed": 0, "reason": "new"})]
    first.client.set("presence_key", "guest-42")
    ended(first)
    for n in range(3):
        broker.notify("news", {"n": n})
    assert state_of(app).stats()["session_ghosts"] == 1
    second = connect(app)
    broker.notify("news", {"n": 3})
    assert events(second) == [
        (SESSION_TOPIC, {"recovered": True, "replayed": 3, "reason": "resumed"}),
        *[("news", {"n": n}) for n in range(4)],
    ]
    assert second.client.get("presence_key") == "guest-42"  # the store comes along
    assert state_of(app).stats()["sessions_resumed_total"] == 1


def test_targeted_sends_cross_only_with_an_explicit_claim(app: Flask) -> None:
    broker = broker_of(app)
    guest_a = connect(app)
    old_id = guest_a.client_id
    ended(guest_a)
    assert broker.send(old_id, "direct", {"for": "a"}) is True  # held for an explicit claim
    broker.notify("news", {"to": "a"}, to=old_id)
    broker.notify("news", {"n": 1})
    # Another guest with the same keys claims it implicitly: the topic message, nothing targeted.
    guest_b = connect(app)
    assert events(guest_b) == [
        (SESSION_TOPIC, {"recovered": True, "replayed": 1, "reason": "resumed"}), ("news", {"n": 1})]
    ended(guest_b)
    assert broker.send(guest_b.client_id, "direct", {"for": "b"}) is True
    broker.notify("news", {"to": "b"}, to=guest_b.client_id)
    # The explicit claim names the id: everything, targeted sends after the topic messages.
    again = connect(app, **{RESUME_HEADER: guest_b.client_id})
    assert events(again) == [
        (SESSION_TOPIC, {"recovered": True, "replayed": 2, "reason": "resumed"}),
        ("direct", {"for": "b"}), ("news", {"to": "b"})]


def test_a_claim_needs_the_same_identity_and_keys(app: Flask) -> None:
    broker = broker_of(app)
    user = connect(app, token="u1")
    old_id = user.client_id
    ended(user)
    broker.notify("news", {"n": 1})
    guest = connect(app)  # same keys, no identity: not the user's session
    other_keys = connect(app, keys=["news", "other", SESSION_TOPIC], token="u1")
    named = connect(app, token="u2", **{RESUME_HEADER: old_id})  # explicit, another identity
    assert events(guest)[0][1]["reason"] == "new"
    assert events(other_keys)[0][1]["reason"] == "new"
    assert events(named) == [(SESSION_TOPIC, {"recovered": False, "replayed": 0, "reason": "identity"})]
    back = connect(app, token="u1")
    assert events(back) == [(SESSION_TOPIC, {"recovered": True, "replayed": 1, "reason": "resumed"}), ("news", {"n": 1})]
    assert back.client.get("auth") == {"id": "u1", "collectionName": "users"}


def test_the_oldest_of_several_matching_ghosts_is_claimed(app: Flask) -> None:
    broker = broker_of(app)
    older = connect(app)
    time.sleep(0.1)
    newer = connect(app)
    ended(older)
    broker.notify("news", {"n": 1})
    ended(newer)
    broker.notify("news", {"n": 2})
    first, second = connect(app), connect(app)
    assert events(first)[1:] == [("news", {"n": 1}), ("news", {"n": 2})]  # the older ghost
    assert events(second)[1:] == [("news", {"n": 2})]


def test_past_the_window_the_session_is_reported_expired(app: Flask) -> None:
    rt = connect(app)
    ended(rt)
    state = state_of(app)
    state.sessions.expire(time.monotonic() + 3)  # past the 2 s window
    assert state.stats()["session_ghosts"] == 0 and state.broker.total_topics() == 0
    assert events(connect(app))[0] == (SESSION_TOPIC, {"recovered": False, "replayed": 0, "reason": "expired"})


def test_an_overflowed_ghost_reports_recovered_false(app: Flask) -> None:
    app2 = Flask("small")
    app2.config.update(RTBROKER_MAX_LIFETIME=LIFETIME, RTBROKER_LIFETIME_JITTER=0, RTBROKER_CLIENT_QUEUE_SIZE=5,
                       RTBROKER_CONCURRENCY="threading")
    broker = RealtimeBroker(app2)
    try:
        ended(connect(app2))
        for n in range(6):
            broker.notify("news", {"n": n})
        assert events(connect(app2)) == [(SESSION_TOPIC, {"recovered": False, "replayed": 0, "reason": "overflow"})]
    finally:
        app2.extensions[EXTENSION_KEY].close()


def test_hostile_reconnects_stay_within_the_ghost_budgets() -> None:
    """1,000 clients that subscribe and vanish, then a flood: ghosts capped in count, per IP and bytes."""
    app = Flask("hostile")
    app.config.update(RTBROKER_RESUME_MAX_GHOSTS=300, RTBROKER_MAX_CLIENTS_PER_IP=500, RTBROKER_RESUME_MEMORY=200_000,
                      RTBROKER_CONCURRENCY="threading", RTBROKER_MAX_SUBSCRIPTION_CHANGES=None)
    broker = RealtimeBroker(app)
    state = state_of(app)
    try:
        for i in range(1000):
            client = state.new_client()
            client.set("ip", "203.0.113.9")
            state.connected(client)
            client.subscribe("flood", f"own/{i}")
            state.disconnected(client, "closed")  # what a stream's end does
        assert state.stats()["session_ghosts"] == 300
        assert state.broker.total_topics() == 301  # the dropped ghosts left the index
        for n in range(200):
            broker.notify("flood", {"n": n, "pad": "x" * 100})
        assert state.sessions.queued_bytes() > 200_000  # the sweeper's next pass trims it
        state.sessions.expire()
        assert state.sessions.queued_bytes() <= 200_000
        assert state.queue_memory.total <= state.settings.queue_memory
    finally:
        state.close()


def test_a_resume_header_that_is_no_client_id_claims_nothing(app: Flask) -> None:
    rt = connect(app)
    ended(rt)
    for bogus in ("x" * 5000, "../" + rt.client_id[3:], rt.client_id[:-1] + "é"):
        other = connect(app, **{RESUME_HEADER: bogus})
        assert events(other)[0] == (SESSION_TOPIC, {"recovered": False, "replayed": 0, "reason": "new"})
    assert state_of(app).stats()["session_ghosts"] >= 1  # the real one is still there
