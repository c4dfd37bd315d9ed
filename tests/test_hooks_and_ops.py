"""In process: the connect hook, the lifecycle signals, the metrics endpoint and the CLI command."""

from __future__ import annotations

from typing import Any, Generator, Iterator

import pytest
import simplejson
from flask import Flask, Request

from flask_rtbroker import (
    ApiError,
    DefaultClient,
    RealtimeBroker,
    client_connected,
    client_disconnected,
    client_subscribed,
)


@pytest.fixture
def app() -> Iterator[Flask]:
    app = Flask(__name__)
    app.config.update(RTBROKER_CONCURRENCY="threading", RTBROKER_HEARTBEAT=0, RTBROKER_METRICS_PATH="/metrics")
    RealtimeBroker(app)
    yield app
    app.extensions["rtbroker"].close()


def test_before_connect_can_refuse_a_stream(app: Flask) -> None:
    broker: RealtimeBroker = app.extensions["rtbroker"].hooks  # the RealtimeBroker holds the hooks

    @broker.before_connect
    def only_with_ticket(client: DefaultClient, request: Request) -> None:
        if request.args.get("ticket") != "ok":
            raise ApiError(401, "A ticket is required.")

    refused = app.test_client().get("/api/realtime")
    assert refused.status_code == 401
    assert refused.json == {"data": {}, "message": "A ticket is required.", "status": 401}
    assert broker.total_clients() == 0
    allowed = app.test_client().get("/api/realtime?ticket=ok", buffered=False)
    assert allowed.status_code == 200
    allowed.close()


def test_signals_report_connect_subscribe_and_disconnect_reasons(app: Flask) -> None:
    seen: list[tuple[str, Any]] = []
    state = app.extensions["rtbroker"]

    def on_connect(sender: Flask, client: DefaultClient) -> None:
        seen.append(("connected", sender is app))

    def on_subscribe(sender: Flask, client: DefaultClient, subscriptions: list[str]) -> None:
        seen.append(("subscribed", subscriptions))

    def on_disconnect(sender: Flask, client: DefaultClient, reason: str) -> None:
        seen.append(("disconnected", reason))

    with client_connected.connected_to(on_connect, app), client_subscribed.connected_to(on_subscribe, app), \
            client_disconnected.connected_to(on_disconnect, app):
        http = app.test_client()
        closed = http.get("/api/realtime", buffered=False)
        first = next(closed.response)
        client_id = first.split(b"\n", 1)[0][3:].decode()
        assert http.post("/api/realtime", json={"clientId": client_id, "subscriptions": ["a", "a", ""]}).status_code == 204
        closed.close()  # the server closes the iterator: the peer went away
        dropped = http.get("/api/realtime", buffered=False)
        dropped_id = next(dropped.response).split(b"\n", 1)[0][3:].decode()
        state.broker.unregister(dropped_id)
        rest = b"".join(dropped.response)  # the stream ends by itself
        assert rest == b""
    assert seen == [
        ("connected", True), ("subscribed", ["a"]), ("disconnected", "closed"),
        ("connected", True), ("disconnected", "discarded"),
    ]
    assert state.stats()["disconnects_total"] == {"closed": 1, "discarded": 1}


def test_metrics_endpoint_speaks_prometheus_text(app: Flask) -> None:
    stream = app.test_client().get("/api/realtime", buffered=False)
    next(stream.response)
    body = app.test_client().get("/metrics")
    assert body.status_code == 200 and body.mimetype == "text/plain"
    text = body.get_data(as_text=True)
    assert "# TYPE rtbroker_clients gauge\nrtbroker_clients 1\n" in text
    assert "# TYPE rtbroker_connects_total counter\nrtbroker_connects_total 1\n" in text
    stream.close()
    assert 'rtbroker_disconnects_total{reason="closed"} 1' in app.test_client().get("/metrics").get_data(as_text=True)


def test_cli_stats_prints_the_figures_as_json(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["rtbroker", "stats", "--cluster"])
    assert result.exit_code == 0, result.output
    figures = simplejson.loads(result.output)
    assert figures["clients"] == 0 and figures["cluster_clients"] == 0 and "deliveries_total" in figures


def test_a_stream_body_is_its_generator_to_the_server_and_releases_its_slot_once(app: Flask) -> None:
    from flask_rtbroker.stream import StreamBody

    state = app.extensions["rtbroker"]
    state.admit("192.0.2.1")
    state.admit("192.0.2.1")

    def stream() -> Generator[bytes, None, None]:
        yield b"x"

    started, unstarted = stream(), stream()
    body = StreamBody(started, state, "192.0.2.1")
    assert iter(body) is started  # no Python __next__ between the server and the stream
    assert next(iter(body)) == b"x"
    body.close()
    body.close()
    never_started = StreamBody(unstarted, state, "192.0.2.1")
    never_started.close()
    assert state._streams == 0 and not state._clients_per_ip
