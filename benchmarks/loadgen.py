"""Load generator: thousands of PocketBase-protocol SSE clients in one gevent process.

    python -m benchmarks.loadgen --port 8090 --server-pid 1234 --clients 10000 --rounds 5 --out r.json
    python -m benchmarks.loadgen --port 8090 --server-pid 1234 --mode throughput --clients 1000 \\
        --rate 60 --duration 10 --out t.json
    python -m benchmarks.loadgen --port 8090 --server-pid 1234 --mode records --topic 'posts/*' \\
        --clients 10000 --rounds 5 --out c.json

Every client does what the SDK does: ``GET /api/realtime`` (HTTP/1.1, chunked), read the
``PB_CONNECT`` event and take the client id from its ``id:`` line, then ``POST /api/realtime``
``{"clientId", "subscriptions": [TOPIC]}`` (``--topic``, default ``bench``) from the same
source address (PocketBase binds a client to the IP its stream came from) and expect 204. Streams are spread over several
127.0.0.x source addresses (``IP_BIND_ADDRESS_NO_PORT``, so each address has its own
ephemeral port range).

Phases, each bounded in time:

- warm-up: a few clients connect, get one message, disconnect; then the server's RSS is read.
- connect: N clients connect + subscribe, ``--concurrency`` at a time; clients/s, per-client
  latency, the load generator's CPU (to show when it, not the server, is the limit).
- memory: the server's RSS growth / N after the streams sat idle for ``--settle`` seconds.
- fan-out (``--mode fanout``): ``--rounds`` broadcasts (after one warm-up broadcast) of a
  100-byte JSON payload via ``POST /notify``. The clock starts just before the request is
  written; each client's time is when its event was complete in the receive buffer. Per round:
  time to the last client, median client, the ``/notify`` response time, server CPU seconds
  (``/proc/<pid>/stat``), load generator CPU; and that every client got it exactly once, with
  its own id, the event name ``bench`` and a 100-byte data line.
- record events (``--mode records``): the same rounds, but the trigger is a record create,
  ``POST --trigger`` (default ``/api/collections/<collection>/records``, the collection being
  the part of ``--topic`` before ``/``) with the 100-byte ``{"seq", "pad"}`` as the record's
  fields, and each subscriber of ``--topic`` (e.g. ``posts/*``) must get exactly one event named
  after its key whose data is ``{"action": "create", "record": {...}}`` with the round's ``seq``,
  the collection's name and the id the create answered. The hot path only timestamps and reads
  ``seq``; the JSON of every event is checked after the round, and an event that fails the check
  counts as not received. Per round: time to the first client, the median and the last, the
  create's response time and the server CPU of the round (one create event).
- throughput (``--mode throughput``): ``/notify`` at ``--rate`` per second for ``--duration``
  seconds (each on its own connection, on schedule, without waiting for the previous one);
  lag = receive time - scheduled send time, p50/p99/max; every client must get every sequence
  number; server CPU seconds per delivery.
- profile (``--profile-out``): after the fan-out rounds, run ``py-spy record`` on the server
  pid during ``--profile-rounds`` more broadcasts.

Receiving does not use one greenlet per stream: after the connect phase every stream socket gets
a libev io watcher on the gevent hub whose callback reads, de-chunks and timestamps in place.
That keeps the generator's cost per event at a few microseconds (no greenlet switches), so that a
single generator process can take 15,000 events in a burst without becoming the bottleneck.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import socket
import statistics
import sys
import time
from array import array
from typing import Any, Callable

import gevent
import gevent.event
import gevent.pool
import gevent.subprocess
from gevent import socket as gsocket

TOPIC = "bench"
PAYLOAD_BYTES = 100
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
SEQ_RE = re.compile(rb'"seq":(\d+)')
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
perf = time.perf_counter


# -- /proc readings ------------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process *pid* (all its threads)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_rss(pid: int) -> int:
    """Resident set size of *pid* in bytes."""
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def system_busy() -> float:
    """CPU seconds the machine's processes spent so far (``/proc/stat`` user+nice+system+steal, all cores).

    Interrupt and softirq time are left out: loopback TCP work for our own sockets lands there.
    """
    with open("/proc/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (fields[0] + fields[1] + fields[2] + fields[7]) / CLOCK_TICKS


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raise_nofile_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def payload(seq: int) -> dict[str, Any]:
    """The message data for *seq*: compact JSON of exactly PAYLOAD_BYTES bytes."""
    base = len(json.dumps({"seq": seq, "pad": ""}, separators=(",", ":")))
    return {"seq": seq, "pad": "x" * (PAYLOAD_BYTES - base)}


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(q / 100.0 * (len(ordered) - 1)))))
    return ordered[k]


# -- HTTP helpers ----------------------------------------------------------------------------------


class HttpError(Exception):
    pass


def new_socket(source: str) -> gsocket.socket:
    sock = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    sock.bind((source, 0))
    return sock


def read_response(sock: gsocket.socket, buf: bytes = b"") -> tuple[int, bytes]:
    """Read one HTTP response (Content-Length, chunked or until EOF); return (status, body)."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise HttpError(f"connection closed before the response head ({buf[:80]!r})")
        buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if status in (204, 304):
        return status, b""
    if b"content-length" in headers:
        length = int(headers[b"content-length"])
        while len(body) < length:
            data = sock.recv(65536)
            if not data:
                raise HttpError("connection closed inside the body")
            body += data
        return status, body[:length]
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while not body.endswith(b"0\r\n\r\n"):
            data = sock.recv(65536)
            if not data:
                break
            body += data
        return status, dechunk_all(body)
    while True:
        data = sock.recv(65536)
        if not data:
            return status, body
        body += data


