"""SocketWriter and DefaultClient.send's write-through, on real socket pairs under gevent."""

from __future__ import annotations

import socket as std_socket

import gevent
import gevent.socket
import pytest

from flask_rtbroker.client import DefaultClient, DisconnectReason
from flask_rtbroker.protocol.message import Message
from flask_rtbroker.write_through import SocketWriter, socket_writer


def dechunk(raw: bytes) -> list[bytes]:
    """The chunks of a chunked body (no last chunk expected)."""
    chunks = []
    while raw:
        size_line, _, rest = raw.partition(b"\r\n")
        size = int(size_line, 16)
        chunks.append(rest[:size])
        assert rest[size : size + 2] == b"\r\n", "every chunk ends with CRLF"
        raw = rest[size + 2 :]
    return chunks


def read_all(sock: gevent.socket.socket, idle: float = 0.2) -> bytes:
    data = b""
    while True:
        with gevent.Timeout(idle, False):
            part = sock.recv(1 << 20)
            if not part:
                return data
            data += part
            continue
        return data


@pytest.fixture
def pair():
    server, peer = gevent.socket.socketpair()
    server.setsockopt(std_socket.SOL_SOCKET, std_socket.SO_SNDBUF, 4096)
    peer.setsockopt(std_socket.SOL_SOCKET, std_socket.SO_RCVBUF, 4096)
    yield server, peer
    server.close()
    peer.close()


def test_an_idle_writer_writes_one_chunk_at_once(pair) -> None:
    server, peer = pair
    writer = SocketWriter(server, chunked=True)
    writer.busy = False
    assert writer.offer(b"id:abc\nevent:t\ndata:1\n\n")
    assert writer.written == 1 and not writer.busy and not writer.pending
    assert read_all(peer) == b"17\r\nid:abc\nevent:t\ndata:1\n\n\r\n"


def test_http10_bytes_go_unframed_and_a_busy_writer_refuses(pair) -> None:
    server, peer = pair
    writer = SocketWriter(server, chunked=False)
    assert not writer.offer(b"refused while the stream owns the socket")
    writer.busy = False
    assert writer.offer(b"plain")
    assert read_all(peer) == b"plain"


def test_a_partial_write_keeps_the_rest_and_the_stream_writes_it_first(pair) -> None:
    server, peer = pair
    writer = SocketWriter(server, chunked=True)
    writer.busy = False
    big = b"x" * 200_000
    assert writer.offer(big), "taken: partly written, the rest kept"
    assert writer.busy and writer.pending, "the socket buffer cannot hold 200 KB"
    assert not writer.offer(b"later"), "while the rest waits, senders must queue"
    reader = gevent.spawn(read_all, peer, 0.5)
    writer.write(b"after")
    assert dechunk(reader.get(timeout=10)) == [big, b"after"], "nothing interleaved or reordered"


def test_client_send_writes_through_only_when_nothing_is_queued(pair) -> None:
    server, peer = pair
    client = DefaultClient("c" * 40, queue_size=10)
    writer = client.writer = SocketWriter(server, chunked=True)
    first = Message("t", 1)
    assert client.send(first), "busy writer: queued"
    assert client.queued == 1
    writer.busy = False
    assert client.send(Message("t", 2)) and client.queued == 2, "something queued: the next one queues too"
    writer.write(client.take())  # what the stream does
    assert client.send(Message("t", 3)) and client.queued == 0, "idle and empty: written through"
    chunks = dechunk(read_all(peer))
    assert b"".join(chunks) == b"".join(
        b"id:" + b"c" * 40 + b"\nevent:t\ndata:" + str(i).encode() + b"\n\n" for i in (1, 2, 3))


def test_a_slow_reader_fills_the_queue_and_is_discarded_as_slow(pair) -> None:
    server, _peer = pair
    client = DefaultClient("s" * 40, queue_size=5)
    client.writer = writer = SocketWriter(server, chunked=True)
    writer.busy = False
    big = Message("t", "y" * 100_000)
    results = [client.send(big) for _ in range(10)]
    assert results[0] is True and writer.pending, "the first is partly on the wire"
    assert client.discard_reason == DisconnectReason.SLOW
    assert results.count(True) == 6, "one written through, then a queue of 5, then discarded"
    assert len(writer.pending) < len(big.data_lines) + 128, "at most one message waits beside the queue"


def test_a_closed_peer_discards_the_client(pair) -> None:
    server, peer = pair
    client = DefaultClient("p" * 40)
    client.writer = writer = SocketWriter(server, chunked=True)
    writer.busy = False
    peer.close()
    assert client.send(Message("t", 1)) is False
    assert client.discard_reason == DisconnectReason.CLOSED


@pytest.mark.parametrize(
    ("method", "protocol", "chunked"),
    [("GET", "HTTP/1.1", True), ("GET", "HTTP/1.0", False), ("HEAD", "HTTP/1.1", None), ("GET", "HTTP/2", None)],
)
def test_socket_writer_only_where_the_framing_is_known(pair, method: str, protocol: str, chunked: bool | None) -> None:
    server, _ = pair
    writer = socket_writer({"REQUEST_METHOD": method, "SERVER_PROTOCOL": protocol}, server)
    assert (None if writer is None else writer.chunked) == chunked
    assert socket_writer({"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1"}, None) is None


def test_a_large_event_goes_out_from_its_shared_buffers_byte_exact(pair) -> None:
    """Over 16 KB an event is written with one sendmsg of its buffers (the data never copied per
    key); a partial write keeps the rest for the stream, and the bytes are PocketBase's."""
    server, peer = pair
    client = DefaultClient("d" * 40, queue_size=10)
    writer = client.writer = SocketWriter(server, chunked=True)
    writer.busy = False
    big = Message("t", "z" * 100_000)
    assert big.tail is None, "large data keeps no framed copy"
    assert client.send(big, "t?options=1") and writer.busy and writer.pending
    reader = gevent.spawn(read_all, peer, 0.5)
    writer.write(client.take())
    expected = b"id:" + b"d" * 40 + b"\nevent:t?options=1\ndata:" + big.payload + b"\n\n"
    assert dechunk(reader.get(timeout=10)) == [expected]
    writer.busy = False
    empty = Message.raw("e", b"").renamed("e?options=2")  # written from its buffers under a key
    assert client.send(Message.raw("e", b""), "e?options=2")
    assert read_all(peer) == b"%X\r\n" % len(empty.frame("d" * 40)) + empty.frame("d" * 40) + b"\r\n"
