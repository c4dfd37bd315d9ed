"""Notify latency through the Redis backplane vs inside one process, side by side in one run.

    .venv/bin/python -m benchmarks.cross_process [--rounds 300] [--clients 100]

Two gunicorn gevent servers (A, B) share a redis-server started on a free port. *clients* SSE
streams are held by A. Each round notifies once through A (local delivery) and once through B
(published to Redis, delivered by A's listener), alternating, and times from just before the
``POST /notify`` to the moment the last client's socket has the event. Prints and saves
median and p99 per path to benchmarks/results/cross_process.json.
"""

from __future__ import annotations

import argparse
import json
import selectors
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

from flask_rtbroker.testing import SSEClient
from tests.live import ROOT, LiveServer
from tests.redis_server import RedisServer

RESULTS = ROOT / "benchmarks" / "results" / "cross_process.json"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def one_round(notifier: LiveServer, session: requests.Session, streams: list[SSEClient], n: int) -> float:
    """Notify once through *notifier*; return seconds until every stream's socket has the event."""
    expected = f'"n":{n}}}'.encode()
    pending = {sse.sock.fileno(): (sse.sock, bytearray()) for sse in streams}
    with selectors.DefaultSelector() as selector:
        for fileno, (sock, _) in pending.items():
            sock.setblocking(False)
            selector.register(fileno, selectors.EVENT_READ)
        started = time.perf_counter()
        session.post(f"{notifier.url}/notify", json={"topic": "bench", "data": {"n": n}}, timeout=10).raise_for_status()
        last = started
        deadline = started + 15
        while pending and time.perf_counter() < deadline:
            for key, _ in selector.select(timeout=0.5):
                sock, buffer = pending[key.fd]
                buffer += sock.recv(65536)
                if expected in buffer and buffer.endswith(b"\n\n\r\n"):
                    last = time.perf_counter()
                    selector.unregister(key.fd)
                    del pending[key.fd]
    if pending:
        raise RuntimeError(f"round {n}: {len(pending)} of {len(streams)} clients did not get the message")
    return last - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--clients", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        redis = RedisServer(workdir).start()
        env = {"RTBROKER_BACKPLANE": redis.url, "RTBROKER_MAX_CLIENTS_PER_IP": "0"}
        a = LiveServer("gunicorn-gevent", env=env).start(workdir)
        b = LiveServer("gunicorn-gevent", env=env).start(workdir)
        try:
            streams = [a.stream() for _ in range(args.clients)]
            for sse in streams:
                a.subscribe(sse.client_id, ["bench"]).raise_for_status()
            timings: dict[str, list[float]] = {"local (notify via A)": [], "cross-process (notify via B)": []}
            with requests.Session() as session:
                for warmup in range(5):
                    one_round(b, session, streams, -1 - warmup)
                for n in range(args.rounds):
                    for label, notifier in zip(timings, (a, b)):
                        timings[label].append(one_round(notifier, session, streams, n))
            for sse in streams:
                sse.close()
        finally:
            a.stop()
            b.stop()
            redis.stop()
    summary = {
        label: {"median_ms": round(statistics.median(v) * 1000, 2), "p99_ms": round(percentile(v, 0.99) * 1000, 2)}
        for label, v in timings.items()
    }
    local, cross = summary.values()
    report = {
        "command": "python -m benchmarks.cross_process " + " ".join(sys.argv[1:]),
        "clients": args.clients,
        "rounds": args.rounds,
        "results": summary,
        "cross_over_local_median": round(cross["median_ms"] / local["median_ms"], 2),
        "note": "time from POST /notify to the last of the clients receiving the event; client and servers share 2 cores",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
