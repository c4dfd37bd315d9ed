"""Scale-out through the Redis backplane: what routing saves, measured and projected.

    .venv/bin/python -m benchmarks.scale_out [--compare e6b9b2d] [--notifies 2000] [--sequential 50]

Several ``gunicorn -k gevent -w 1`` servers of ``examples.notify_app:app`` (the benchmark runner's
command, ``benchmarks/gunicorn_conf.py``) on one throwaway ``redis-server``, all on loopback.
The library is measured as it is in the work tree (copied once at the start, so edits made while
the run goes on do not leak in); ``--compare REF`` measures the library as committed at REF
(``git archive``) too, in the same run, with the same method.

1. **Copies per message** (4 processes). Each process holds one stream, signed in as its own user
   and subscribed to ``user/<id>`` and ``news``. Redis's ``MONITOR`` records every ``PUBLISH``
   (its channel) during a window; copies = the sum over those publishes of ``PUBSUB NUMSUB`` of
   their channel (what ``PUBLISH`` returns), messages = the publishes (checked against
   ``INFO commandstats`` ``cmdstat_publish`` calls) — the same for both designs. Where the library
   has it, the sum of every process's ``backplane_received_total`` is checked against the copies.
   (a) ``POST /notify user/u2`` to process 1, the stream on process 2; (b) a subscription POST for
   the client of process 2 sent to process 1 (forwarded: the POST and its reply); (c) ``POST
   /notify news`` to process 1, a subscriber on every process.
2. **Forged client ids** (2 processes A, B): subscription POSTs to A for an id nobody holds —
   random (current code: a route nobody listens on), with A's own route, with B's route
   (B answers 404). Sequential latency (median, p99) and 1,000 POSTs with 200 in flight
   (200 threads, a ``requests`` session each).
3. **Per-process backplane cost** (current code; 2, 4 and 8 processes): every process holds one
   stream subscribed to ``bench``; ``--notifies`` ``POST /notify bench`` to process 1 (4 sender
   threads). Each worker's utime + stime (``/proc/<pid>/stat``; the worker is the gunicorn
   master's only child) over the window / the messages it received (``backplane_received_total``):
   CPU per received message (receive, decode, deliver to its one stream). A notify to a topic
   nobody holds shows what a process pays for messages it does not need. Then 300 subscription
   POSTs for the last process's client sent to process 1 (forwarded) and 300 sent to its own
   process (local), CPU per POST on each side. Redis's own CPU (``INFO cpu``) and output bytes
   (``INFO stats``) per copy. With ``--compare``, the old design's CPU per received message is
   measured on its 4-process cluster of step 1 the same way (received = every publish).
4. **Model**: 1,000,000 connections on 100 processes (assumptions in :data:`MODEL`): messages
   received per process, copies out of Redis, CPU per process, old design vs routing.

Saves benchmarks/results/scale_out.json and scale_out.md. Every socket is loopback.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import redis
import requests

from benchmarks.run import HOST, ROOT, Server
from flask_rtbroker.testing import SSEClient
from tests.redis_server import RedisServer

RESULTS = ROOT / "benchmarks" / "results" / "scale_out.json"
REPORT = RESULTS.with_suffix(".md")
CLK_TCK = os.sysconf("SC_CLK_TCK")
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
ROUTE_LENGTH = 8
ID_LENGTH = 40
USERS = 8
TOKENS = {f"tok-u{k}": f"u{k}" for k in range(1, USERS + 1)}
ROUNDS = 20
"""Operations per case in step 1."""
FORWARDED_POSTS = 300
BURST, IN_FLIGHT = 1000, 200
SENDERS = 4

MODEL: dict[str, Any] = {
    "processes": 100,
    "users_per_process": 10_000,
    "connections": 1_000_000,
    "broadcasts_per_s": 1,
    "targeted_notifies_per_s": 1000,
    "forwarded_posts_per_s": 100,
    "assumptions": [
        "100 processes behind one Redis (one shard), 10,000 connected users each: 1,000,000 connections",
        "one connection per user; each user subscribes to its own topic user/<id> (so a targeted notify "
        "has subscribers on exactly one process) and to one broadcast topic every process holds",
        "cluster-wide per second: 1 broadcast, 1,000 notifies to one user/<id> each, 100 subscription POSTs "
        "that land on a process other than their client's (2 messages each: the POST and its reply)",
        "old design: every message is published on the one channel every process listens on, so every "
        "process receives every message; routing: a broadcast reaches all 100, a targeted notify 1, a forwarded "
        "POST 1 and its reply 1",
        "CPU per received message as measured here (2 shared cores, loopback Redis; schedstat run time): routing "
        "at the mean over 2, 4 and 8 processes of a message delivered to one local stream; the old design at the "
        "old code's own figures: what it needs as a message delivered to one stream, the notifies it does not "
        "need as a notify to a topic it does not hold, other processes' POSTs and replies as its bystanders' "
        "CPU per forwarded-POST message",
        "excluded, the same in both designs: fan-out of a broadcast to the process's own 10,000 streams (the "
        "broadcast benchmark: ~0.3-0.8 s of CPU per 10,000-stream broadcast), HTTP requests, heartbeats, counts",
    ],
}


# -- small helpers -------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    """utime + stime of *pid* (``/proc/<pid>/stat``, all its threads), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_seconds(pid: int) -> float:
    """Time on a CPU of every thread of *pid* (the first field of ``/proc/<pid>/task/*/schedstat``,
    nanoseconds): the same total as utime + stime without its 10 ms ticks."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / 1e9


def random_id(route: str = "") -> str:
    tail = "".join(ALPHABET[b % 62] for b in os.urandom(ID_LENGTH * 2) if b < 248)
    return (route + tail)[:ID_LENGTH]


def snapshot_code(source: Path, dest: Path) -> str:
    """Copy ``flask_rtbroker/`` and ``examples/`` of *source* to *dest*; a digest of what was copied."""
    digest = hashlib.sha256()
    for part in ("flask_rtbroker", "examples"):
        shutil.copytree(source / part, dest / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for path in sorted(dest.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(dest)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def archive_code(ref: str, dest: Path) -> str:
    """The library and examples as committed at *ref*, extracted to *dest*; the full commit id."""
    commit = subprocess.run(["git", "rev-parse", ref], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    archive = subprocess.run(["git", "archive", commit, "flask_rtbroker", "examples"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return commit


# -- Redis side ----------------------------------------------------------------------------------


PUBLISH_LINE = re.compile(rb'\] "publish" "((?:[^"\\]|\\.)*)"', re.IGNORECASE)


class PublishMonitor:
    """Redis ``MONITOR`` during a window: the channel of every ``PUBLISH`` made meanwhile."""

    def __init__(self, port: int, client: redis.Redis) -> None:
        self.port = port
        self.client = client
        self.sock: socket.socket | None = None
        self.publish_calls_before = 0

    def __enter__(self) -> "PublishMonitor":
        self.sock = socket.create_connection((HOST, self.port), timeout=10)
        self.sock.sendall(b"MONITOR\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            reply += self.sock.recv(64)
        assert reply.startswith(b"+OK"), reply
        self.publish_calls_before = publish_calls(self.client)
        return self

    def channels(self) -> tuple[list[str], int]:
        """Stop: the channels published to since the start, and the ``cmdstat_publish`` delta."""
        assert self.sock is not None
        calls = publish_calls(self.client) - self.publish_calls_before
        sentinel = f"scale-out-sentinel-{time.monotonic_ns()}"
        self.client.echo(sentinel)
        data = b""
        while sentinel.encode() not in data:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("MONITOR connection closed")
            data += chunk
        self.sock.close()
        channels = [m.group(1).decode("unicode_escape") for m in PUBLISH_LINE.finditer(data)]
        return channels, calls

    def __exit__(self, *exc: object) -> None:
        if self.sock is not None:
            self.sock.close()


def publish_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_publish", {}).get("calls", 0))


def redis_counters(client: redis.Redis) -> dict[str, float]:
    info = client.info()
    return {"cpu": float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
            "out_bytes": float(info["total_net_output_bytes"]), "publishes": float(publish_calls(client))}


def channel_shape(channel: str, prefix: str) -> str:
    """A published channel without the namespace, the routes and ids blanked: ``p:<route>``, ``t:user/u2``."""
    logical = channel[len(prefix) + 1:] if channel.startswith(prefix + ":") else "(the one channel)"
    if logical.startswith("p:"):
        return "p:<route>"
    return logical


# -- one deployment ------------------------------------------------------------------------------


class Deployment:
    """*n* gunicorn gevent servers of the notify app (library in *code_dir*) on one Redis."""

    def __init__(self, n: int, code_dir: Path, redis_server: RedisServer, tmp: Path, label: str) -> None:
        self.label = label
        env = {"RTBROKER_BACKPLANE": redis_server.url, "RTBROKER_TEST_TOKENS": json.dumps(TOKENS)}
        logs = tmp / f"logs-{label}-{n}-{time.monotonic_ns()}"
        logs.mkdir(parents=True)
        self.servers = [Server("ours", logs, code_dir=code_dir, extra_env=env) for _ in range(n)]
        self.streams: list[SSEClient] = []
        self.sessions = [requests.Session() for _ in range(n)]

    def start(self) -> "Deployment":
        with ThreadPoolExecutor(len(self.servers)) as pool:
            list(pool.map(lambda server: server.start(), self.servers))
        return self

    def url(self, index: int) -> str:
        return f"http://{HOST}:{self.servers[index].port}"

    def stats(self, index: int) -> dict[str, Any]:
        return self.sessions[index].get(f"{self.url(index)}/stats", timeout=10).json()

    def received(self) -> list[int] | None:
        """Every process's ``backplane_received_total``; None when the library lacks it."""
        values = [self.stats(i).get("backplane_received_total") for i in range(len(self.servers))]
        return [int(v) for v in values if v is not None] if all(v is not None for v in values) else None

    def cpu(self) -> tuple[list[float], list[float]]:
        """Every worker's utime + stime and its schedstat run time, in seconds."""
        pids = [server.pid for server in self.servers if server.pid is not None]
        return [cpu_seconds(pid) for pid in pids], [run_seconds(pid) for pid in pids]

    def open_streams(self, subscriptions: Callable[[int], list[str]], signed_in: bool) -> None:
        """One stream per process, subscribed (on its own process) to *subscriptions(k)*."""
        for index, server in enumerate(self.servers):
            stream = SSEClient.connect(HOST, server.port, timeout=10)
            self.streams.append(stream)
            self.subscribe(index, index, stream.client_id, subscriptions(index), signed_in).raise_for_status()

    def subscribe(self, via: int, owner: int, client_id: str, subscriptions: list[str], signed_in: bool,
                  session: requests.Session | None = None) -> requests.Response:
        headers = {"Authorization": f"tok-u{owner + 1}"} if signed_in else {}
        return (session or self.sessions[via]).post(
            f"{self.url(via)}/api/realtime", json={"clientId": client_id, "subscriptions": subscriptions},
            headers=headers, timeout=30)

    def notify(self, via: int, topic: str, data: Any, session: requests.Session | None = None) -> None:
        (session or self.sessions[via]).post(f"{self.url(via)}/notify", json={"topic": topic, "data": data},
                                             timeout=30).raise_for_status()

    def stop(self) -> None:
        for stream in self.streams:
            stream.close()
        for session in self.sessions:
            session.close()
        for server in self.servers:
            server.stop()


