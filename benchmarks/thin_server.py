"""A deliberately thin PocketBase-realtime server on a raw gevent StreamServer (benchmark baseline).

    python benchmarks/thin_server.py --port 8091 [--host 127.0.0.1]

It is the floor a gevent implementation can reach: no WSGI, no Flask, no per-client queue, no
waking of a per-stream greenlet. It speaks just enough of the protocol for the load generator:

- ``GET /api/realtime``: chunked SSE head + the ``PB_CONNECT`` event; the connection's greenlet
  then only waits for EOF to unregister the client.
- ``POST /api/realtime`` ``{"clientId", "subscriptions"}``: 204, 404 for an unknown id, 400 when
  the request comes from another IP than the stream (like PocketBase).
- ``POST /notify`` ``{"topic", "data"}``: encodes the event tail once, then writes one
  pre-encoded chunk per subscribed socket directly from the request's greenlet;
  answers ``{"delivered": N}``.
- ``GET /stats``: ``{"clients": N}``.

Keep-alive is supported for the non-stream requests. No validation beyond what the benchmark
needs: this is not a usable server.
"""

from __future__ import annotations

import argparse
import json
import resource
import secrets
import signal
import string
import sys

import gevent
from gevent import socket as gsocket
from gevent.server import StreamServer

ALPHABET = string.ascii_letters + string.digits
MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024

STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Cache-Control: no-store\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"X-Accel-Buffering: no\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
)


