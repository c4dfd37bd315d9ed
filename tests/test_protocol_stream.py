"""Live conformance of the GET stream with protocol.md (§2, §4, §7, §8, §12), byte for byte.

Each test talks raw HTTP over a socket to real server processes. Servers are shared by the
module: one per (server mode, settings), started on first use. Tests use fresh topic names so
that they do not see each other's traffic on a shared server.
"""

from __future__ import annotations

import json
import os
import re
import resource
import selectors
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import pytest
import requests

from flask_rtbroker.testing import SSEClient
from tests.live import HOST, SERVER_MODES, LiveServer
from tests.protocol_wire import SECURITY_HEADERS, RawStream, ServerPool, pool_fixture, raw_request, unique

CONFIGS = {
    "default": {},
    # Idle timeout tests: no heartbeat, so the stream must stay byte-silent until it ends.
    "idle": {"RTBROKER_IDLE_TIMEOUT": "1.5", "RTBROKER_HEARTBEAT": "0"},
    # Lifetime and heartbeat tests (the heartbeat test ends by the idle timeout before 2 s).
    # No lifetime jitter (the library's default shortens each lifetime by up to 10 %).
    "busy": {
        "RTBROKER_IDLE_TIMEOUT": "1.5",
        "RTBROKER_MAX_LIFETIME": "2",
        "RTBROKER_LIFETIME_JITTER": "0",
        "RTBROKER_HEARTBEAT": "0.5",
    },
}
TIMING_MODES = ("gunicorn-gevent", "werkzeug", "gunicorn-gevent-queued")
# The exact HTTP/1.0 answer needs the server's cooperation: gevent.pywsgi always writes an
# "HTTP/1.1" status line and werkzeug's dev server chunk-encodes for HTTP/1.0 clients too.
HTTP10_MODES = ("gunicorn-gevent", "gunicorn-gthread", "gunicorn-gevent-queued")
NOT_FOUND_CLIENT = b'{"data":{},"message":"Missing or invalid client id.","status":404}'
ID_RE = re.compile(rb"[A-Za-z0-9]{40}")


@pytest.fixture(scope="module")
def pool(log_dir: Path) -> Iterator[ServerPool]:
    yield from pool_fixture(log_dir, CONFIGS)


def connect_event(cid: bytes) -> bytes:
    return b"id:" + cid + b"\nevent:PB_CONNECT\ndata:{\"clientId\":\"" + cid + b"\"}\n\n"


def event(cid: str | bytes, name: str, data: bytes) -> bytes:
    cid = cid.encode() if isinstance(cid, str) else cid
    return b"id:" + cid + b"\nevent:" + name.encode("utf-8") + b"\ndata:" + data + b"\n\n"


def open_connected(srv: LiveServer, **kwargs) -> tuple[RawStream, str]:
    """Open a raw stream, check its first chunk is PB_CONNECT, return it with the client id."""
    stream = RawStream.open(srv.port, **kwargs)
    first = stream.next_chunk(timeout=5) if stream.chunked else stream.next_event_bytes(timeout=5)
    match = re.fullmatch(rb"id:([A-Za-z0-9]{40})\nevent:PB_CONNECT\ndata:\{\"clientId\":\"\1\"\}\n\n", first)
    assert match, f"first chunk is not PB_CONNECT: {first!r}"
    return stream, match.group(1).decode()


def subscribe_ok(srv: LiveServer, cid: str, topics: list[str]) -> None:
    response = srv.subscribe(cid, topics)
    assert (response.status_code, response.content) == (204, b"")