def expect_event(stream: SSEClient, name: str, n: int) -> None:
    event = stream.next_event(timeout=10)
    if event.name != name or event.json() != {"n": n}:
        raise RuntimeError(f"expected {name} #{n}, got {event.name} {event.data[:80]}")


# -- step 1: copies per message ------------------------------------------------------------------


def copies_window(dep: Deployment, redis_client: redis.Redis, redis_port: int, prefix: str,
                  action: Callable[[], None]) -> dict[str, Any]:
    before = dep.received()
    with PublishMonitor(redis_port, redis_client) as monitor:
        action()
        time.sleep(0.3)  # let every listener take its copies before the count
        channels, calls = monitor.channels()
    after = dep.received()
    numsub = dict(redis_client.pubsub_numsub(*set(channels))) if channels else {}
    copies = sum(int(numsub[channel.encode()]) for channel in channels)
    shapes: dict[str, int] = {}
    for channel in channels:
        shape = channel_shape(channel, prefix)
        shapes[shape] = shapes.get(shape, 0) + 1
    result: dict[str, Any] = {
        "messages": len(channels),
        "cmdstat_publish_calls": calls,
        "copies": copies,
        "copies_per_message": round(copies / len(channels), 2) if channels else None,
        "published_on": shapes,
        "received_total_delta": None if before is None or after is None else sum(after) - sum(before),
        "received_per_process": None if before is None or after is None else [a - b for a, b in zip(after, before)],
    }
    if calls != len(channels):
        result["warning"] = "MONITOR saw a different number of publishes than cmdstat_publish"
    return result


