"""Access control and limits on a live server: topic authorisation, CORS, proxies, caps; isolation."""

from __future__ import annotations

import http.client
import random

import pytest
import requests
from flask import Flask

from flask_rtbroker import RealtimeBroker
from flask_rtbroker.testing import parse_events
from tests.live import LiveServer

TOKENS = '{"tokA": "userA", "tokB": "userB"}'


@pytest.fixture(scope="module")
def secured(log_dir) -> LiveServer:
    server = LiveServer("gunicorn-gevent", env={
        "RTBROKER_TEST_TOKENS": TOKENS,
        "RTBROKER_CORS_ORIGINS": '["https://app.example"]',
        "RTBROKER_MAX_CLIENTS_PER_IP": "3",
    }).start(log_dir)
    yield server
    server.stop()


def post(server: LiveServer, client_id: str, subs: list[str], token: str | None = None) -> requests.Response:
    headers = {"Authorization": token} if token else {}
    return requests.post(f"{server.url}/api/realtime", json={"clientId": client_id, "subscriptions": subs},
                         headers=headers, timeout=10)


def test_topic_rule_recipe_guards_private_and_user_topics_without_refusing_a_post(secured: LiveServer) -> None:
    with secured.stream() as sse:
        assert post(secured, sse.client_id, ["public", "private/news", "user/userB"]).status_code == 204
        assert secured.notify("private/news", "members") == 0, "a guest may not read it"
        assert secured.notify("user/userB", "theirs") == 0
        assert secured.notify("public", 1) == 1
        assert sse.next_event(timeout=5).json() == 1
        assert post(secured, sse.client_id, ["private/news", "user/userA", "user/userB"], "tokA").status_code == 204
        assert secured.notify("user/userB", "theirs") == 0
        assert secured.notify("user/userA", "mine") == 1
        assert secured.notify("private/news", "members") == 1
        assert [sse.next_event(timeout=5).json() for _ in range(2)] == ["mine", "members"]


def test_cors_allow_list(secured: LiveServer) -> None:
    allowed = requests.options(f"{secured.url}/api/realtime", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,authorization"}, timeout=10)
    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert allowed.headers["Access-Control-Allow-Headers"] == "content-type,authorization"
    assert "Access-Control-Allow-Credentials" not in allowed.headers
    other = requests.post(f"{secured.url}/api/realtime", json={}, headers={"Origin": "https://evil.example"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in other.headers
    assert "Origin" in other.headers["Vary"]


def get_from(server: LiveServer, source: str) -> tuple[int, bytes]:
    """A plain GET of the realtime endpoint from a given loopback source address."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10, source_address=(source, 0))
    try:
        connection.request("GET", "/api/realtime")
        response = connection.getresponse()
        body = response.read() if response.status != 200 else b""
        return response.status, body
    finally:
        connection.close()


def test_streams_per_ip_cap_answers_429(secured: LiveServer) -> None:
    streams = [secured.stream(source_address=("127.0.0.3", 0)) for _ in range(3)]
    try:
        status, body = get_from(secured, "127.0.0.3")
        assert status == 429
        assert body == b'{"data":{},"message":"Too many realtime connections from your address.","status":429}'
        with secured.stream(source_address=("127.0.0.4", 0)) as elsewhere:
            assert elsewhere.status == 200
    finally:
        for sse in streams:
            sse.close()


def test_max_clients_answers_503_and_trusted_proxy_header_sets_the_ip(make_server) -> None:
    server = make_server(env={"RTBROKER_MAX_CLIENTS": "2", "RTBROKER_TRUSTED_PROXY_HEADERS": '["X-Real-IP"]'})
    with server.stream(headers={"X-Real-IP": "203.0.113.7"}) as proxied, server.stream():
        full = requests.get(f"{server.url}/api/realtime", timeout=10)
        assert full.status_code == 503
        assert full.json()["message"] == "Too many realtime connections; try again later."
        # The stream's IP is the header's: a POST without it is another client, one with it is the same.
        assert post(server, proxied.client_id, ["x"]).status_code == 400
        same = requests.post(f"{server.url}/api/realtime", json={"clientId": proxied.client_id, "subscriptions": ["x"]},
                             headers={"X-Real-IP": "203.0.113.7"}, timeout=10)
        assert same.status_code == 204


def test_x_forwarded_for_is_ignored_by_default(make_server) -> None:
    server = make_server()
    with server.stream(headers={"X-Forwarded-For": "203.0.113.9"}) as sse:
        assert post(server, sse.client_id, ["x"]).status_code == 204


def test_isolation_property_random_clients_topics_and_targets() -> None:
    """A client only ever receives messages for keys it holds, and targeted sends only if targeted."""
    rng = random.Random(20261128)
    app = Flask(__name__)
    app.config["RTBROKER_CONCURRENCY"] = "threading"
    broker = RealtimeBroker(app)
    topics = ["a", "b", "a/x", "A", "b?options=%7B%7D", "c?x=1", "c?x=1&options=%7B%7D"]
    with app.app_context():
        state = broker.state()
        clients = []
        for _ in range(60):
            client = state.new_client()
            state.broker.register(client)
            client.subscribe(*rng.sample(topics, rng.randint(0, 4)))
            clients.append(client)
        for round_no in range(300):
            if rng.random() < 0.2:
                victim = rng.choice(clients)
                victim.set_subscriptions(rng.sample(topics, rng.randint(0, 4)))
            topic = rng.choice(["a", "b", "c?x=1", "A", "a/x", "b?options=%7B%7D", "zzz"])
            targets = None if rng.random() < 0.5 else {c.id for c in rng.sample(clients, 5)}
            held = {c.id: set(c.subscriptions()) for c in clients}
            broker.notify(topic, round_no, to=targets)
            for client in clients:
                for message in parse_events(client.take()):
                    assert message.name in held[client.id], (message.name, held[client.id])
                    assert message.name == topic or message.name.startswith(topic + ("&" if "?" in topic else "?") + "options=")
                    if targets is not None:
                        assert client.id in targets
        state.close()
