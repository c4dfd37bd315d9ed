"""A hostile client's memory: 1,000 streams from one address, each POSTing PocketBase's per-request maximum.

    .venv/bin/python -m benchmarks.hostile_memory [--clients 1000] [--compare REF]

Starts the benchmark runner's server (``gunicorn -k gevent -w 1 --worker-connections 20000
examples.notify_app:app``, the library's defaults, the per-address cap too) and, from 127.0.0.1,
opens *clients* streams. Each client
then POSTs, in turn:

1. 1,000 keys of 2,480 characters (2.5 MB: PocketBase's own per-request limits);
2. as many such keys as fit under ``RTBROKER_MAX_BODY_SIZE`` (~1 MB);
3. as many as its subscription budget (``RTBROKER_MAX_SUBSCRIPTION_BYTES``) holds — what an
   attacker can actually keep.

Printed per step: the status codes; then the worker's RSS (``VmRSS``) and peak (``VmHWM``), and
whether a normal client still subscribes and receives a broadcast. ``--compare REF`` first runs
the same load against the library as committed at REF (``git archive``), for a side-by-side in one
run. Saves the figures to benchmarks/results/hostile_memory.json. Every connection is loopback.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from benchmarks.run import HOST, ROOT, Server
from flask_rtbroker.testing import SSEClient

RESULTS = ROOT / "benchmarks" / "results" / "hostile_memory.json"
KEY_LENGTH = 2480
POST_THREADS = 16


def worker_memory(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (kB) of process *pid*."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def body(client_id: str, keys: int) -> bytes:
    """A subscription POST of *keys* distinct keys of :data:`KEY_LENGTH` characters."""
    subscriptions = [f"{client_id}-{index}-".ljust(KEY_LENGTH, "x") for index in range(keys)]
    return json.dumps({"clientId": client_id, "subscriptions": subscriptions}).encode()


def post_all(url: str, clients: list[SSEClient], keys: int) -> dict[str, int]:
    """Every client POSTs *keys* keys (16 at a time); the count of each status code."""

    def post(client: SSEClient) -> str:
        try:
            answer = requests.post(url, data=body(client.client_id, keys),
                                   headers={"Content-Type": "application/json"}, timeout=60)
            return str(answer.status_code)
        except requests.RequestException as exc:
            return type(exc).__name__

    with ThreadPoolExecutor(POST_THREADS) as pool:
        return dict(Counter(pool.map(post, clients)))


def normal_client_works(port: int) -> bool:
    """A fresh client subscribes to one topic and gets the broadcast sent to it."""
    client = SSEClient.connect(HOST, port, timeout=10)
    try:
        url = f"http://{HOST}:{port}"
        answer = requests.post(f"{url}/api/realtime", json={"clientId": client.client_id, "subscriptions": ["normal"]},
                               timeout=10)
        if answer.status_code != 204:
            return False
        requests.post(f"{url}/notify", json={"topic": "normal", "data": {"ok": True}}, timeout=10)
        event = client.next_event(timeout=10)
        return event.name == "normal" and json.loads(event.data) == {"ok": True}
    finally:
        client.close()


def run(code_dir: Path, tmp: Path, label: str, per_ip: str, clients: int, budget_keys: int,
        body_keys: int) -> dict[str, Any]:
    """The whole load against the library in *code_dir*, on the benchmark runner's gunicorn server
    (which lifts the per-address cap: *per_ip* puts the library's default back)."""
    server = Server("ours", tmp, code_dir=code_dir, extra_env={"RTBROKER_MAX_CLIENTS_PER_IP": per_ip}).start()
    assert server.pid is not None
    streams: list[SSEClient] = []
    try:
        idle = worker_memory(server.pid)
        streams = [SSEClient.connect(HOST, server.port, timeout=10) for _ in range(clients)]
        url = f"http://{HOST}:{server.port}/api/realtime"
        result: dict[str, Any] = {"label": label, "rss_idle_kb": idle["VmRSS"]}
        started = time.monotonic()
        for step, keys in (("pocketbase_max", 1000), ("body_limit", body_keys), ("budget", budget_keys)):
            result[step] = {"keys": keys, "statuses": post_all(url, streams, keys)}
            print(f"[{label}] {clients} clients x {keys} keys of {KEY_LENGTH} chars: {result[step]['statuses']}",
                  flush=True)
        result["load_seconds"] = round(time.monotonic() - started, 1)
        memory = worker_memory(server.pid)
        result.update(rss_kb=memory["VmRSS"], peak_rss_kb=memory["VmHWM"],
                      normal_client_works=normal_client_works(server.port))
        print(f"[{label}] worker RSS {memory['VmRSS'] / 1024:.0f} MB (peak {memory['VmHWM'] / 1024:.0f} MB), "
              f"normal client works: {result['normal_client_works']}", flush=True)
        return result
    finally:
        for stream in streams:
            stream.close()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--compare", metavar="REF", help="also measure the library as committed at REF, first")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    from flask_rtbroker.config import DEFAULTS
    from flask_rtbroker.protocol.options import subscription_cost

    budget_keys = DEFAULTS["RTBROKER_MAX_SUBSCRIPTION_BYTES"] // subscription_cost(["x" * KEY_LENGTH])
    body_keys = DEFAULTS["RTBROKER_MAX_BODY_SIZE"] // (KEY_LENGTH + 3) - 1
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.compare:
            code = Path(tmp, "code")
            code.mkdir()
            archive = subprocess.run(["git", "archive", args.compare, "flask_rtbroker", "examples"], cwd=ROOT,
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
            # before "auto" existed the default was 0, no cap
            runs.append(run(code, Path(tmp), args.compare, "0", args.clients, budget_keys, body_keys))
        runs.append(run(ROOT, Path(tmp), "work tree", "auto", args.clients, budget_keys, body_keys))
    if len(runs) == 2:
        print(f"RSS ratio, work tree / {args.compare}: {runs[1]['rss_kb'] / runs[0]['rss_kb']:.3f}")
    report = {"command": "python -m benchmarks.hostile_memory " + " ".join(sys.argv[1:]), "clients": args.clients,
              "key_length": KEY_LENGTH, "runs": runs}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
