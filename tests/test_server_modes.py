"""The round trip works the same under every supported WSGI server."""

from __future__ import annotations

from tests.live import LiveServer


def test_connect_subscribe_notify_round_trip(server: LiveServer) -> None:
    with server.stream() as sse:
        assert sse.status == 200
        assert sse.connect_event is not None and sse.connect_event.name == "PB_CONNECT"
        assert server.subscribe(sse.client_id, ["example"]).status_code == 204
        assert server.notify("example", {"hello": "wörld"}) == 1
        event = sse.next_event(timeout=5)
        assert (event.id, event.name, event.json()) == (sse.client_id, "example", {"hello": "wörld"})


def test_closed_socket_unregisters_within_one_second(server: LiveServer) -> None:
    server.wait_clients(0, timeout=2.0)
    sse = server.stream()
    assert server.subscribe(sse.client_id, ["quiet"]).status_code == 204
    assert server.total_clients() == 1
    sse.close()
    assert server.wait_clients(0, timeout=1.0) <= 1.0
    assert server.subscribe(sse.client_id, ["quiet"]).status_code == 404
