"""Database capture latency: from a commit on another connection to the last subscriber's receipt.

    .venv/bin/python -m benchmarks.record_latency [--rounds 1000] [--subscribers 1000] [--interval-ms 20]

Starts a throwaway PostgreSQL (tests.postgres_server) and one gunicorn gevent worker of the todo
example on it (examples/todo: ``watch(Todo, capture="database")``, trigger installed at start-up).
A second connection (psycopg, not the app) updates one shared todo's title per write and takes
the time right after COMMIT returns. Subscribers to ``todos/*``, one case after another:

- ``sdk``: 1 official JS SDK in Node (tests/js/record_latency.mjs), which timestamps each event on
  arrival with CLOCK_MONOTONIC, the clock of ``time.monotonic()`` here (Linux); writes are
  --interval-ms apart;
- ``raw``: 1, then --subscribers, raw SSE streams (flask_rtbroker.testing.SSEClient) read by this
  process; each write waits until every stream has the previous event, then --interval-ms.

Latency = the last subscriber's receipt - the commit: median and p99 over --rounds writes (after
10 warm-up writes). Server CPU per event: utime + stime of the worker (/proc/<pid>/stat) over the
measured writes, divided by their number. Loopback only; subscribers, server and PostgreSQL
share the machine's cores. Prints and saves benchmarks/results/record_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import requests
from sqlalchemy.engine import make_url

from benchmarks.cross_process import percentile
from benchmarks.loadgen import proc_cpu
from flask_rtbroker.testing import SSEClient
from tests.jsrun import JS_DIR, run_node
from tests.live import ROOT, LiveServer
from tests.postgres_server import PostgresServer

RESULTS = ROOT / "benchmarks" / "results" / "record_latency.json"
WARMUP = 10
OWNER_ID = "benchowner00001"
TODO_ID = "benchtodo000001"


class Writer:
    """A connection of its own (as another program would have) that changes the benchmark todo."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.connection = psycopg.connect(host=parsed.host, port=parsed.port, user=parsed.username,
                                          dbname=parsed.database)

    def seed(self) -> None:
        """The shared todo every write updates (everyone may see it: no rule filters it out)."""
        self.connection.execute("INSERT INTO users (id, name) VALUES (%s, 'bench')", (OWNER_ID,))
        self.connection.execute(
            "INSERT INTO todos (id, title, done, shared, owner, created) VALUES (%s, 'seed', false, true, %s, now())",
            (TODO_ID, OWNER_ID))
        self.connection.commit()

    def write(self, title: str) -> float:
        """Set the todo's *title* and commit; return ``time.monotonic()`` just after COMMIT returned."""
        self.connection.execute("UPDATE todos SET title = %s WHERE id = %s", (title, TODO_ID))
        self.connection.commit()
        return time.monotonic()

    def close(self) -> None:
        self.connection.close()


def worker_pid(server: LiveServer) -> int:
    """The pid of the server's single gunicorn worker."""
    assert server.process is not None
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"expected one gunicorn worker, found {children}")
    return int(children[0])


def summary(latencies: list[float], cpu_seconds: float, subscribers: int, client: str) -> dict[str, Any]:
    return {
        "subscribers": subscribers,
        "client": client,
        "events": len(latencies),
        "median_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
        "server_cpu_ms_per_event": round(cpu_seconds / len(latencies) * 1000, 3),
    }


def sdk_case(server: LiveServer, writer: Writer, rounds: int, interval: float) -> dict[str, Any]:
    """One official-SDK subscriber in Node; writes *interval* apart."""
    pid = worker_pid(server)
    commits: dict[str, float] = {}
    cpu: list[float] = []
    limit = WARMUP * interval + rounds * interval + 60

    def subscribed(message: dict[str, Any]) -> dict[str, Any]:
        for n in range(WARMUP):
            writer.write(f"warmup-{n}")
            time.sleep(interval)
        cpu.append(proc_cpu(pid))
        for n in range(rounds):
            commits[f"bench-{n}"] = writer.write(f"bench-{n}")
            time.sleep(interval)
        cpu.append(proc_cpu(pid))
        return {"titles": list(commits)}

    result = run_node("record_latency.mjs", server.url, str(int(limit * 1000)), steps={"subscribed": subscribed},
                      timeout=limit + 30, context=server.log)
    latencies = [result["received"][title] / 1000 - committed for title, committed in commits.items()]
    sdk = json.loads((JS_DIR / "node_modules" / "pocketbase" / "package.json").read_text())["version"]
    return summary(latencies, cpu[1] - cpu[0], 1, f"official JS SDK {sdk} in Node (eventsource polyfill)")