# -- response head -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_response_head(pool: ServerPool, mode: str) -> None:
    srv = pool(mode)
    sdk_headers = {  # what the SDK's EventSource polyfill sends (protocol.md §9.1)
        "connection": "keep-alive",
        "accept-language": "*",
        "sec-fetch-mode": "cors",
        "user-agent": "node",
        "pragma": "no-cache",
        "cache-control": "no-cache",
        "accept-encoding": "gzip, deflate",
    }
    with RawStream.open(srv.port, headers=sdk_headers) as stream:
        assert stream.status_line == b"HTTP/1.1 200 OK"
        h = stream.headers
        assert h.one("Content-Type") == "text/event-stream"
        assert h.one("Cache-Control") == "no-store"
        assert h.one("X-Accel-Buffering") == "no"
        for name, value in SECURITY_HEADERS.items():
            assert h.one(name) == value
        assert h.tokens("Vary") == ["Origin"]
        assert "Content-Length" not in h
        assert "Content-Encoding" not in h
        assert "Access-Control-Allow-Origin" not in h
        assert [v.lower() for v in h.all("Transfer-Encoding")] == ["chunked"]


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_pb_connect_is_the_first_chunk_byte_for_byte(pool: ServerPool, mode: str) -> None:
    srv = pool(mode)
    started = time.monotonic()
    with RawStream.open(srv.port) as stream:
        first = stream.next_chunk(timeout=5)
        assert time.monotonic() - started < 1.0
        cid = first[3:43]
        assert ID_RE.fullmatch(cid)
        assert first == connect_event(cid)
        assert len(first) == 0x7B
        assert stream.last_size_line.lower() == b"7b"
        assert stream.raw_body.startswith(stream.last_size_line + b"\r\n" + first + b"\r\n")


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_query_string_and_last_event_id_are_ignored(pool: ServerPool, mode: str) -> None:
    srv = pool(mode)
    stream, cid = open_connected(srv, path="/api/realtime?foo=bar&clientId=x", headers={"Last-Event-ID": "abc"})
    with stream:
        assert stream.status == 200
        topic = unique()
        subscribe_ok(srv, cid, [topic])
        assert srv.notify(topic, 1) == 1
        assert stream.next_chunk(timeout=5) == event(cid, topic, b"1")


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_unknown_subpath_answers_pocketbase_404(pool: ServerPool, mode: str) -> None:
    # protocol.md §3.4, below the table: GET /api/realtime/anything.
    response = raw_request(pool(mode).port, "GET", "/api/realtime/anything")
    assert (response.status, response.body) == (404, b'{"data":{},"message":"File not found.","status":404}')
    assert response.headers.one("Content-Type") == "application/json"


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_client_ids_are_unique_per_connection(pool: ServerPool, mode: str) -> None:
    srv = pool(mode)
    streams = [open_connected(srv) for _ in range(8)]
    try:
        ids = [cid for _, cid in streams]
        assert len(set(ids)) == len(ids)
        assert all(re.fullmatch(r"[A-Za-z0-9]{40}", cid) for cid in ids)
    finally:
        for stream, _ in streams:
            stream.close()


# -- message framing -----------------------------------------------------------------------