def step_copies(code_dir: Path, redis_server: RedisServer, tmp: Path, label: str,
                keep: bool) -> tuple[dict[str, Any], Deployment | None]:
    dep = Deployment(4, code_dir, redis_server, tmp, label).start()
    client = redis.Redis(host=HOST, port=redis_server.port)
    prefix = "flask_rtbroker:0"
    failed = True
    try:
        dep.open_streams(lambda k: [f"user/u{k + 1}", "news"], signed_in=True)
        owner = dep.streams[1]
        for warm in range(3):  # every listener up and subscribed
            dep.notify(0, "news", {"n": -1 - warm})
            for stream in dep.streams:
                expect_event(stream, "news", -1 - warm)
        results: dict[str, Any] = {"processes": 4, "rounds": ROUNDS}

        def targeted() -> None:
            for n in range(ROUNDS):
                dep.notify(0, "user/u2", {"n": n})
                expect_event(owner, "user/u2", n)

        def forwarded() -> None:
            for _ in range(ROUNDS):
                answer = dep.subscribe(0, 1, owner.client_id, ["user/u2", "news"], signed_in=True)
                if answer.status_code != 204:
                    raise RuntimeError(f"forwarded POST answered {answer.status_code}: {answer.text[:200]}")

        def broadcast() -> None:
            for n in range(ROUNDS):
                dep.notify(0, "news", {"n": n})
                for stream in dep.streams:
                    expect_event(stream, "news", n)

        for key, action in (("a_targeted_notify", targeted), ("b_forwarded_post", forwarded),
                            ("c_broadcast", broadcast)):
            results[key] = copies_window(dep, client, redis_server.port, prefix, action)
            results[key]["copies_per_operation"] = round(results[key]["copies"] / ROUNDS, 2)
            print(f"[{label}] 4 processes, {key}: {results[key]['copies']} copies / {results[key]['messages']} "
                  f"messages = {results[key]['copies_per_message']} per message ({results[key]['published_on']}); "
                  f"received_total delta {results[key]['received_total_delta']}", flush=True)
        failed = False
        return results, (dep if keep else None)
    finally:
        client.close()
        if failed or not keep:
            dep.stop()