def one_round(writer: Writer, streams: list[SSEClient], title: str) -> float:
    """Commit *title*; return seconds from the commit until every stream's socket has its event."""
    expected = f'"title":"{title}"'.encode()
    pending = {sse.sock.fileno(): (sse.sock, bytearray()) for sse in streams}
    with selectors.DefaultSelector() as selector:
        for fileno in pending:
            selector.register(fileno, selectors.EVENT_READ)
        committed = writer.write(title)
        last = committed
        deadline = time.monotonic() + 15
        while pending and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.5):
                sock, buffer = pending[key.fd]
                buffer += sock.recv(65536)
                if expected in buffer and buffer.endswith(b"\n\n\r\n"):
                    last = time.monotonic()
                    selector.unregister(key.fd)
                    del pending[key.fd]
    if pending:
        raise RuntimeError(f"{title}: {len(pending)} of {len(streams)} streams did not get the event")
    return last - committed


def raw_case(server: LiveServer, writer: Writer, subscribers: int, rounds: int, interval: float) -> dict[str, Any]:
    """*subscribers* raw SSE streams read by this process; each write after the last one arrived."""
    pid = worker_pid(server)
    streams = [server.stream() for _ in range(subscribers)]
    try:
        with requests.Session() as session:
            for sse in streams:
                session.post(f"{server.url}/api/realtime", json={"clientId": sse.client_id, "subscriptions": ["todos/*"]},
                             timeout=10).raise_for_status()
        for sse in streams:
            sse.sock.setblocking(False)
        for n in range(WARMUP):
            one_round(writer, streams, f"warmup-{subscribers}-{n}")
            time.sleep(interval)
        latencies = []
        started = proc_cpu(pid)
        for n in range(rounds):
            latencies.append(one_round(writer, streams, f"bench-{subscribers}-{n}"))
            time.sleep(interval)
        cpu = proc_cpu(pid) - started
    finally:
        for sse in streams:
            sse.close()
    return summary(latencies, cpu, subscribers, "raw SSE sockets read by the benchmark (Python selectors)")


def machine(url: str) -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "")
    with psycopg.connect(str(make_url(url).set(drivername="postgresql"))) as connection:
        postgres = connection.execute("SHOW server_version").fetchone()
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "postgresql": postgres[0] if postgres else None, "node": node}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1000, help="measured writes per case")
    parser.add_argument("--subscribers", type=int, default=1000, help="raw SSE streams of the large case")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="pause between writes")
    args = parser.parse_args()
    interval = args.interval_ms / 1000
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the server inherits it
    postgres = PostgresServer().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = {"TODO_DATABASE_URL": postgres.url, "RTBROKER_MAX_CLIENTS_PER_IP": "0"}
            server = LiveServer("gunicorn-gevent", target="examples.todo.app:app", env=env).start(Path(tmp))
            writer = Writer(postgres.url)
            try:
                requests.get(f"{server.url}/api/todos", timeout=30).raise_for_status()  # the worker has made the tables
                writer.seed()
                cases = [sdk_case(server, writer, args.rounds, interval),
                         raw_case(server, writer, 1, args.rounds, interval),
                         raw_case(server, writer, args.subscribers, args.rounds, interval)]
            finally:
                writer.close()
                server.stop()
        report = {
            "command": " ".join([".venv/bin/python -m benchmarks.record_latency", *sys.argv[1:]]),
            "rounds": args.rounds,
            "interval_ms": args.interval_ms,
            "cases": cases,
            "machine": machine(postgres.url),
            "note": ("latency from just after COMMIT returned (psycopg, a connection of its own) to the last "
                     "subscriber's receipt of the record event; one gunicorn gevent worker of examples/todo with "
                     "watch(Todo, capture='database'); subscribers, server and PostgreSQL share the machine's cores"),
        }
    finally:
        postgres.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