# protocol.md §12: (subscription, notify data, the exact data: bytes, the chunk-size line)
TRANSCRIPT = [
    ("example", {"a": None, "hello": "world", "n": 1, "z": [1, 2]}, b'{"a":null,"hello":"world","n":1,"z":[1,2]}', b"6b"),
    (
        "ex?options=%7B%22query%22%3A%20%7B%22a%22%3A%201%7D%2C%20%22headers%22%3A%20%7B%22X-Token%22%3A%20%22abc%22%7D%7D",
        "str",
        b'"str"',
        b"b0",
    ),
    ("other", "line1\nline2", b'"line1\\nline2"', b"4d"),
    ("other", None, b"null", b"43"),
]
# More payload shapes: (data, exact data: bytes)
PAYLOADS = [
    (None, b"null"),
    (0, b"0"),
    (42, b"42"),
    (-7, b"-7"),
    (2.5, b"2.5"),
    (True, b"true"),
    ([], b"[]"),
    ([1, "a", None, [True, False], {"k": "v"}], b'[1,"a",null,[true,false],{"k":"v"}]'),
    ({}, b"{}"),
    ("", b'""'),
    ("a\nb\r\nc", b'"a\\nb\\r\\nc"'),
    ("w\u00f6rld \u2713 \u65e5\u672c \U0001f600", '"w\u00f6rld \u2713 \u65e5\u672c \U0001f600"'.encode("utf-8")),
    ("<script>&amp;</script>", b'"<script>&amp;</script>"'),
    ({"html": "<b>&</b>", "sep": "\u2028"}, '{"html":"<b>&</b>","sep":"\u2028"}'.encode("utf-8")),
    ({"nested": {"deep": [{"x": 1}]}, "q": 'say "hi"'}, b'{"nested":{"deep":[{"x":1}]},"q":"say \\"hi\\""}'),
]


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_section12_transcript_byte_for_byte(pool: ServerPool, mode: str) -> None:
    srv = pool(mode)
    stream, cid = open_connected(srv)
    with stream:
        subscribe_ok(srv, cid, ["example", TRANSCRIPT[1][0], "other"])
        for topic, data, data_bytes, size_line in TRANSCRIPT:
            assert srv.notify(topic, data) == 1
            chunk = stream.next_chunk(timeout=5)
            assert chunk == event(cid, topic, data_bytes)
            assert stream.last_size_line.lower() == size_line


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_payloads_are_compact_raw_utf8_json(pool: ServerPool, mode: str) -> None:
    srv = pool(mode)
    topic = unique("payload")
    stream, cid = open_connected(srv)
    with stream:
        subscribe_ok(srv, cid, [topic])
        for data, data_bytes in PAYLOADS:
            assert srv.notify(topic, data) == 1
            assert stream.next_chunk(timeout=5) == event(cid, topic, data_bytes)


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_event_name_is_the_subscription_key_raw(pool: ServerPool, mode: str) -> None:
    srv = pool(mode)
    base = unique("posts/")
    options = quote(json.dumps({"query": {"fields": "id,title"}, "headers": {"X-Token": "abc"}}, separators=(",", ":")), safe="")
    keys = [
        base + "?options=" + options,
        base + "?x=1&options=" + options,
        base + "/\u00fcml\u00e4ut \u2713",  # raw UTF-8 in the event line, no escaping
        base + "?foo=bar",
    ]
    stream, cid = open_connected(srv)
    with stream:
        subscribe_ok(srv, cid, keys)
        for i, key in enumerate(keys):
            assert srv.notify(key, {"i": i}) == 1
            assert stream.next_chunk(timeout=5) == event(cid, key, b'{"i":%d}' % i)


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_topic_and_its_options_variant_each_get_the_notify(pool: ServerPool, mode: str) -> None:
    srv = pool(mode)
    topic = unique("t")
    keyed = topic + "?options=" + quote('{"query":{"a":1}}', safe="")
    stream, cid = open_connected(srv)
    with stream:
        subscribe_ok(srv, cid, [topic, keyed])
        assert srv.notify(topic, {"n": 1}) == 2
        received = [stream.next_event_bytes(timeout=5) for _ in range(2)]
        assert sorted(received) == sorted([event(cid, topic, b'{"n":1}'), event(cid, keyed, b'{"n":1}')])


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_nothing_but_the_exact_topic_matches(pool: ServerPool, mode: str) -> None:
    srv = pool(mode)
    topic = unique("t")
    sentinel = unique("sentinel")
    near_misses = [topic + "/x", topic.upper(), topic + " ", " " + topic, topic + "?", topic + "?x=1", topic[:-1], topic + "*"]
    stream, cid = open_connected(srv)
    with stream:
        subscribe_ok(srv, cid, near_misses + [sentinel])
        assert srv.notify(topic, "miss") == 0
        assert srv.notify(sentinel, "hit") == 1
        # Delivery is ordered, so had "miss" been sent it would come first.
        assert stream.next_event_bytes(timeout=5) == event(cid, sentinel, b'"hit"')


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_notify_to_a_full_key_reaches_only_that_key(pool: ServerPool, mode: str) -> None:
    srv = pool(mode)
    topic = unique("t")
    key_x = topic + "?options=" + quote('{"query":{"x":1}}', safe="")
    key_y = topic + "?options=" + quote('{"query":{"y":1}}', safe="")
    sentinel = unique("sentinel")
    stream, cid = open_connected(srv)
    with stream:
        subscribe_ok(srv, cid, [topic, key_x, key_y, sentinel])
        assert srv.notify(key_x, "x") == 1
        assert srv.notify(sentinel, "end") == 1
        assert stream.next_event_bytes(timeout=5) == event(cid, key_x, b'"x"')
        assert stream.next_event_bytes(timeout=5) == event(cid, sentinel, b'"end"')


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_pb_connect_is_never_broadcast(pool: ServerPool, mode: str) -> None:
    srv = pool(mode)
    sentinel = unique("sentinel")
    watcher, cid = open_connected(srv)
    with watcher:
        subscribe_ok(srv, cid, ["PB_CONNECT", sentinel])
        other, _ = open_connected(srv)
        other.close()
        assert srv.notify(sentinel, 1) == 1
        assert watcher.next_event_bytes(timeout=5) == event(cid, sentinel, b"1")


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_many_notifies_arrive_in_order_in_whole_events(pool: ServerPool, mode: str) -> None:
    srv = pool(mode)
    topic = unique("order")
    count = 150
    stream, cid = open_connected(srv)
    with stream:
        subscribe_ok(srv, cid, [topic])
        for i in range(count):
            assert srv.notify(topic, i) == 1
        chunks: list[bytes] = []
        received = b""
        deadline = time.monotonic() + 10
        while received.count(b"\n\n") < count and time.monotonic() < deadline:
            chunks.append(stream.next_chunk(timeout=deadline - time.monotonic()))
            received += chunks[-1]
        # Every chunk holds whole events (never a split one) and the events keep their order.
        assert all(chunk.endswith(b"\n\n") for chunk in chunks)
        assert received == b"".join(event(cid, topic, b"%d" % i) for i in range(count))


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_concurrent_notifies_arrive_once_each_in_whole_events(pool: ServerPool, mode: str) -> None:
    srv = pool(mode)
    topic = unique("burst")
    count = 60
    stream, cid = open_connected(srv)
    with stream, ThreadPoolExecutor(8) as executor:
        subscribe_ok(srv, cid, [topic])
        assert sum(executor.map(lambda i: srv.notify(topic, i), range(count))) == count
        chunks: list[bytes] = []
        deadline = time.monotonic() + 10
        while sum(c.count(b"\n\n") for c in chunks) < count and time.monotonic() < deadline:
            chunks.append(stream.next_chunk(timeout=deadline - time.monotonic()))
    events = [e + b"\n\n" for c in chunks for e in c.split(b"\n\n")[:-1]]
    assert all(chunk.endswith(b"\n\n") for chunk in chunks)
    assert sorted(events) == sorted(event(cid, topic, b"%d" % i) for i in range(count))


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_post_is_effective_as_soon_as_pb_connect_is_seen(pool: ServerPool, mode: str) -> None:
    srv = pool(mode)
    for i in range(10):
        topic = unique("early")  # threaded servers notice the previous closed stream only later
        with SSEClient.connect(HOST, srv.port) as sse:
            assert srv.subscribe(sse.client_id, [topic]).status_code == 204
            assert srv.notify(topic, i) == 1
            received = sse.next_event(timeout=5)
            assert (received.id, received.name, received.data) == (sse.client_id, topic, str(i))