# -- step 2: forged client ids -------------------------------------------------------------------


def forged_posts(dep: Deployment, ids: Callable[[], str], sequential: int) -> dict[str, Any]:
    url = f"{dep.url(0)}/api/realtime"
    statuses: dict[str, int] = {}
    lock = threading.Lock()

    def post(session: requests.Session) -> float:
        started = time.perf_counter()
        answer = session.post(url, json={"clientId": ids(), "subscriptions": ["news"]}, timeout=60)
        elapsed = time.perf_counter() - started
        with lock:
            statuses[str(answer.status_code)] = statuses.get(str(answer.status_code), 0) + 1
        return elapsed

    with requests.Session() as session:
        post(session)  # warm-up
        statuses.clear()
        latencies = [post(session) for _ in range(sequential)]
    local = threading.local()
    sessions: list[requests.Session] = []

    def burst_post(_: int) -> float:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            sessions.append(local.session)
        return post(local.session)

    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        started = time.perf_counter()
        burst = list(pool.map(burst_post, range(BURST)))
        burst_seconds = time.perf_counter() - started
    for session in sessions:
        session.close()
    return {
        "sequential": sequential,
        "median_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
        f"burst_{BURST}_in_flight_{IN_FLIGHT}_s": round(burst_seconds, 2),
        "burst_median_ms": round(statistics.median(burst) * 1000, 1),
        "statuses": statuses,
        "statuses_of": "the sequential POSTs and the burst",
    }


def step_forged(code_dir: Path, redis_server: RedisServer, tmp: Path, label: str, sequential: int,
                routed: bool) -> dict[str, Any]:
    dep = Deployment(2, code_dir, redis_server, tmp, label).start()
    try:
        dep.open_streams(lambda k: ["news"], signed_in=False)
        route_a, route_b = (stream.client_id[:ROUTE_LENGTH] for stream in dep.streams)
        kinds: dict[str, Callable[[], str]] = {"random id": random_id}
        if routed:
            kinds["id with A's own route"] = lambda: random_id(route_a)
            kinds["id with B's route (B answers 404)"] = lambda: random_id(route_b)
        results: dict[str, Any] = {"processes": 2, "posted_to": "A"}
        for kind, ids in kinds.items():
            results[kind] = forged_posts(dep, ids, sequential)
            r = results[kind]
            print(f"[{label}] forged POST, {kind}: median {r['median_ms']} ms, p99 {r['p99_ms']} ms; "
                  f"{BURST} with {IN_FLIGHT} in flight: {r[f'burst_{BURST}_in_flight_{IN_FLIGHT}_s']} s "
                  f"{r['statuses']}", flush=True)
        return results
    finally:
        dep.stop()


# -- step 3: per-process cost --------------------------------------------------------------------


