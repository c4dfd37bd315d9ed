"""What a hostile client controls costs bounded work and memory, and never answers 500.

In process (Flask's test client against a registered client): nested and odd JSON in every
entry point, form-field caps, the body default, the subscription budgets, hook failures and
oversized record messages. Live (gunicorn gevent): the default stream caps leave room for the
app's ordinary routes.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, Callable, Iterator
from urllib.parse import quote

import pytest
import requests
import simplejson
from flask import Flask
from flask.testing import FlaskClient

from flask_rtbroker import IP_KEY, DefaultClient, Message, RealtimeBroker, signals
from flask_rtbroker.protocol import encoding
from flask_rtbroker.backplane.envelope import Envelope, EnvelopeError
from flask_rtbroker.config import DEFAULTS, Settings, resolve_stream_limits
from flask_rtbroker.errors import ConfigurationError
from flask_rtbroker.protocol.options import NO_OPTIONS, parse_options, subscription_cost
from tests.live import HOST, LiveServer

GENERIC = {"data": {}, "message": "Something went wrong while processing your request.", "status": 400}


def make_app(**config: Any) -> tuple[Flask, RealtimeBroker]:
    app = Flask(__name__)
    app.config.update(RTBROKER_CONCURRENCY="threading", **config)
    return app, RealtimeBroker(app)


def local_client(app: Flask) -> DefaultClient:
    state = app.extensions["rtbroker"]
    client = state.new_client()
    client.set(IP_KEY, "127.0.0.1")
    state.broker.register(client)
    return client


@pytest.fixture
def app_client() -> Iterator[tuple[Flask, FlaskClient, DefaultClient]]:
    app, _ = make_app()
    client = local_client(app)
    yield app, app.test_client(), client
    app.extensions["rtbroker"].close()


def post_json(http: FlaskClient, body: str | bytes) -> Any:
    return http.post("/api/realtime", data=body, content_type="application/json")


# -- item 2: nested JSON and other odd input ---------------------------------------------------


@pytest.mark.parametrize("depth", [65, 1000, 100_000])
def test_deeply_nested_json_bodies_are_a_generic_400(app_client, depth: int) -> None:
    _, http, client = app_client
    for body in ("[" * depth + "]" * depth, '{"clientId":"x","subscriptions":' + "[" * depth + "]" * depth + "}"):
        response = post_json(http, body)
        assert (response.status_code, response.json) == (400, GENERIC)
    payload = http.post("/api/realtime", data={"@jsonPayload": "[" * depth}, content_type="multipart/form-data")
    assert (payload.status_code, payload.json) == (400, GENERIC)
    assert client.subscriptions() == {}


def test_json_past_the_item_bound_is_refused_unread(app_client) -> None:
    _, http, client = app_client
    body = simplejson.dumps({"clientId": client.id, "subscriptions": ["a"] * (encoding.MAX_ITEMS + 1)})
    assert (post_json(http, body).status_code, post_json(http, body).json) == (400, GENERIC)
    # PocketBase's own answer for a little over 1000 items is kept.
    body = simplejson.dumps({"clientId": client.id, "subscriptions": ["a"] * 1001})
    assert post_json(http, body).json["data"]["subscriptions"]["code"] == "validation_length_too_long"


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999", "1" * 5000])
def test_non_finite_and_huge_numbers_are_a_generic_400(app_client, value: str) -> None:
    _, http, client = app_client
    response = post_json(http, '{"clientId":"%s","subscriptions":["a"],"x":%s}' % (client.id, value))
    assert (response.status_code, response.json) == (400, GENERIC)


def test_options_that_nest_too_deeply_mean_no_options_and_subscribe(app_client) -> None:
    """``t?options=`` + 2,480 ``[`` answered 500 on main; PocketBase: unusable options = none."""
    app, http, client = app_client
    key = "t?options=" + "[" * 2480
    assert parse_options(key) is NO_OPTIONS
    assert parse_options("t?options=" + quote('{"query":{"a":1e999}}')) is NO_OPTIONS
    response = post_json(http, simplejson.dumps({"clientId": client.id, "subscriptions": [key]}))
    assert response.status_code == 204
    with app.app_context():
        assert app.extensions["rtbroker"].broker.subscribers("t") == {client: (key,)}


def test_lone_surrogates_in_keys_and_data_are_written_as_replacement_characters(app_client) -> None:
    app, http, client = app_client
    response = post_json(http, '{"clientId":"%s","subscriptions":["s\\ud800"]}' % client.id)
    assert response.status_code == 204
    app.extensions["rtbroker"].deliver("s\ud800", Message("s\ud800", {"v": "\udfff"}))
    frame = client.take()
    assert frame.endswith(b"\nevent:s\xef\xbf\xbd\ndata:{\"v\":\"\xef\xbf\xbd\"}\n\n")
    assert encoding.dumps_sorted({"m": "\ud83d"}) == b'{"m":"\xef\xbf\xbd"}'


def test_backplane_envelopes_that_nest_too_deeply_are_dropped_cleanly() -> None:
    with pytest.raises(EnvelopeError):
        Envelope.decode(b"[" * 100_000 + b"\nbody")
    with pytest.raises(ValueError):
        encoding.loads(b"[" * 100_000)


# -- item 4: forms, body size, message size ----------------------------------------------------


def test_urlencoded_forms_past_the_field_cap_are_refused_unread(app_client) -> None:
    _, http, client = app_client
    body = f"clientId={client.id}&" + "&".join(["subscriptions=a"] * 3000)
    response = http.post("/api/realtime", data=body, content_type="application/x-www-form-urlencoded")
    assert (response.status_code, response.json) == (400, GENERIC)
    ok = http.post("/api/realtime", data=f"clientId={client.id}&subscriptions=a&subscriptions=b",
                   content_type="application/x-www-form-urlencoded")
    assert ok.status_code == 204 and sorted(client.subscriptions()) == ["a", "b"]


def test_multipart_forms_past_the_field_cap_are_refused(app_client) -> None:
    _, http, client = app_client
    data = {"clientId": client.id, "subscriptions": [f"t{i}" for i in range(3000)]}
    response = http.post("/api/realtime", data=data, content_type="multipart/form-data")
    assert (response.status_code, response.json) == (400, GENERIC)
    assert client.subscriptions() == {}


def test_the_default_body_limit_is_one_mebibyte(app_client) -> None:
    _, http, client = app_client
    assert DEFAULTS["RTBROKER_MAX_BODY_SIZE"] == 1024 * 1024
    body = b'{"clientId":"x","subscriptions":["' + b"a" * (1024 * 1024) + b'"]}'
    response = post_json(http, body)
    assert response.status_code == 413 and response.json["message"] == "The request body is too large."


def test_a_message_size_over_the_queue_budget_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="RTBROKER_CLIENT_QUEUE_BYTES"):
        make_app(RTBROKER_MAX_MESSAGE_SIZE=2_000_000, RTBROKER_CLIENT_QUEUE_BYTES=1_000_000)


def test_notify_counts_only_what_was_queued() -> None:
    app, broker = make_app(RTBROKER_CLIENT_QUEUE_SIZE=1)
    fast, slow = local_client(app), local_client(app)
    fast.subscribe("t")
    slow.subscribe("t")
    with app.app_context():
        assert broker.notify("t", 1) == 2
        fast.take()
        assert broker.notify("t", 2) == 1  # the slow one overflowed and was discarded
        assert slow.discard_reason == "slow"
        fast.take()
        assert broker.notify("t", 3) == 1
    app.extensions["rtbroker"].close()


# -- item 4 and 6: stream caps and subscription budgets ----------------------------------------


def test_auto_stream_limits() -> None:
    assert resolve_stream_limits(None, None, 100) == (90, 22)
    assert resolve_stream_limits(None, None, 1000) == (900, 225)
    assert resolve_stream_limits(None, None, None) == (10_000, 2_500)
    assert resolve_stream_limits(0, None, 1000) == (0, 0)
    assert resolve_stream_limits(50, 7, 1000) == (50, 7)
    settings = Settings.from_config({**DEFAULTS})
    assert (settings.max_clients, settings.max_clients_per_ip) == (10_000, 2_500)


def test_a_post_over_the_client_budget_is_400_and_changes_nothing(app_client) -> None:
    _, http, client = app_client
    client.set_subscriptions(["kept"])
    keys = [f"t{i}?" + "x" * 2470 for i in range(1000)]  # PocketBase's own limits
    response = post_json(http, simplejson.dumps({"clientId": client.id, "subscriptions": keys}).encode()[: 2_600_000])
    assert response.status_code == 413  # the body default stops it first
    keys = [f"t{i}?" + "x" * 2470 for i in range(250)]
    response = post_json(http, simplejson.dumps({"clientId": client.id, "subscriptions": keys}))
    limit = DEFAULTS["RTBROKER_MAX_SUBSCRIPTION_BYTES"]
    assert response.status_code == 400
    assert response.json["data"] == {"subscriptions": {
        "code": "validation_subscriptions_too_large",
        "message": f"The subscriptions must take no more than {limit} bytes together (RTBROKER_MAX_SUBSCRIPTION_BYTES).",
        "params": {"max": limit},
    }}
    assert list(client.subscriptions()) == ["kept"]
    assert client.subscription_bytes == subscription_cost(["kept"])


def test_the_process_budget_refuses_growth_and_new_streams_with_503_and_keeps_the_rest() -> None:
    keys = [f"k{i}" for i in range(40)]
    app, broker = make_app(RTBROKER_SUBSCRIPTION_MEMORY=subscription_cost(keys))
    http = app.test_client()
    first, second = local_client(app), local_client(app)
    assert post_json(http, simplejson.dumps({"clientId": first.id, "subscriptions": keys})).status_code == 204
    state = app.extensions["rtbroker"]
    assert state.broker.subscription_bytes == subscription_cost(keys)
    more = post_json(http, simplejson.dumps({"clientId": second.id, "subscriptions": keys}))
    assert more.status_code == 503 and second.subscriptions() == {}
    assert http.get("/api/realtime").status_code == 503
    smaller = post_json(http, simplejson.dumps({"clientId": first.id, "subscriptions": keys[:5]}))
    assert smaller.status_code == 204  # shrinking is always allowed
    assert post_json(http, simplejson.dumps({"clientId": second.id, "subscriptions": ["a"]})).status_code == 204
    with app.app_context():
        assert broker.notify("k1", "still delivered") == 1
    state.broker.unregister(first.id)
    assert state.broker.subscription_bytes == subscription_cost(["a"])
    state.close()


# -- item 5: a failing before_send stays where it happens --------------------------------------


def test_a_failing_before_send_skips_one_delivery_and_everything_else_still_happens() -> None:
    """Two brokers on one memory bus stand for two processes sharing Redis."""
    (app_a, broker_a), (app_b, _) = make_app(RTBROKER_BACKPLANE="memory://hooks"), make_app(RTBROKER_BACKPLANE="memory://hooks")
    apps = [app_a, app_b]
    bad, good = local_client(app_a), local_client(app_a)
    remote = local_client(app_b)
    app_b.extensions["rtbroker"].cluster.ensure_started()
    for client in (bad, good, remote):
        client.subscribe("t")

    @broker_a.before_send
    def explode_for_one(client: DefaultClient, message: Message) -> Message:
        if client is bad:
            raise RuntimeError("hook failed")
        return message

    notified: list[int] = []

    def on_notified(sender: Flask, message: Message, topic: str, delivered: int) -> None:
        notified.append(delivered)

    signals.message_notified.connect(on_notified, sender=app_a)
    try:
        with app_a.app_context(), pytest.raises(RuntimeError, match="hook failed"):
            broker_a.notify("t", {"n": 1})
        assert notified == [1]
        assert good.take().endswith(b'data:{"n":1}\n\n') and bad.take() == b""
        deadline = time.monotonic() + 5
        while not remote.queued and time.monotonic() < deadline:
            time.sleep(0.01)
        assert remote.take().endswith(b'data:{"n":1}\n\n'), "the other process got it"
        assert app_a.extensions["rtbroker"].stats()["deliveries_total"] == 1
    finally:
        signals.message_notified.disconnect(on_notified, sender=app_a)
        for app in apps:
            app.extensions["rtbroker"].close()


def test_send_reports_whether_it_queued() -> None:
    app, broker = make_app()
    client = local_client(app)
    with app.app_context():
        assert broker.send(client.id, "e", 1) is True
        broker.before_send(lambda c, m: None)
        assert broker.send(client.id, "e", 2) is False
    app.extensions["rtbroker"].close()


# -- item 4: default stream caps on a live gunicorn gevent worker ------------------------------


def _open_stream(port: int, source: str) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection((HOST, port), timeout=10, source_address=(source, 0))
    sock.sendall(f"GET /api/realtime HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return sock, head.split(b"\r\n", 1)[0]


def test_default_caps_keep_ordinary_routes_answering(make_server: Callable[..., LiveServer]) -> None:
    """``--worker-connections 40``: 30 streams in all (10 connections stay for ordinary
    requests), 7 per address; refused ones get 429/503 and /stats still answers."""
    server = make_server("gunicorn-gevent", args=["--worker-connections", "40"])
    streams: list[socket.socket] = []
    try:
        statuses: dict[str, list[bytes]] = {}
        for index in range(40):
            source = f"127.0.0.{2 + index // 8}"
            sock, status = _open_stream(server.port, source)
            code = status.split(b" ")[1]
            statuses.setdefault(source, []).append(code)
            if code == b"200":
                streams.append(sock)
            else:
                sock.close()
        assert statuses["127.0.0.2"] == [b"200"] * 7 + [b"429"], "7 per address"
        assert len(streams) == 30, "the process cap: 40 connections less 10"
        assert statuses["127.0.0.6"] == [b"200"] * 2 + [b"503"] * 6
        stats = requests.get(f"{server.url}/stats", timeout=5)
        assert stats.status_code == 200 and stats.json()["clients"] == 30
    finally:
        for sock in streams:
            sock.close()