# -- HTTP versions, HEAD, CORS -------------------------------------------------------------


@pytest.mark.parametrize("mode", HTTP10_MODES)
def test_http10_request_gets_an_unchunked_http10_stream(pool: ServerPool, mode: str) -> None:
    srv = pool(mode)
    stream, cid = open_connected(srv, version="1.0")
    with stream:
        assert stream.status_line.startswith(b"HTTP/1.0 200")
        assert "Transfer-Encoding" not in stream.headers
        assert "Content-Length" not in stream.headers
        assert stream.headers.one("Content-Type") == "text/event-stream"
        topic = unique("v10")
        subscribe_ok(srv, cid, [topic])
        assert srv.notify(topic, {"a": 1}) == 1
        assert stream.next_event_bytes(timeout=5) == event(cid, topic, b'{"a":1}')
        assert stream.raw_body == connect_event(cid.encode()) + event(cid, topic, b'{"a":1}')


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_head_answers_the_head_without_registering_a_client(pool: ServerPool, mode: str) -> None:
    srv = pool(mode)
    srv.wait_clients(0, timeout=3)
    with RawStream.open(srv.port, method="HEAD") as stream:
        assert stream.status == 200
        assert stream.headers.one("Content-Type") == "text/event-stream"
        assert stream.headers.one("Cache-Control") == "no-store"
        for name, value in SECURITY_HEADERS.items():
            assert stream.headers.one(name) == value
        time.sleep(0.3)
        assert srv.total_clients() == 0
        try:
            stream.read_until_closed(timeout=0.3)
        except TimeoutError:
            pass
        assert b"PB_CONNECT" not in stream.raw_body and b"id:" not in stream.raw_body


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_origin_header_gets_cors_on_stream_and_post(pool: ServerPool, mode: str) -> None:
    srv = pool(mode)
    origin = {"Origin": "http://app.example"}
    with RawStream.open(srv.port, headers=origin) as stream:
        assert stream.headers.one("Access-Control-Allow-Origin") == "*"
        assert "Origin" in stream.headers.tokens("Vary")
    response = raw_request(srv.port, body=b'{"clientId":"nope"}', headers={"Content-Type": "application/json", **origin})
    assert response.status == 404
    assert response.headers.one("Access-Control-Allow-Origin") == "*"


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_cors_preflight(pool: ServerPool, mode: str) -> None:
    srv = pool(mode)
    response = raw_request(
        srv.port,
        "OPTIONS",
        headers={
            "Origin": "http://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert response.status_line == b"HTTP/1.1 204 No Content"
    assert response.body == b""
    assert response.headers.one("Access-Control-Allow-Origin") == "*"
    assert response.headers.one("Access-Control-Allow-Methods") == "GET,HEAD,PUT,PATCH,POST,DELETE"
    assert response.headers.one("Access-Control-Allow-Headers") == "authorization,content-type"
    assert sorted(response.headers.tokens("Vary")) == sorted(
        ["Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"]
    )
    assert "Content-Type" not in response.headers


# -- how a stream ends ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_abrupt_close_unregisters_within_one_second(pool: ServerPool, mode: str) -> None:
    srv = pool(mode)
    srv.wait_clients(0, timeout=3)
    stream, cid = open_connected(srv)
    subscribe_ok(srv, cid, [unique("quiet")])
    assert srv.total_clients() == 1
    stream.reset()
    assert srv.wait_clients(0, timeout=1.0) <= 1.0
    assert srv.subscribe(cid, ["x"]).status_code == 404


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_close_after_an_extra_byte_unregisters_within_two_seconds(pool: ServerPool, mode: str) -> None:
    """A byte after the request (the start of a pipelined one, which a stream never answers)
    keeps the socket readable: the stream goes on, and still notices the close."""
    srv = pool(mode)
    srv.wait_clients(0, timeout=3)
    stream, cid = open_connected(srv)
    topic = unique("quiet")
    subscribe_ok(srv, cid, [topic])
    stream.sock.sendall(b"G")
    time.sleep(0.7)  # the stream has seen the byte, and a poll slice has passed
    assert srv.total_clients() == 1
    assert srv.notify(topic, 1) == 1
    assert stream.next_event_bytes(timeout=5) == event(cid, topic, b"1")
    stream.close()
    assert srv.wait_clients(0, timeout=2.0) <= 2.0
    assert srv.subscribe(cid, ["x"]).status_code == 404


@pytest.mark.parametrize("mode", SERVER_MODES)
def test_a_flood_after_the_request_ends_the_stream_within_two_seconds(pool: ServerPool, mode: str) -> None:
    """Megabytes after the GET fill the server's receive window, which would hold the peer's
    close back: past MAX_PIPELINED_BYTES unread the stream ends, whether the peer closes or not."""
    srv = pool(mode)
    srv.wait_clients(0, timeout=3)
    stream, cid = open_connected(srv)
    subscribe_ok(srv, cid, [unique("flood")])
    stream.sock.setblocking(False)
    sent, deadline = 0, time.monotonic() + 2
    try:
        while time.monotonic() < deadline and sent < 16 * 1024 * 1024:
            try:
                sent += stream.sock.send(b"x" * 65536)
            except BlockingIOError:
                time.sleep(0.02)
    except OSError:  # reset: the server ended the stream and closed the socket
        pass
    assert sent > 64 * 1024
    assert srv.wait_clients(0, timeout=2.0) <= 2.0
    stream.close()


@pytest.mark.parametrize("mode", TIMING_MODES)
def test_idle_timeout_ends_a_silent_stream_with_the_last_chunk(pool: ServerPool, mode: str) -> None:
    srv = pool(mode, "idle")
    stream, cid = open_connected(srv)
    with stream:
        subscribe_ok(srv, cid, [unique("idle")])
        elapsed, chunks = stream.wait_end(timeout=5)
        assert chunks == []  # heartbeat 0: not a single byte before the end, no comment
        assert 1.4 <= elapsed <= 2.1, elapsed
        assert stream.raw_body.endswith(b"0\r\n\r\n")
        gone = raw_request(srv.port, body=json.dumps({"clientId": cid}).encode(), headers={"Content-Type": "application/json"})
        assert (gone.status, gone.body) == (404, NOT_FOUND_CLIENT)
        if "close" not in [t.lower() for t in stream.headers.tokens("Connection")]:
            # A kept-alive connection can carry the next request (protocol.md §2.5).
            stream.sock.sendall(f"GET /api/realtime HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            assert re.search(rb"\r\n\r\n7b\r\nid:\w{40}\nevent:PB_CONNECT\n", stream.read_until(b"PB_CONNECT", timeout=5), re.I)


@pytest.mark.parametrize("mode", TIMING_MODES)
def test_messages_reset_the_idle_timer(pool: ServerPool, mode: str) -> None:
    srv = pool(mode, "idle")
    topic = unique("idle")
    stream, cid = open_connected(srv)
    with stream:
        subscribe_ok(srv, cid, [topic])
        for i in range(2):
            time.sleep(1.0)
            assert srv.notify(topic, i) == 1
        last_message = time.monotonic()
        elapsed, chunks = stream.wait_end(timeout=5)
        assert chunks == [event(cid, topic, b"0"), event(cid, topic, b"1")]
        assert 1.3 <= time.monotonic() - last_message <= 2.1


@pytest.mark.parametrize("mode", TIMING_MODES)
def test_subscription_posts_do_not_reset_the_idle_timer(pool: ServerPool, mode: str) -> None:
    srv = pool(mode, "idle")
    stream, cid = open_connected(srv)
    connected = time.monotonic()
    with stream:
        for i in range(3):
            time.sleep(0.4)
            subscribe_ok(srv, cid, [unique(f"p{i}")])
        elapsed, chunks = stream.wait_end(timeout=5)
        assert chunks == []
        assert 1.4 <= time.monotonic() - connected <= 2.1


@pytest.mark.parametrize("mode", ("gunicorn-gevent", "gunicorn-gevent-queued"))
def test_idle_timeout_closes_an_http10_stream(pool: ServerPool, mode: str) -> None:
    srv = pool(mode, "idle")
    stream, cid = open_connected(srv, version="1.0")
    connected = time.monotonic()
    with stream:
        assert stream.read_until_closed(timeout=5) == b""
        assert 1.4 <= time.monotonic() - connected <= 2.1
        assert srv.subscribe(cid, ["x"]).status_code == 404


@pytest.mark.parametrize("mode", TIMING_MODES)
def test_max_lifetime_ends_a_busy_stream(pool: ServerPool, mode: str) -> None:
    srv = pool(mode, "busy")
    topic = unique("busy")
    stream, cid = open_connected(srv)
    connected = time.monotonic()
    stop = threading.Event()

    def pump() -> None:
        for i in range(20):  # at most 6 s of messages
            if stop.wait(0.3):
                return
            srv.notify(topic, i)

    subscribe_ok(srv, cid, [topic])
    sender = threading.Thread(target=pump, daemon=True)
    sender.start()
    try:
        with stream:
            _, chunks = stream.wait_end(timeout=5)
            ended = time.monotonic() - connected
    finally:
        stop.set()
        sender.join(5)
    assert 1.9 <= ended <= 2.6, ended
    events = [c for c in chunks if not c.startswith(b":")]
    assert len(events) >= 4
    assert b"".join(events) == b"".join(event(cid, topic, b"%d" % i) for i in range(len(events)))
    assert srv.subscribe(cid, [topic]).status_code == 404


@pytest.mark.parametrize("mode", TIMING_MODES)
def test_heartbeat_comments_do_not_reset_the_idle_timer(pool: ServerPool, mode: str) -> None:
    srv = pool(mode, "busy")
    stream, cid = open_connected(srv)
    connected = time.monotonic()
    with stream:
        _, chunks = stream.wait_end(timeout=5)
        ended = time.monotonic() - connected
    assert 1.4 <= ended <= 2.1, ended
    assert len(chunks) >= 2  # at 0.5 s and 1.0 s (maybe 1.5 s)
    for chunk in chunks:
        lines = chunk.split(b"\n")
        assert chunk.endswith(b"\n\n") and all(line == b"" or line.startswith(b":") for line in lines), chunk


@pytest.mark.parametrize("mode", ("gunicorn-gevent", "pywsgi"))
def test_sigterm_ends_streams_with_the_last_chunk(make_server, mode: str) -> None:
    """protocol.md §2.5: on shutdown the client sees ``0\\r\\n\\r\\n``, then the close.

    The library ends streams on SIGTERM for gevent servers (RTBROKER_GRACEFUL_SHUTDOWN).
    """
    srv = make_server(mode)
    streams = [open_connected(srv) for _ in range(3)]
    signalled = time.monotonic()
    os.killpg(srv.process.pid, signal.SIGTERM)
    try:
        for stream, _ in streams:
            try:
                _, chunks = stream.wait_end(timeout=5)
            except EOFError:
                pytest.fail(f"connection closed without the zero-size chunk after {time.monotonic() - signalled:.2f} s")
            assert chunks == []
            assert time.monotonic() - signalled < 1.0
        for stream, _ in streams:
            # A kept-alive connection may stay open until the worker exits (--graceful-timeout 2).
            assert stream.read_until_closed(timeout=5) == b""
    finally:
        for stream, _ in streams:
            stream.close()


# -- scale ---------------------------------------------------------------------------------


def test_a_thousand_concurrent_streams_all_get_one_notify(pool: ServerPool) -> None:
    """1,000 streams open at once, each served by gunicorn's gevent worker; one notify reaches all.

    The test side is a single thread multiplexing the sockets with a selector.
    """
    total = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 3 * total:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(3 * total, hard), hard))
    srv = pool("gunicorn-gevent")
    srv.wait_clients(0, timeout=3)
    topic = unique("bulk")
    selector = selectors.DefaultSelector()
    buffers: dict[socket.socket, bytes] = {}
    request = f"GET /api/realtime HTTP/1.1\r\nHost: {HOST}:{srv.port}\r\nAccept: text/event-stream\r\n\r\n".encode()

    def read_all(done, deadline: float) -> None:
        pending = {s for s in buffers if not done(buffers[s])}
        while pending and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
                sock = key.fileobj
                data = sock.recv(65536)
                assert data, "a stream closed early"
                buffers[sock] += data
                if done(buffers[sock]):
                    pending.discard(sock)
        assert not pending, f"{len(pending)} streams incomplete"

    try:
        for _ in range(total):
            sock = socket.create_connection((HOST, srv.port), timeout=10)
            sock.sendall(request)
            sock.setblocking(False)
            buffers[sock] = b""
            selector.register(sock, selectors.EVENT_READ)
        read_all(lambda b: b"PB_CONNECT\ndata:" in b and b.endswith(b"\n\n\r\n"), time.monotonic() + 30)
        ids = {}
        for sock, data in buffers.items():
            assert data.startswith(b"HTTP/1.1 200 OK\r\n")
            ids[sock] = re.search(rb"\r\n\r\n7b\r\nid:([A-Za-z0-9]{40})\n", data, re.I).group(1)
            buffers[sock] = b""
        assert len(set(ids.values())) == total
        with requests.Session() as session:
            for cid in ids.values():
                response = session.post(
                    f"{srv.url}/api/realtime", json={"clientId": cid.decode(), "subscriptions": [topic]}, timeout=10
                )
                assert response.status_code == 204
        assert srv.total_clients() == total
        assert srv.notify(topic, {"all": True}) == total
        read_all(lambda b: b.endswith(b"\n\n\r\n"), time.monotonic() + 30)
        for sock, data in buffers.items():
            expected = event(ids[sock], topic, b'{"all":true}')
            size_line, chunk = data.split(b"\r\n", 1)
            assert (int(size_line, 16), chunk) == (len(expected), expected + b"\r\n")
    finally:
        for sock in buffers:
            selector.unregister(sock)
            sock.close()
        selector.close()
    srv.wait_clients(0, timeout=10)