class Drain:
    """Reads every stream on a thread of its own, counting the events named *name*."""

    def __init__(self, streams: list[SSEClient], name: str) -> None:
        self.counts = [0] * len(streams)
        self.name = name
        self.stop = False
        self.threads = [threading.Thread(target=self._read, args=(i, s), daemon=True) for i, s in enumerate(streams)]
        for thread in self.threads:
            thread.start()

    def _read(self, index: int, stream: SSEClient) -> None:
        while not self.stop:
            try:
                event = stream.next_event(timeout=0.5)
            except Exception:  # noqa: BLE001 - timeouts while idle; the stream closing at the end
                if stream.ended:
                    return
                continue
            if event.name == self.name:
                self.counts[index] += 1

    def wait(self, expected: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and min(self.counts) < expected:
            time.sleep(0.05)
        if min(self.counts) < expected:
            raise RuntimeError(f"streams got {self.counts} events, expected {expected} each")

    def close(self) -> None:
        self.stop = True
        for thread in self.threads:
            thread.join(2)


def measure(dep: Deployment, redis_client: redis.Redis, action: Callable[[], None],
            routed: bool) -> dict[str, Any]:
    """CPU of every worker and of Redis, received counts and publishes over *action*."""
    received_before = dep.received() if routed else None
    redis_before = redis_counters(redis_client)
    cpu_before, run_before = dep.cpu()
    action()
    time.sleep(0.2)
    cpu_after, run_after = dep.cpu()
    redis_after = redis_counters(redis_client)
    received_after = dep.received() if routed else None
    publishes = int(redis_after["publishes"] - redis_before["publishes"])
    if routed:
        assert received_before is not None and received_after is not None
        received = [a - b for a, b in zip(received_after, received_before)]
    else:  # one channel: every process receives every publish
        received = [publishes] * len(dep.servers)
    return {
        "cpu_s": [round(a - b, 3) for a, b in zip(cpu_after, cpu_before)],
        "run_s": [round(a - b, 5) for a, b in zip(run_after, run_before)],
        "received": received,
        "publishes": publishes,
        "redis_cpu_s": round(redis_after["cpu"] - redis_before["cpu"], 4),
        "redis_out_bytes": int(redis_after["out_bytes"] - redis_before["out_bytes"]),
    }


def send_notifies(dep: Deployment, topic: str, count: int) -> None:
    def sender(offset: int) -> None:
        with requests.Session() as session:
            for n in range(offset, count, SENDERS):
                dep.notify(0, topic, {"n": n}, session=session)

    with ThreadPoolExecutor(SENDERS) as pool:
        list(pool.map(sender, range(SENDERS)))


def backplane_cost(dep: Deployment, redis_client: redis.Redis, notifies: int, topic: str, routed: bool,
                   label: str) -> dict[str, Any]:
    """CPU per received message (delivered to one stream / not needed) and per forwarded POST."""
    n = len(dep.servers)
    drain = Drain(dep.streams, topic)
    try:
        send_notifies(dep, topic, 20)  # warm-up
        drain.wait(20, 30)
        def deliver_all() -> None:
            send_notifies(dep, topic, notifies)
            drain.wait(20 + notifies, 120)

        delivered = measure(dep, redis_client, deliver_all, routed)
        unneeded = measure(dep, redis_client, lambda: send_notifies(dep, "nobody-holds-this", notifies), routed)
    finally:
        drain.close()
    receivers = range(1, n)

    def per_message(window: dict[str, Any]) -> dict[str, Any]:
        ticks = [window["cpu_s"][i] / window["received"][i] for i in receivers if window["received"][i]]
        precise = [window["run_s"][i] / window["received"][i] for i in receivers if window["received"][i]]
        return {
            "receivers_cpu_per_message_us": [round(v * 1e6, 1) for v in ticks],
            "mean_us": round(statistics.mean(ticks) * 1e6, 1) if ticks else None,
            "receivers_schedstat_per_message_us": [round(v * 1e6, 1) for v in precise],
            "schedstat_mean_us": round(statistics.mean(precise) * 1e6, 1) if precise else None,
            "receivers_cpu_s": [window["cpu_s"][i] for i in receivers],
            "receivers_schedstat_s": [round(window["run_s"][i], 4) for i in receivers],
            "received": window["received"],
        }

    result: dict[str, Any] = {"processes": n, "notifies": notifies}
    result["delivered_to_one_stream"] = {
        **per_message(delivered),
        "publisher_cpu_per_notify_us": round(delivered["cpu_s"][0] / notifies * 1e6, 1),
        "publishes": delivered["publishes"],
        "copies": notifies * n,
        "redis_cpu_s": delivered["redis_cpu_s"],
        "redis_cpu_per_copy_us": round(delivered["redis_cpu_s"] / (notifies * n) * 1e6, 2),
        "redis_out_bytes_per_copy": round(delivered["redis_out_bytes"] / (notifies * n), 1),
    }
    result["topic_nobody_holds"] = {**per_message(unneeded), "notifies": notifies,
                                    "publishes": unneeded["publishes"], "copies": unneeded["publishes"] * n
                                    if not routed else sum(unneeded["received"])}
    print(f"[{label}] {n} processes: CPU per received message {result['delivered_to_one_stream']['mean_us']} µs "
          f"(receivers {result['delivered_to_one_stream']['receivers_cpu_per_message_us']}; schedstat "
          f"{result['delivered_to_one_stream']['receivers_schedstat_per_message_us']}); Redis "
          f"{result['delivered_to_one_stream']['redis_cpu_per_copy_us']} µs and "
          f"{result['delivered_to_one_stream']['redis_out_bytes_per_copy']} bytes per copy; topic nobody holds: "
          f"receivers' CPU {result['topic_nobody_holds']['receivers_cpu_s']} s (schedstat "
          f"{result['topic_nobody_holds']['receivers_schedstat_s']} s) for {unneeded['received'][1:]} received",
          flush=True)

    owner = n - 1
    client_id = dep.streams[owner].client_id

    def posts(via: int) -> Callable[[], None]:
        def run() -> None:
            with requests.Session() as session:
                for _ in range(FORWARDED_POSTS):
                    answer = dep.subscribe(via, owner, client_id, [f"user/u{owner + 1}", topic], signed_in=True,
                                           session=session)
                    if answer.status_code != 204:
                        raise RuntimeError(f"POST via {via} answered {answer.status_code}: {answer.text[:200]}")
        return run

    forwarded = measure(dep, redis_client, posts(0), routed)
    local = measure(dep, redis_client, posts(owner), routed)
    bystanders = range(1, owner)
    result["forwarded_post"] = {
        "posts": FORWARDED_POSTS,
        "forwarder_cpu_per_post_us": round(forwarded["cpu_s"][0] / FORWARDED_POSTS * 1e6, 1),
        "owner_cpu_per_post_us": round(forwarded["cpu_s"][owner] / FORWARDED_POSTS * 1e6, 1),
        "local_post_cpu_per_post_us": round(local["cpu_s"][owner] / FORWARDED_POSTS * 1e6, 1),
        "forwarder_schedstat_per_post_us": round(forwarded["run_s"][0] / FORWARDED_POSTS * 1e6, 1),
        "owner_schedstat_per_post_us": round(forwarded["run_s"][owner] / FORWARDED_POSTS * 1e6, 1),
        "local_post_schedstat_per_post_us": round(local["run_s"][owner] / FORWARDED_POSTS * 1e6, 1),
        "bystanders_cpu_s": [forwarded["cpu_s"][i] for i in bystanders],
        "bystanders_schedstat_s": [round(forwarded["run_s"][i], 4) for i in bystanders],
        "bystanders_received": [forwarded["received"][i] for i in bystanders],
        "bystander_schedstat_per_received_us": round(
            sum(forwarded["run_s"][i] for i in bystanders) / sum(forwarded["received"][i] for i in bystanders) * 1e6, 1)
        if sum(forwarded["received"][i] for i in bystanders) else None,
        "publishes": forwarded["publishes"],
    }
    fp = result["forwarded_post"]
    print(f"[{label}] {n} processes: forwarded POST: forwarder {fp['forwarder_cpu_per_post_us']} µs, owner "
          f"{fp['owner_cpu_per_post_us']} µs (a local POST {fp['local_post_cpu_per_post_us']} µs); schedstat "
          f"{fp['forwarder_schedstat_per_post_us']} / {fp['owner_schedstat_per_post_us']} / "
          f"{fp['local_post_schedstat_per_post_us']} µs; bystanders received {fp['bystanders_received']} "
          f"(schedstat {fp['bystanders_schedstat_s']} s)", flush=True)
    return result


def step_cost(code_dir: Path, redis_server: RedisServer, tmp: Path, label: str, n: int,
              notifies: int) -> dict[str, Any]:
    dep = Deployment(n, code_dir, redis_server, tmp, label).start()
    client = redis.Redis(host=HOST, port=redis_server.port)
    try:
        dep.open_streams(lambda k: [f"user/u{k + 1}", "bench"], signed_in=True)
        return backplane_cost(dep, client, notifies, "bench", routed=True, label=label)
    finally:
        client.close()
        dep.stop()


def fit_redis(costs: list[dict[str, Any]]) -> dict[str, float] | None:
    """Least squares of Redis CPU = a * publishes + b * copies over the measured process counts."""
    rows = [(c["delivered_to_one_stream"]["publishes"], c["delivered_to_one_stream"]["copies"],
             c["delivered_to_one_stream"]["redis_cpu_s"]) for c in costs]
    if len(rows) < 2:
        return None
    sxx = sum(p * p for p, _, _ in rows)
    sxy = sum(p * c for p, c, _ in rows)
    syy = sum(c * c for _, c, _ in rows)
    sxz = sum(p * z for p, _, z in rows)
    syz = sum(c * z for _, c, z in rows)
    det = sxx * syy - sxy * sxy
    if not det:
        return None
    a = (sxz * syy - syz * sxy) / det
    b = (sxx * syz - sxy * sxz) / det
    return {"per_publish_us": round(a * 1e6, 2), "per_copy_us": round(b * 1e6, 2)}


# -- step 4: the model ---------------------------------------------------------------------------


def model(cost_per_received_us: float, forwarded: dict[str, float], redis_fit: dict[str, float] | None,
          bytes_per_copy: float, old_costs: dict[str, float] | None) -> dict[str, Any]:
    """The 1,000,000-connection projection of :data:`MODEL` from the measured costs."""
    p = MODEL["processes"]
    b, t, f = MODEL["broadcasts_per_s"], MODEL["targeted_notifies_per_s"], MODEL["forwarded_posts_per_s"]
    messages = b + t + 2 * f  # published per second, cluster-wide (a forwarded POST: the POST and its reply)
    needed = b + t / p + 2 * f / p  # what one process must handle, in either design
    old_received, new_received = messages, needed
    old_copies, new_copies = messages * p, b * p + t + 2 * f
    if old_costs is not None:
        old_cpu_us = (needed * old_costs["needed_us"] + (t - t / p) * old_costs["unneeded_notify_us"]
                      + (2 * f - 2 * f / p) * old_costs["unneeded_post_or_reply_us"])
        old_basis = ("old code's own costs: the messages a process needs at its CPU per message delivered to one "
                     "stream, the notifies it does not need at its CPU per notify to a topic it does not hold, the "
                     "POSTs and replies for others at its bystanders' CPU per forwarded-POST message")
    else:
        old_cpu_us = old_received * cost_per_received_us
        old_basis = "no --compare: the current code's CPU per received message for every message"
    new_cpu_us = new_received * cost_per_received_us
    rows = [
        ("messages published / s, cluster", messages, messages),
        ("messages received / s, per process", old_received, new_received),
        ("copies / s out of Redis (one shard)", old_copies, new_copies),
        (f"MB / s out of Redis ({bytes_per_copy:.0f} bytes per copy measured)", old_copies * bytes_per_copy / 1e6,
         new_copies * bytes_per_copy / 1e6),
        ("backplane CPU per process, ms of CPU per s", old_cpu_us / 1e3, new_cpu_us / 1e3),
        (f"backplane CPU, all {p} processes, cores", old_cpu_us * p / 1e6, new_cpu_us * p / 1e6),
    ]
    if redis_fit is not None:
        old_redis = (messages * redis_fit["per_publish_us"] + old_copies * redis_fit["per_copy_us"]) / 1e6
        new_redis = (messages * redis_fit["per_publish_us"] + new_copies * redis_fit["per_copy_us"]) / 1e6
        rows.append(("Redis CPU, cores (measured per-publish + per-copy fit)", old_redis, new_redis))
    table = [{"quantity": q, "old (one channel)": round(o, 4), "routing": round(n, 4),
              "old / routing": round(o / n, 1) if n else None} for q, o, n in rows]
    return {
        **MODEL,
        "inputs": {"cpu_per_received_message_us": cost_per_received_us, "old_costs_us": old_costs,
                   "old_cpu_basis": old_basis, "redis_fit": redis_fit, "bytes_per_copy": bytes_per_copy,
                   "forwarded_post_us (not in the table: the same HTTP work in both designs)": forwarded},
        "table": table,
    }


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def model_markdown(m: dict[str, Any]) -> str:
    lines = ["| 1,000,000 connections on 100 processes | old (one channel) | routing | old / routing |",
             "| --- | ---: | ---: | ---: |"]
    for row in m["table"]:
        o, n = row["old (one channel)"], row["routing"]
        lines.append(f"| {row['quantity']} | {_number(o)} | {_number(n)} | {row['old / routing'] or '-'} |")
    return "\n".join(lines)


# -- the run -------------------------------------------------------------------------------------


def summary_markdown(report: dict[str, Any]) -> str:
    out = [f"# Scale-out ({report['command']})", "", f"Machine: {report['machine']}; current code: "
           f"{report['current_code']}" + (f"; old: {report['compare_commit']}" if report.get("compare_commit") else ""),
           "", "## Copies Redis hands out per message (4 processes)", "",
           "| case | " + " | ".join(report["copies"]) + " |", "| --- |" + " ---: |" * len(report["copies"])]
    for case in ("a_targeted_notify", "b_forwarded_post", "c_broadcast"):
        out.append(f"| {case} | " + " | ".join(
            f"{r[case]['copies_per_message']} ({r[case]['copies']}/{r[case]['messages']})"
            for r in report["copies"].values()) + " |")
    out += ["", "## Forged client id POSTs (2 processes)", "",
            "| code | id | median ms | p99 ms | 1,000 with 200 in flight, s | statuses |", "| --- | --- | ---: | ---: | ---: | --- |"]
    for label, r in report["forged"].items():
        for kind, v in r.items():
            if isinstance(v, dict):
                out.append(f"| {label} | {kind} | {v['median_ms']} | {v['p99_ms']} | "
                           f"{v[f'burst_{BURST}_in_flight_{IN_FLIGHT}_s']} | {v['statuses']} |")
    out += ["", "## Per-process backplane cost", "",
            "CPU per received message = a receiving worker's utime + stime (schedstat run time in brackets) / "
            "the messages it received, mean over the receivers (every process but the publisher).", "",
            "| code | processes | µs / received message (one stream) | topic nobody holds: received, µs each | "
            "forwarder µs / POST | owner µs / POST | local POST µs | Redis µs / copy | Redis bytes / copy |",
            "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for label, costs in report["cost"].items():
        for c in costs:
            d, u, fp = c["delivered_to_one_stream"], c["topic_nobody_holds"], c["forwarded_post"]
            unneeded = (f"{u['received'][1:]}, {u['mean_us']} ({u['schedstat_mean_us']})" if u["mean_us"] is not None
                        else f"{u['received'][1:]}, -")
            out.append(f"| {label} | {c['processes']} | {d['mean_us']} ({d['schedstat_mean_us']}) | {unneeded} | "
                       f"{fp['forwarder_cpu_per_post_us']} ({fp['forwarder_schedstat_per_post_us']}) | "
                       f"{fp['owner_cpu_per_post_us']} ({fp['owner_schedstat_per_post_us']}) | "
                       f"{fp['local_post_cpu_per_post_us']} ({fp['local_post_schedstat_per_post_us']}) | "
                       f"{d['redis_cpu_per_copy_us']} | {d['redis_out_bytes_per_copy']} |")
    if report.get("redis_fit"):
        out += ["", f"Redis CPU fit over the current code's runs: {report['redis_fit']['per_publish_us']} µs per "
                f"publish + {report['redis_fit']['per_copy_us']} µs per copy."]
    out += ["", "## Model", "", *(f"- {a}" for a in report["model"]["assumptions"]), "",
            model_markdown(report["model"]), ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", metavar="REF", help="also measure the library as committed at REF")
    parser.add_argument("--notifies", type=int, default=2000, help="notifies per process count in step 3")
    parser.add_argument("--sequential", type=int, default=50, help="sequential forged POSTs per id kind")
    parser.add_argument("--processes", default="2,4,8", help="process counts of step 3")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    started = time.monotonic()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "flask_rtbroker", "examples"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    report: dict[str, Any] = {
        "command": ".venv/bin/python -m benchmarks.scale_out " + " ".join(sys.argv[1:]),
        "machine": f"{os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}",
        "copies": {}, "forged": {}, "cost": {},
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        current = tmp / "current"
        digest = snapshot_code(ROOT, current)
        report["current_code"] = (f"work tree at HEAD {head}" + (f" + uncommitted changes ({len(dirty.splitlines())} "
                                                                 f"files), snapshot {digest}" if dirty else ""))
        redis_server = RedisServer(tmp).start()
        version = redis.Redis(host=HOST, port=redis_server.port).info()["redis_version"]
        report["machine"] += f", redis-server {version}"
        old_costs = None
        try:
            if args.compare:
                commit = archive_code(args.compare, tmp / "old")
                label = f"old {args.compare}"
                report["compare_commit"] = commit
                report["copies"][label], dep = step_copies(tmp / "old", redis_server, tmp, label, keep=True)
                assert dep is not None
                try:
                    client = redis.Redis(host=HOST, port=redis_server.port)
                    old = backplane_cost(dep, client, args.notifies, "news", routed=False, label=label)
                    report["cost"][label] = [old]
                    old_costs = {"needed_us": old["delivered_to_one_stream"]["schedstat_mean_us"],
                                 "unneeded_notify_us": old["topic_nobody_holds"]["schedstat_mean_us"],
                                 "unneeded_post_or_reply_us": old["forwarded_post"]["bystander_schedstat_per_received_us"]}
                finally:
                    dep.stop()
                report["forged"][label] = step_forged(tmp / "old", redis_server, tmp, label, args.sequential,
                                                      routed=False)
            label = "current"
            report["copies"][label], _ = step_copies(current, redis_server, tmp, label, keep=False)
            report["forged"][label] = step_forged(current, redis_server, tmp, label, args.sequential, routed=True)
            costs = [step_cost(current, redis_server, tmp, label, int(n), args.notifies)
                     for n in args.processes.split(",")]
            report["cost"][label] = costs
        finally:
            redis_server.stop()
    per_received = statistics.mean(c["delivered_to_one_stream"]["schedstat_mean_us"] for c in costs)
    forwarded = {"forwarder_us": statistics.mean(c["forwarded_post"]["forwarder_cpu_per_post_us"] for c in costs),
                 "owner_us": statistics.mean(c["forwarded_post"]["owner_cpu_per_post_us"] for c in costs)}
    bytes_per_copy = statistics.mean(c["delivered_to_one_stream"]["redis_out_bytes_per_copy"] for c in costs)
    report["redis_fit"] = fit_redis(costs)
    report["model"] = model(round(per_received, 1), forwarded, report["redis_fit"], round(bytes_per_copy, 1),
                            old_costs)
    report["seconds"] = round(time.monotonic() - started, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    REPORT.write_text(summary_markdown(report))
    print()
    print(summary_markdown(report))
    print(f"saved {RESULTS} and {REPORT} ({report['seconds']} s)")


if __name__ == "__main__":
    main()
