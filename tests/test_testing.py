"""flask_rtbroker.testing: its parser on bytes, and SSEClient on canned responses over loopback."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import pytest

from flask_rtbroker import DefaultClient, Message, RtBrokerError
from flask_rtbroker.testing import (
    Chunk,
    Event,
    FramingError,
    ReadTimeout,
    SSEClient,
    StreamEnded,
    parse_events,
    parse_head,
    read_chunk,
    recv_before,
    split_event,
)

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
CONNECT = b"id:abc\nevent:PB_CONNECT\ndata:{\"clientId\":\"abc\"}\n\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def test_parse_head_keeps_header_lines_in_order_with_duplicates_and_case() -> None:
    status_line, headers = parse_head(b"HTTP/1.1 204 No Content\r\nVary: Origin\r\nvary:  Accept \r\nX-A:b:c")
    assert status_line == b"HTTP/1.1 204 No Content"
    assert headers == [("Vary", "Origin"), ("vary", "Accept"), ("X-A", "b:c")]


@pytest.mark.parametrize("partial", [b"", b"5", b"5\r\nhel", b"5\r\nhello", b"5\r\nhello\r"])
def test_read_chunk_waits_for_a_whole_chunk(partial: bytes) -> None:
    assert read_chunk(partial) == (None, partial)


def test_read_chunk_takes_one_chunk_and_leaves_the_rest() -> None:
    body = b"5;ext=1\r\nhello\r\nb\r\n world!\n\n\r\n\r\n0\r\n\r\n"
    first, rest = read_chunk(body)
    assert first == Chunk(b"5;ext=1", b"hello")
    second, rest = read_chunk(rest)
    assert second == Chunk(b"b", b" world!\n\n\r\n")  # a payload may hold CRLF
    assert read_chunk(rest) == (Chunk(b"0", b""), b"")


@pytest.mark.parametrize("body", [b"5\r\nhelloXY", b"zz\r\nhello\r\n"])
def test_read_chunk_refuses_broken_framing(body: bytes) -> None:
    with pytest.raises(FramingError):
        read_chunk(body)


def test_split_event_takes_one_block_through_its_blank_line() -> None:
    assert split_event(b"data:1\n") == (None, b"data:1\n")
    assert split_event(b": ping\n\ndata:2\n\nda") == (b": ping\n\n", b"data:2\n\nda")


def test_parse_events_reads_what_a_client_has_queued_and_skips_comments() -> None:
    client = DefaultClient(client_id="cid")
    client.send(Message("a", {"x": 1}))
    client.send(Message("b", "two\nlines"))
    events = parse_events(b": ping\n\n" + client.take())
    assert [(e.id, e.name, e.json()) for e in events] == [("cid", "a", {"x": 1}), ("cid", "b", "two\nlines")]
    assert isinstance(events[0], Event) and events[0].raw == b'id:cid\nevent:a\ndata:{"x":1}\n\n'


def test_parse_events_refuses_data_that_ends_inside_an_event() -> None:
    with pytest.raises(FramingError, match="inside an event"):
        parse_events(b"id:1\nevent:a\n\nid:2\nevent:b")


def test_errors_are_rtbroker_errors_and_the_builtins_they_stand_for() -> None:
    assert issubclass(StreamEnded, RtBrokerError) and issubclass(StreamEnded, ConnectionError)
    assert issubclass(ReadTimeout, RtBrokerError) and issubclass(ReadTimeout, TimeoutError)
    assert issubclass(FramingError, RtBrokerError) and issubclass(FramingError, ValueError)
    left, right = socket.socketpair()
    with left, right, pytest.raises(ReadTimeout):
        recv_before(left, time.monotonic() + 0.05)


@contextmanager
def serving(*parts: bytes) -> Iterator[int]:
    """A loopback server that answers one request with *parts* (one send each), then closes."""
    with socket.create_server(("127.0.0.1", 0)) as server:

        def answer() -> None:
            connection, _ = server.accept()
            with connection:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += connection.recv(4096)
                for part in parts:
                    connection.sendall(part)

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        yield server.getsockname()[1]
        thread.join(5)


def test_sse_client_reads_chunked_events_split_anywhere_until_the_last_chunk() -> None:
    event = b"id:abc\nevent:t\ndata:line1\ndata:line2\n\n"
    parts = [HEAD + chunk(CONNECT)[:7], chunk(CONNECT)[7:] + chunk(b": heartbeat\n\n"), chunk(event[:9]),
             chunk(event[9:]) + b"0\r\n\r\n"]
    with serving(*parts) as port, SSEClient.connect("127.0.0.1", port, timeout=2) as sse:
        assert (sse.status, sse.chunked, sse.headers["content-type"]) == (200, True, "text/event-stream")
        assert sse.client_id == "abc" and sse.connect_event is not None and sse.connect_event.json() == {"clientId": "abc"}
        received = sse.next_event(timeout=2)
        assert (received.id, received.name, received.data, received.raw) == ("abc", "t", "line1\nline2", event)
        with pytest.raises(StreamEnded, match="ended the stream"):
            sse.next_event(timeout=2)
        assert sse.body == CONNECT + b": heartbeat\n\n" + event


def test_sse_client_reads_an_unchunked_stream_until_the_connection_closes() -> None:
    head = b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
    with serving(head + CONNECT, b"event:t\ndata:{}\n\n") as port, SSEClient.connect("127.0.0.1", port, timeout=2) as sse:
        assert not sse.chunked
        assert (sse.next_event(timeout=2).name, sse.client_id) == ("t", "abc")
        with pytest.raises(StreamEnded, match="ended the stream"):
            sse.next_event(timeout=2)


def test_sse_client_returns_a_refused_stream_without_reading_events() -> None:
    refused = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\n\r\n{}"
    with serving(refused) as port, SSEClient.connect("127.0.0.1", port, timeout=2) as sse:
        assert (sse.status, sse.client_id, sse.connect_event) == (429, "", None)