def dechunk_all(body: bytes) -> bytes:
    out, pos = [], 0
    while True:
        nl = body.index(b"\r\n", pos)
        size = int(body[pos:nl].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(body[nl + 2 : nl + 2 + size])
        pos = nl + 2 + size + 2


def request_bytes(method: str, path: str, host: str, body: bytes | None = None, close: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


# -- one SSE stream --------------------------------------------------------------------------------


class Stream:
    """One SSE connection: socket, id, incremental de-chunking and SSE event splitting."""

    __slots__ = ("idx", "source", "sock", "fd", "cid", "event_prefix", "raw", "left", "sse", "chunked",
                 "watcher", "last_seq", "closed")

    def __init__(self, idx: int, source: str, sock: gsocket.socket) -> None:
        self.idx = idx
        self.source = source
        self.sock = sock
        self.fd = sock.fileno()
        self.cid = ""
        self.event_prefix = b""
        self.raw = b""
        self.left = 0
        self.sse = b""
        self.chunked = True
        self.watcher: Any = None
        self.last_seq = -1
        self.closed = False

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the SSE events (without the blank line) now complete."""
        if not self.chunked:
            body = self.sse + data
        elif not self.raw and not self.left:
            # Fast path: the read holds exactly one whole chunk (the usual case).
            nl = data.find(b"\r\n")
            size = int(data[:nl], 16) if nl > 0 else -1
            if size > 0 and len(data) == nl + size + 4 and data.endswith(b"\r\n"):
                body = self.sse + data[nl + 2 : nl + 2 + size]
            else:
                body = self.sse + self._dechunk(data)
        else:
            body = self.sse + self._dechunk(self.raw + data)
        if b"\n\n" not in body:
            self.sse = body
            return []
        parts = body.split(b"\n\n")
        self.sse = parts.pop()
        return parts

    def _dechunk(self, buf: bytes) -> bytes:
        out, pos, end = [], 0, len(buf)
        self.raw = b""
        while pos < end:
            if self.left == 0:
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    self.raw = buf[pos:]
                    break
                line = buf[pos:nl]
                pos = nl + 2
                if not line:  # the CRLF that closes a chunk's data
                    continue
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    self.closed = True
                    break
                self.left = size
            else:
                take = min(self.left, end - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self.left -= take
        return b"".join(out)


class LoadGen:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.topic: str = args.topic
        self.collection = self.topic.partition("/")[0]
        self.records = args.mode == "records"
        self.trigger_path: str = args.trigger or (
            f"/api/collections/{self.collection}/records" if self.records else "/notify")
        self.host = args.host
        self.port = args.port
        self.hostport = f"{args.host}:{args.port}"
        self.pid = args.server_pid
        self.sources = [f"127.0.0.{i}" for i in range(2, 2 + args.sources)]
        self.hub = gevent.get_hub()
        self.streams: list[Stream] = []
        self.on_event: Callable[[Stream, bytes, float], None] | None = None
        self.stream_errors = 0
        self.unexpected_events = 0

    # -- plain requests --------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, source: str = "127.0.0.1",
                timeout: float = 60.0) -> tuple[int, bytes]:
        raw = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        with gevent.Timeout(timeout):
            sock = new_socket(source)
            try:
                sock.connect((self.host, self.port))
                sock.sendall(request_bytes(method, path, self.hostport, raw))
                return read_response(sock)
            finally:
                sock.close()

    def server_clients(self) -> int:
        status, body = self.request("GET", "/stats", timeout=10)
        if status != 200:
            raise HttpError(f"/stats answered {status}")
        return int(json.loads(body)["clients"])

    def wait_server_clients(self, expected: int, timeout: float) -> float | None:
        start = perf()
        while perf() - start < timeout:
            try:
                if self.server_clients() == expected:
                    return perf() - start
            except (OSError, HttpError, gevent.Timeout):
                pass
            gevent.sleep(0.1)
        return None

    # -- connect + subscribe ---------------------------------------------------------------------

    def open_stream(self, idx: int) -> tuple[Stream, float]:
        source = self.sources[idx % len(self.sources)]
        start = perf()
        with gevent.Timeout(self.args.connect_timeout):
            sock = new_socket(source)
            stream = Stream(idx, source, sock)
            try:
                sock.connect((self.host, self.port))
                sock.sendall(
                    f"GET /api/realtime HTTP/1.1\r\nHost: {self.hostport}\r\nAccept: text/event-stream\r\n"
                    f"Cache-Control: no-cache\r\n\r\n".encode()
                )
                buf = b""
                while b"\r\n\r\n" not in buf:
                    data = sock.recv(65536)
                    if not data:
                        raise HttpError("stream closed before its head")
                    buf += data
                head, _, rest = buf.partition(b"\r\n\r\n")
                if head.split(b" ", 2)[1] != b"200":
                    raise HttpError(f"GET /api/realtime: {head[:60]!r}")
                lowered = head.lower()
                if b"content-type: text/event-stream" not in lowered:
                    raise HttpError("stream without Content-Type: text/event-stream")
                stream.chunked = b"transfer-encoding: chunked" in lowered
                events = stream.feed(rest)
                while not events:
                    data = sock.recv(65536)
                    if not data:
                        raise HttpError("stream closed before PB_CONNECT")
                    events = stream.feed(data)
                lines = events[0].split(b"\n")
                if len(lines) < 3 or not lines[0].startswith(b"id:") or lines[1] != b"event:PB_CONNECT":
                    raise HttpError(f"first event is not PB_CONNECT: {events[0][:100]!r}")
                stream.cid = lines[0][3:].decode()
                stream.event_prefix = b"id:" + lines[0][3:] + b"\nevent:" + self.topic.encode() + b"\ndata:"
                body = {"clientId": stream.cid, "subscriptions": [self.topic]}
                status, reply = self.request("POST", "/api/realtime", body, source=source,
                                             timeout=self.args.connect_timeout)
                if status != 204:
                    raise HttpError(f"subscription POST answered {status}: {reply[:100]!r}")
            except BaseException:
                sock.close()
                raise
        return stream, perf() - start

    def connect_all(self, n: int, first_idx: int = 0) -> dict[str, Any]:
        pool = gevent.pool.Pool(min(n, self.args.concurrency))
        latencies: list[float] = []
        errors: list[str] = []
        opened: list[Stream] = []

        def one(idx: int) -> None:
            try:
                stream, latency = self.open_stream(idx)
            except (OSError, HttpError, ValueError, IndexError, gevent.Timeout) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            opened.append(stream)
            latencies.append(latency)

        cpu0, scpu0, sys0, start = self_cpu(), proc_cpu(self.pid), system_busy(), perf()
        deadline = start + self.args.connect_timeout + n / 200.0
        for idx in range(first_idx, first_idx + n):
            if perf() > deadline:
                errors.append("connect phase deadline passed")
                break
            pool.spawn(one, idx)
        pool.join(timeout=max(1.0, deadline - perf()))
        pool.kill(block=True, timeout=5)
        elapsed = perf() - start
        cpu = self_cpu() - cpu0
        server_cpu = proc_cpu(self.pid) - scpu0
        other = system_busy() - sys0 - cpu - server_cpu
        opened.sort(key=lambda s: s.idx)
        self.streams.extend(opened)
        return {
            "clients": n,
            "ok": len(opened),
            "errors": len(errors),
            "error_samples": sorted(set(errors))[:5],
            "seconds": elapsed,
            "rate": len(opened) / elapsed if elapsed > 0 else None,
            "latency_ms": {
                "p50": 1000 * (pct(latencies, 50) or 0),
                "p99": 1000 * (pct(latencies, 99) or 0),
                "max": 1000 * max(latencies, default=0),
            },
            "concurrency": min(n, self.args.concurrency),
            "loadgen_cpu_s": cpu,
            "loadgen_cpu_util": cpu / elapsed if elapsed > 0 else None,
            "server_cpu_s": server_cpu,
            "other_cpu_util": max(0.0, other / elapsed) if elapsed > 0 else None,
        }

    # -- receiving -------------------------------------------------------------------------------

    def _readable(self, stream: Stream) -> None:
        try:
            data = os.read(stream.fd, 262144)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        now = perf()
        if not data:
            self._stream_gone(stream)
            return
        try:
            events = stream.feed(data)
        except ValueError:
            self.stream_errors += 1
            self._stream_gone(stream)
            return
        on_event = self.on_event
        for event in events:
            if on_event is None:
                self.unexpected_events += 1
            else:
                on_event(stream, event, now)
        if stream.closed:
            self._stream_gone(stream)

    def _stream_gone(self, stream: Stream) -> None:
        if stream.watcher is not None:
            stream.watcher.stop()
            stream.watcher = None
        self.stream_errors += 1  # a stream must not end while the generator holds it
        stream.closed = True

    def watch_all(self) -> None:
        for stream in self.streams:
            if stream.watcher is None and not stream.closed:
                watcher = self.hub.loop.io(stream.fd, 1)
                watcher.start(self._readable, stream)
                stream.watcher = watcher

    def close_all(self) -> dict[str, Any]:
        for stream in self.streams:
            if stream.watcher is not None:
                stream.watcher.stop()
                stream.watcher = None
            stream.sock.close()
        n = len(self.streams)
        self.streams = []
        took = self.wait_server_clients(0, timeout=max(10.0, n / 500.0))
        return {"closed": n, "server_unregistered_all_s": took}

    def parse_seq(self, stream: Stream, event: bytes) -> int | None:
        """The seq of a ``bench`` event for this stream; None (and counted) if it is malformed.

        In the records mode the data is a record event of any length (checked in full after the
        round, :meth:`check_record`); here only its prefix and ``seq``.
        """
        prefix = stream.event_prefix
        if not event.startswith(prefix) or (not self.records and len(event) - len(prefix) != PAYLOAD_BYTES):
            self.unexpected_events += 1
            return None
        match = SEQ_RE.search(event, len(prefix))
        if match is None:
            self.unexpected_events += 1
            return None
        return int(match.group(1))

    def check_record(self, event: bytes, prefix: bytes, seq: int, record_id: Any) -> bool:
        """True when *event*'s data is the ``create`` of this round's record: ``seq``, this
        collection's name and the id the create answered (when it answered one)."""
        try:
            data = json.loads(event[len(prefix):])
        except ValueError:
            return False
        record = data.get("record") if isinstance(data, dict) else None
        return (isinstance(record, dict) and data.get("action") == "create" and record.get("seq") == seq
                and record.get("collectionName") == self.collection and isinstance(record.get("id"), str)
                and record_id in (None, record["id"]))

    # -- triggers --------------------------------------------------------------------------------

    def post_timed(self, body: Any, started: list[float], result: dict[str, Any]) -> tuple[int, Any] | None:
        """POST *body* to the trigger path; started[0] = clock just before the request is written.

        Sets ``notify_ms`` (until the response was read) and ``status`` in *result* and returns
        (status, decoded JSON reply or None); on a failure sets ``notify_error`` and returns None.
        """
        raw = json.dumps(body, separators=(",", ":")).encode()
        try:
            with gevent.Timeout(self.args.round_timeout):
                sock = new_socket("127.0.0.1")
                try:
                    sock.connect((self.host, self.port))
                    started[0] = perf()
                    sock.sendall(request_bytes("POST", self.trigger_path, self.hostport, raw))
                    status, reply = read_response(sock)
                finally:
                    sock.close()
            result["notify_ms"] = 1000 * (perf() - started[0])
            result["status"] = status
            return status, json.loads(reply) if status == 200 else None
        except (OSError, HttpError, ValueError, gevent.Timeout) as exc:
            result["notify_error"] = f"{type(exc).__name__}: {exc}"
            return None

    def notify(self, seq: int, started: list[float], result: dict[str, Any]) -> None:
        """POST /notify for *seq*; started[0] = clock just before the request is written."""
        answer = self.post_timed({"topic": self.topic, "data": payload(seq)}, started, result)
        if answer is not None:
            result["delivered_reported"] = answer[1].get("delivered") if answer[0] == 200 else None

    def create(self, seq: int, started: list[float], result: dict[str, Any]) -> None:
        """Create the record ``{"seq": seq, "pad": ...}`` (records mode); keeps the answered id."""
        answer = self.post_timed(payload(seq), started, result)
        if answer is None:
            return
        if answer[0] != 200 or not isinstance(answer[1], dict):
            result["notify_error"] = f"the create answered {answer[0]}"
            return
        result["record_id"] = answer[1].get("id")

    # -- fan-out ---------------------------------------------------------------------------------

    def broadcast_round(self, seq: int) -> dict[str, Any]:
        n = len(self.streams)
        times = array("d", bytes(8 * n))
        seen = bytearray(n)
        counts = {"received": 0, "duplicates": 0, "stale": 0}
        done = gevent.event.Event()
        index = {s.idx: i for i, s in enumerate(self.streams)}
        kept: list[bytes] | None = [b""] * n if self.records else None  # checked after the round

        def on_event(stream: Stream, event: bytes, now: float) -> None:
            got = self.parse_seq(stream, event)
            if got is None:
                return
            if got != seq:
                counts["stale"] += 1
                return
            i = index[stream.idx]
            if seen[i]:
                counts["duplicates"] += 1
                return
            seen[i] = 1
            times[i] = now
            if kept is not None:
                kept[i] = event
            counts["received"] += 1
            if counts["received"] == n:
                done.set()

        self.on_event = on_event
        started = [0.0]
        result: dict[str, Any] = {"seq": seq}
        scpu0, cpu0, sys0, wall0 = proc_cpu(self.pid), self_cpu(), system_busy(), time.time()
        sender = gevent.spawn(self.create if self.records else self.notify, seq, started, result)
        done.wait(timeout=self.args.round_timeout + n / 500.0)
        end = perf()
        sender.join(timeout=10)
        scpu1, cpu1, sys1, wall1 = proc_cpu(self.pid), self_cpu(), system_busy(), time.time()
        self.on_event = None
        if kept is not None:
            invalid = 0
            for i, stream in enumerate(self.streams):
                if seen[i] and not self.check_record(kept[i], stream.event_prefix, seq, result.get("record_id")):
                    seen[i] = 0  # a wrong event is not the create
                    invalid += 1
            counts["received"] -= invalid
            result["invalid_records"] = invalid
        t0 = started[0]
        got = sorted(times[i] - t0 for i in range(n) if seen[i])
        wall = max(end - t0, 1e-9)
        result.update(
            clients=n,
            received=counts["received"],
            missing=n - counts["received"],
            duplicates=counts["duplicates"],
            stale=counts["stale"],
            all_received=counts["received"] == n,
            first_ms=1000 * got[0] if got else None,
            p50_ms=1000 * statistics.median(got) if got else None,
            p99_ms=1000 * (pct(got, 99) or 0) if got else None,
            last_ms=1000 * got[-1] if got else None,
            wall_start=wall0,
            wall_end=wall1,
            server_cpu_s=scpu1 - scpu0,
            server_cpu_util=(scpu1 - scpu0) / wall,
            loadgen_cpu_s=cpu1 - cpu0,
            loadgen_cpu_util=(cpu1 - cpu0) / wall,
            other_cpu_util=max(0.0, ((sys1 - sys0) - (scpu1 - scpu0) - (cpu1 - cpu0)) / max(wall1 - wall0, 1e-9)),
        )
        return result

    def run_rounds(self, first_seq: int, rounds: int, warmup: bool) -> list[dict[str, Any]]:
        results = []
        for i in range(rounds):
            result = self.broadcast_round(first_seq + i)
            result["warmup"] = warmup
            results.append(result)
            gevent.sleep(self.args.gap)
        return results

    # -- throughput ------------------------------------------------------------------------------

    def throughput(self) -> dict[str, Any]:
        n = len(self.streams)
        rate, total = self.args.rate, int(round(self.args.rate * self.args.duration))
        lags = array("d", bytes(8 * n * total))
        seen = bytearray(n * total)
        sched = array("d", bytes(8 * total))
        counts = {"received": 0, "duplicates": 0, "out_of_order": 0, "bad_seq": 0}
        expected = n * total
        done = gevent.event.Event()
        index = {s.idx: i for i, s in enumerate(self.streams)}
        for stream in self.streams:
            stream.last_seq = -1

        def on_event(stream: Stream, event: bytes, now: float) -> None:
            got = self.parse_seq(stream, event)
            if got is None:
                return
            if not 0 <= got < total:
                counts["bad_seq"] += 1
                return
            slot = index[stream.idx] * total + got
            if seen[slot]:
                counts["duplicates"] += 1
                return
            seen[slot] = 1
            lags[slot] = now - sched[got]
            if got < stream.last_seq:
                counts["out_of_order"] += 1
            stream.last_seq = got
            counts["received"] += 1
            if counts["received"] == expected:
                done.set()

        self.on_event = on_event
        notify_results: list[dict[str, Any]] = []
        senders = gevent.pool.Group()
        scpu0, cpu0, sys0, wall0 = proc_cpu(self.pid), self_cpu(), system_busy(), time.time()
        start = perf() + 0.05
        for seq in range(total):
            target = start + seq / rate
            delay = target - perf()
            if delay > 0:
                gevent.sleep(delay)
            sched[seq] = target
            result: dict[str, Any] = {"seq": seq}
            notify_results.append(result)
            senders.spawn(self.notify, seq, [0.0], result)
        sent_end = perf()
        done.wait(timeout=self.args.round_timeout)
        end = perf()
        senders.join(timeout=10)
        scpu1, cpu1, sys1, wall1 = proc_cpu(self.pid), self_cpu(), system_busy(), time.time()
        self.on_event = None
        got = sorted(lags[i] for i in range(n * total) if seen[i])
        wall = end - start
        server_cpu = scpu1 - scpu0
        notify_ms = [r["notify_ms"] for r in notify_results if "notify_ms" in r]
        return {
            "clients": n,
            "rate": rate,
            "messages": total,
            "expected_deliveries": expected,
            "received": counts["received"],
            "missing": expected - counts["received"],
            "all_received": counts["received"] == expected,
            "duplicates": counts["duplicates"],
            "out_of_order": counts["out_of_order"],
            "bad_seq": counts["bad_seq"],
            "notify_errors": sum(1 for r in notify_results if "notify_error" in r),
            "notify_error_samples": sorted({r["notify_error"] for r in notify_results if "notify_error" in r})[:3],
            "notify_ms_p50": pct(notify_ms, 50),
            "notify_ms_p99": pct(notify_ms, 99),
            "send_span_s": sent_end - start,
            "wall_s": wall,
            "lag_ms_p50": 1000 * pct(got, 50) if got else None,
            "lag_ms_p99": 1000 * pct(got, 99) if got else None,
            "lag_ms_max": 1000 * got[-1] if got else None,
            "server_cpu_s": server_cpu,
            "server_cpu_util": server_cpu / wall,
            "server_cpu_us_per_delivery": 1e6 * server_cpu / max(1, counts["received"]),
            "loadgen_cpu_s": cpu1 - cpu0,
            "loadgen_cpu_util": (cpu1 - cpu0) / wall,
            "other_cpu_util": max(0.0, ((sys1 - sys0) - server_cpu - (cpu1 - cpu0)) / max(wall1 - wall0, 1e-9)),
            "wall_start": wall0,
            "wall_end": wall1,
        }

    # -- profiling -------------------------------------------------------------------------------

    def profile(self, first_seq: int) -> list[dict[str, Any]]:
        """One ``py-spy record`` pass per format in ``--profile-formats``, each over its own rounds."""
        args = self.args
        passes = []
        seq = first_seq
        for fmt in args.profile_formats.split(","):
            output = f"{args.profile_out}.{ {'raw': 'txt', 'flamegraph': 'svg'}.get(fmt, 'json') }"
            command = [args.py_spy, "record", "--pid", str(self.pid), "--rate", str(args.profile_rate),
                       "--format", fmt, "--output", output]
            proc = gevent.subprocess.Popen(command, stdout=gevent.subprocess.PIPE,
                                           stderr=gevent.subprocess.STDOUT)
            gevent.sleep(1.5)  # let py-spy attach
            if proc.poll() is not None:
                passes.append({"format": fmt, "error": f"py-spy exited early ({proc.returncode}): "
                                                      f"{proc.stdout.read()[-500:]!r}"})
                continue
            rounds = self.run_rounds(seq, args.profile_rounds, warmup=False)
            seq += args.profile_rounds
            proc.send_signal(signal.SIGINT)
            try:
                text, _ = proc.communicate(timeout=60)
            except gevent.subprocess.TimeoutExpired:
                proc.kill()
                text, _ = proc.communicate()
            passes.append({
                "format": fmt,
                "output": output,
                "command": command,
                "returncode": proc.returncode,
                "py_spy_output": text.decode(errors="replace")[-1000:],
                "rounds": rounds,
            })
        return passes


    def profile_connect(self, n: int) -> dict[str, Any]:
        """``py-spy record`` (raw) while *n* more clients connect and subscribe (after the measurements)."""
        args = self.args
        output = f"{args.profile_out}-connect.txt"
        command = [args.py_spy, "record", "--pid", str(self.pid), "--rate", str(args.profile_rate),
                   "--format", "raw", "--output", output]
        proc = gevent.subprocess.Popen(command, stdout=gevent.subprocess.PIPE, stderr=gevent.subprocess.STDOUT)
        gevent.sleep(1.5)
        if proc.poll() is not None:
            return {"error": f"py-spy exited early ({proc.returncode})"}
        connect = self.connect_all(n, first_idx=2000000)
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=60)
        except gevent.subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        return {"output": output, "command": command, "returncode": proc.returncode, "connect": connect}


def summarize_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    measured = [r for r in rounds if not r.get("warmup")]
    lasts = [r["last_ms"] for r in measured if r.get("last_ms") is not None and r["all_received"]]
    return {
        "rounds": len(measured),
        "all_received": bool(measured) and all(r["all_received"] for r in measured),
        "last_ms_median": statistics.median(lasts) if lasts else None,
        "last_ms_min": min(lasts, default=None),
        "last_ms_max": max(lasts, default=None),
        "first_ms_median": statistics.median([r["first_ms"] for r in measured if r.get("first_ms") is not None] or [0]),
        "p50_ms_median": statistics.median([r["p50_ms"] for r in measured if r.get("p50_ms") is not None] or [0]),
        "notify_ms_median": statistics.median([r.get("notify_ms", 0) for r in measured] or [0]),
        "server_cpu_s_median": statistics.median([r["server_cpu_s"] for r in measured] or [0]),
        "loadgen_cpu_util_median": statistics.median([r["loadgen_cpu_util"] for r in measured] or [0]),
        "server_cpu_util_median": statistics.median([r["server_cpu_util"] for r in measured] or [0]),
        "other_cpu_util_median": statistics.median([r["other_cpu_util"] for r in measured] or [0]),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.time()
    limit = raise_nofile_limit()
    gen = LoadGen(args)
    out: dict[str, Any] = {
        "server": args.label, "mode": args.mode, "clients": args.clients, "port": args.port,
        "server_pid": args.server_pid, "sources": gen.sources, "loadgen_nofile": limit,
        "payload_bytes": PAYLOAD_BYTES, "topic": gen.topic, "trigger": gen.trigger_path,
    }
    # warm-up: a few clients, one message each, then gone; the RSS baseline is taken after it
    warm = gen.connect_all(min(20, args.clients))
    gen.watch_all()
    warm_round = gen.broadcast_round(0)
    gen.close_all()
    out["warmup"] = {"connect_ok": warm["ok"], "all_received": warm_round["all_received"]}
    gevent.sleep(args.settle / 2)
    rss_before = proc_rss(args.server_pid)

    out["connect"] = gen.connect_all(args.clients, first_idx=1000000)
    out["server_clients_after_connect"] = gen.server_clients()
    gevent.sleep(args.settle)
    rss_after = proc_rss(args.server_pid)
    ok = out["connect"]["ok"]
    out["memory"] = {
        "rss_before": rss_before,
        "rss_after": rss_after,
        "streams": ok,
        "per_stream_bytes": (rss_after - rss_before) / ok if ok else None,
    }
    gen.watch_all()
    if args.mode in ("fanout", "records"):
        rounds = gen.run_rounds(1, 1, warmup=True) + gen.run_rounds(2, args.rounds, warmup=False)
        out["rounds"] = rounds
        out["summary"] = summarize_rounds(rounds)
        if args.profile_out and args.mode == "fanout":
            out["profile"] = gen.profile(2 + args.rounds)
            if args.profile_connect:
                gen.close_all()
                out["profile_connect"] = gen.profile_connect(args.profile_connect)
    else:
        out["throughput"] = gen.throughput()
    out["stream_errors"] = gen.stream_errors
    out["unexpected_events"] = gen.unexpected_events
    out["teardown"] = gen.close_all()
    out["elapsed_s"] = time.time() - started
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="PocketBase-protocol SSE load generator (gevent)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server-pid", type=int, required=True, help="pid whose RSS/CPU is measured")
    parser.add_argument("--label", default="server")
    parser.add_argument("--mode", choices=("fanout", "throughput", "records"), default="fanout")
    parser.add_argument("--topic", default=TOPIC,
                        help="the subscription key every client holds (and its events' name), e.g. 'posts/*'")
    parser.add_argument("--trigger", default=None,
                        help="path POSTed to make an event (default /notify; records: "
                             "/api/collections/<collection of --topic>/records)")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between broadcasts")
    parser.add_argument("--settle", type=float, default=2.0, help="idle seconds before reading RSS")
    parser.add_argument("--concurrency", type=int, default=500, help="clients connecting at once")
    parser.add_argument("--sources", type=int, default=8, help="number of 127.0.0.x source addresses")
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    parser.add_argument("--round-timeout", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=60.0, help="throughput: notifies per second")
    parser.add_argument("--duration", type=float, default=10.0, help="throughput: seconds of sending")
    parser.add_argument("--profile-out", default=None, help="run py-spy during extra rounds; output path prefix (.txt/.svg added)")
    parser.add_argument("--profile-rounds", type=int, default=10)
    parser.add_argument("--profile-connect", type=int, default=0,
                        help="with --profile-out: afterwards profile this many more connects (PREFIX-connect.txt)")
    parser.add_argument("--profile-rate", type=int, default=250)
    parser.add_argument("--profile-formats", default="raw,flamegraph",
                        help="py-spy output formats, one recording pass (and set of rounds) each")
    parser.add_argument("--py-spy", default="py-spy")
    parser.add_argument("--out", default="-", help="JSON result file ('-' = stdout)")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="hard stop for the whole run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with gevent.Timeout(args.max_seconds, TimeoutError(f"load generator exceeded {args.max_seconds}s")):
        result = run(args)
    text = json.dumps(result, indent=1)
    if args.out == "-":
        print(text)
    else:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
