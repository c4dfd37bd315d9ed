"""A claimed reconnect against a plain connect + subscribe, side by side on one server.

One gunicorn gevent worker (``examples.notify_app``). Each round, in the same order for both:

- **plain**: open a stream, POST ``[t<i>, @rtbroker/session]`` (no ghost holds that set: the
  session event says ``new``), close it;
- **claimed**: the same, after a stream with that set was closed before (the server keeps its
  ghost; the POST claims it: ``resumed``), with ``queued`` messages waiting in each ghost.

What is timed is the connect (up to ``PB_CONNECT``) plus the POST, from the client, and the
worker's CPU time (``/proc/<pid>/stat``) over all of them. Results go to
``benchmarks/results/session_reconnect.json``::

    .venv/bin/python -m benchmarks.session_reconnect                  # 500 per case, 3 rounds
    .venv/bin/python -m benchmarks.session_reconnect --clients 200 --rounds 1 --queued 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from benchmarks.run import HOST, ROOT, Server
from flask_rtbroker.testing import SSEClient

RESULTS = ROOT / "benchmarks" / "results" / "session_reconnect.json"
SESSION = "@rtbroker/session"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process *pid* so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def connect_and_subscribe(server: Server, session: requests.Session, key: str) -> tuple[float, dict[str, Any]]:
    """Seconds a connect + subscription POST took, and the session event that followed."""
    start = time.perf_counter()
    client = SSEClient.connect(HOST, server.port, timeout=10)
    answer = session.post(f"http://{HOST}:{server.port}/api/realtime",
                          json={"clientId": client.client_id, "subscriptions": [key, SESSION]}, timeout=10)
    elapsed = time.perf_counter() - start
    assert answer.status_code == 204, answer.text
    event = client.next_event(timeout=10)
    assert event.name == SESSION, event
    for _ in range(json.loads(event.data)["replayed"]):
        client.next_event(timeout=10)
    client.close()
    return elapsed, json.loads(event.data)


def run_case(server: Server, prefix: str, count: int, queued: int, claimed: bool) -> dict[str, Any]:
    """*count* connects + POSTs of keys ``<prefix><i>``, each claiming a ghost when *claimed*."""
    session = requests.Session()
    keys = [f"{prefix}{i}" for i in range(count)]
    if claimed:  # leave a ghost per key, with *queued* messages waiting in it
        for key in keys:
            connect_and_subscribe(server, session, key)
        time.sleep(0.3)  # the worker notices the closes
        for n in range(queued):
            for key in keys:
                session.post(f"http://{HOST}:{server.port}/notify", json={"topic": key, "data": {"n": n}}, timeout=10)
    cpu_before = cpu_seconds(server.pid)  # type: ignore[arg-type]
    times, reasons = [], []
    for key in keys:
        elapsed, event = connect_and_subscribe(server, session, key)
        times.append(elapsed)
        reasons.append(event["reason"])
    cpu = cpu_seconds(server.pid) - cpu_before  # type: ignore[arg-type]
    expected = "resumed" if claimed else "new"
    assert reasons.count(expected) == count, {r: reasons.count(r) for r in set(reasons)}
    return {"median_ms": statistics.median(times) * 1000, "mean_ms": statistics.mean(times) * 1000,
            "worker_cpu_ms_per_client": cpu / count * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queued", type=int, default=3, help="messages waiting in each ghost")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = Server("ours", Path(tmp), extra_env={"RTBROKER_RESUME_WINDOW": "120"}).start()
        try:
            rounds = []
            for r in range(args.rounds):
                plain = run_case(server, f"plain{r}-", args.clients, args.queued, claimed=False)
                claimed = run_case(server, f"claimed{r}-", args.clients, args.queued, claimed=True)
                rounds.append({"plain": plain, "claimed": claimed})
                print(f"round {r + 1}: plain {plain['median_ms']:.2f} ms, {plain['worker_cpu_ms_per_client']:.3f} ms CPU; "
                      f"claimed {claimed['median_ms']:.2f} ms, {claimed['worker_cpu_ms_per_client']:.3f} ms CPU", flush=True)
        finally:
            server.stop()
    ratio_time = statistics.median(r["claimed"]["median_ms"] / r["plain"]["median_ms"] for r in rounds)
    ratio_cpu = statistics.median(r["claimed"]["worker_cpu_ms_per_client"] / r["plain"]["worker_cpu_ms_per_client"] for r in rounds)
    result = {"clients": args.clients, "queued_per_ghost": args.queued, "rounds": rounds,
              "claimed_over_plain_latency": ratio_time, "claimed_over_plain_cpu": ratio_cpu}
    print(f"claimed / plain: latency {ratio_time:.2f}x, worker CPU {ratio_cpu:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