def raise_nofile_limit() -> int:
    """Raise the soft open-files limit to the hard one; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def respond(status: str, body: bytes = b"", content_type: str | None = "application/json", close: bool = False) -> bytes:
    head = [f"HTTP/1.1 {status}".encode()]
    if content_type:
        head.append(b"Content-Type: " + content_type.encode())
    if status != "204 No Content":
        head.append(b"Content-Length: %d" % len(body))
    if close:
        head.append(b"Connection: close")
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class Client:
    __slots__ = ("cid", "sock", "ip", "topics", "id_line")

    def __init__(self, cid: str, sock: gsocket.socket, ip: str) -> None:
        self.cid = cid
        self.sock = sock
        self.ip = ip
        self.topics: set[str] = set()
        self.id_line = b"id:" + cid.encode("ascii")


class ThinBroker:
    """Clients by id plus topic -> {client id: client}."""

    def __init__(self) -> None:
        self.clients: dict[str, Client] = {}
        self.topics: dict[str, dict[str, Client]] = {}

    def register(self, client: Client) -> None:
        self.clients[client.cid] = client

    def unregister(self, client: Client) -> None:
        if self.clients.pop(client.cid, None) is None:
            return
        for topic in client.topics:
            holders = self.topics.get(topic)
            if holders is not None:
                holders.pop(client.cid, None)
                if not holders:
                    del self.topics[topic]
        client.topics = set()

    def set_subscriptions(self, client: Client, subscriptions: list[str]) -> None:
        wanted = {s for s in subscriptions if s}
        for topic in client.topics - wanted:
            holders = self.topics.get(topic)
            if holders is not None:
                holders.pop(client.cid, None)
                if not holders:
                    del self.topics[topic]
        for topic in wanted - client.topics:
            self.topics.setdefault(topic, {})[client.cid] = client
        client.topics = wanted

    def notify(self, topic: str, data: object) -> int:
        payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        tail = b"\nevent:" + topic.encode("utf-8") + b"\ndata:" + payload + b"\n\n\r\n"
        delivered = 0
        for client in list(self.topics.get(topic, {}).values()):
            line = client.id_line
            # chunk size = len(id line) + len(tail without the closing CRLF)
            frame = b"%x\r\n" % (len(line) + len(tail) - 2) + line + tail
            try:
                client.sock.sendall(frame)
            except OSError:
                self.unregister(client)
                continue
            delivered += 1
        return delivered


class Connection:
    """One accepted socket: parse requests, dispatch, until close (or it becomes a stream)."""

    def __init__(self, broker: ThinBroker, sock: gsocket.socket, addr: tuple[str, int]) -> None:
        self.broker = broker
        self.sock = sock
        self.ip = addr[0]
        self.buf = b""

    def read_request(self) -> tuple[str, str, dict[str, str], bytes] | None:
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > MAX_HEAD:
                return None
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return None
        method, target, _version = parts
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        if length < 0 or length > MAX_BODY:
            return None
        while len(rest) < length:
            data = self.sock.recv(65536)
            if not data:
                return None
            rest += data
        body, self.buf = rest[:length], rest[length:]
        return method, target.split("?", 1)[0], headers, body

    def serve(self) -> None:
        try:
            while True:
                request = self.read_request()
                if request is None:
                    return
                method, path, headers, body = request
                close = headers.get("connection", "").lower() == "close"
                if path == "/api/realtime" and method == "GET":
                    self.stream()
                    return
                if path == "/api/realtime" and method == "POST":
                    reply = self.subscribe(body)
                elif path == "/notify" and method == "POST":
                    reply = self.notify(body)
                elif path == "/stats" and method == "GET":
                    reply = ("200 OK", json.dumps({"clients": len(self.broker.clients)}).encode())
                else:
                    reply = ("404 Not Found", b'{"data":{},"message":"Not found.","status":404}')
                status, payload = reply
                self.sock.sendall(respond(status, payload, None if status.startswith("204") else "application/json", close))
                if close:
                    return
        except OSError:
            return
        finally:
            self.sock.close()

    def stream(self) -> None:
        cid = "".join(secrets.choice(ALPHABET) for _ in range(40))
        client = Client(cid, self.sock, self.ip)
        self.broker.register(client)
        try:
            event = b"id:%s\nevent:PB_CONNECT\ndata:{\"clientId\":\"%s\"}\n\n" % (cid.encode(), cid.encode())
            self.sock.sendall(STREAM_HEAD + chunk(event))
            while self.sock.recv(4096):  # only EOF (or an error) ends the stream
                pass
        except OSError:
            pass
        finally:
            self.broker.unregister(client)

    def subscribe(self, body: bytes) -> tuple[str, bytes]:
        try:
            request = json.loads(body)
            cid = request["clientId"]
            subscriptions = request.get("subscriptions") or []
            if not isinstance(cid, str) or not isinstance(subscriptions, list):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return "400 Bad Request", b'{"data":{},"message":"Something went wrong while processing your request.","status":400}'
        client = self.broker.clients.get(cid)
        if client is None:
            return "404 Not Found", b'{"data":{},"message":"Missing or invalid client id.","status":404}'
        if client.ip != self.ip:
            return "400 Bad Request", b'{"data":{},"message":"Invalid realtime client.","status":400}'
        self.broker.set_subscriptions(client, [s for s in subscriptions if isinstance(s, str)])
        return "204 No Content", b""

    def notify(self, body: bytes) -> tuple[str, bytes]:
        try:
            request = json.loads(body)
            topic = request["topic"]
            if not isinstance(topic, str) or "\n" in topic or "\r" in topic:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return "400 Bad Request", b'{"data":{},"message":"Expected {\\"topic\\": str, \\"data\\": any}.","status":400}'
        delivered = self.broker.notify(topic, request.get("data"))
        return "200 OK", json.dumps({"delivered": delivered}).encode()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--backlog", type=int, default=2048)
    args = parser.parse_args(argv)
    limit = raise_nofile_limit()
    broker = ThinBroker()

    def handle(sock: gsocket.socket, addr: tuple[str, int]) -> None:
        Connection(broker, sock, addr).serve()

    listener = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_STREAM)
    listener.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(args.backlog)
    server = StreamServer(listener, handle)
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, server.stop, 1)  # runs in a new greenlet, not in the handler
    print(f"thin_server listening on {args.host}:{args.port} (RLIMIT_NOFILE soft={limit})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
