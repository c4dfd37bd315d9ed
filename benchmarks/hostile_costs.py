"""Hostile clients, second round: what the server builds and computes for what clients send.

    .venv/bin/python -m benchmarks.hostile_costs [--clients 1000] [--cases notify,queues,memory,records]
                                                 [--compare REF]

Every case runs against the benchmark runner's server (``gunicorn -k gevent -w 1
--worker-connections 20000``) with the library's defaults, the per-address stream cap included;
every connection is loopback. Printed per case, and saved to
benchmarks/results/hostile_costs.json (one report per command line, the latest of each):

- ``notify``: one client POSTs 1,000 keys ``example?options=<i>`` (as many as its budget holds
  when that is fewer); the time of a 1 MB
  ``notify("example")`` and the worker's peak RSS growth, against the same notify without that
  client (target: at most 2x the time, at most 50 MB more);
- ``queues``: 200 streams that never read, from one address, each on ``example?options=<n>``,
  then on the shared key ``example``, and 900 notifies of 10 KB: the worker's RSS growth for
  each (target: the suffixed keys at most 2x the shared key);
- ``memory``: *clients* streams, each POSTing what its budgets allow by three routes (the
  longest keys, the most option names per key, the most distinct option sets), then 50
  notifies of 10 KB to keys nobody reads: the worker's RSS (target: under 512 MB);
- ``records``: ``benchmarks/record_app.py`` with a list rule that runs one query; the time of a
  create request and until a plain ``posts/*`` subscriber has it (median of 7), with and without
  10 clients holding the most distinct option sets ``posts/*?options={"query":{"n":<i>}}`` they
  may (1,000, or the most of 500, 250, ... 16 that is accepted; target: at most 3x).

``--compare REF`` first runs the same cases against the library as committed at REF.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import requests

from benchmarks.hostile_memory import worker_memory
from benchmarks.run import HOST, ROOT, Server
from flask_rtbroker.config import DEFAULTS
from flask_rtbroker.protocol.options import subscription_cost
from flask_rtbroker.testing import SSEClient

RESULTS = ROOT / "benchmarks" / "results" / "hostile_costs.json"
MB = 1024 * 1024
POST_THREADS = 16


def options_key(topic: str, query: dict[str, Any] | None = None, headers: dict[str, Any] | None = None) -> str:
    """The key the SDK makes for ``subscribe(topic, cb, {query, headers})``."""
    options = json.dumps({"query": query or {}, "headers": headers or {}}, separators=(",", ":"))
    return f"{topic}?options=" + urllib.parse.quote(options, safe="")


def subscribe(port: int, client: SSEClient, keys: list[str]) -> int:
    """POST *keys* for *client*; the status code."""
    answer = requests.post(f"http://{HOST}:{port}/api/realtime",
                           json={"clientId": client.client_id, "subscriptions": keys}, timeout=60)
    return answer.status_code


def notify(port: int, topic: str, data: Any) -> float:
    """Seconds ``POST /notify`` took."""
    started = time.perf_counter()
    requests.post(f"http://{HOST}:{port}/notify", json={"topic": topic, "data": data}, timeout=120).raise_for_status()
    return time.perf_counter() - started


def mb(kb: int) -> float:
    return round(kb / 1024, 1)


def serve(code: Path, tmp: Path, **options: Any) -> Server:
    """The runner's server on *code*, with the library's per-address cap ("auto")."""
    env = {"RTBROKER_MAX_CLIENTS_PER_IP": "auto", **options.pop("env", {})}
    return Server("ours", tmp, code_dir=code, extra_env=env, **options).start()


def case_notify(code: Path, tmp: Path) -> dict[str, Any]:
    data = "x" * MB
    server = serve(code, tmp)
    assert server.pid is not None
    reader = SSEClient.connect(HOST, server.port, timeout=10)
    try:
        subscribe(server.port, reader, ["example"])
        notify(server.port, "example", "warm-up")
        reader.next_event(timeout=10)
        plain = []
        for _ in range(3):
            plain.append(notify(server.port, "example", data))
            reader.next_event(timeout=30)
        before = worker_memory(server.pid)
        hostile, keys, statuses = [], 1000, []
        for _ in range(3):  # a fresh attacker each time: the last one was discarded as slow
            attacker = SSEClient.connect(HOST, server.port, timeout=10)
            status = subscribe(server.port, attacker, [f"example?options={i}" for i in range(keys)])
            if status != 204:  # over the client's budget: as many as it holds
                keys = DEFAULTS["RTBROKER_MAX_SUBSCRIPTION_BYTES"] // subscription_cost(["example?options=999"])
                status = subscribe(server.port, attacker, [f"example?options={i}" for i in range(keys)])
            statuses.append(status)
            hostile.append(notify(server.port, "example", data))
            reader.next_event(timeout=60)
            attacker.close()
        after = worker_memory(server.pid)
        result = {"keys": keys, "post_statuses": statuses, "plain_notify_ms": round(statistics.median(plain) * 1000, 1),
                  "hostile_notify_ms": round(statistics.median(hostile) * 1000, 1),
                  "peak_rss_growth_mb": mb(after["VmHWM"] - before["VmHWM"])}
        result["time_ratio"] = round(result["hostile_notify_ms"] / result["plain_notify_ms"], 2)
        return result
    finally:
        reader.close()
        server.stop()


def case_queues(code: Path, tmp: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for variant, key in (("shared", lambda n: "example"), ("suffixed", lambda n: f"example?options={n}")):
        server = serve(code, tmp)
        assert server.pid is not None
        streams = [SSEClient.connect(HOST, server.port, timeout=10) for _ in range(200)]
        try:
            with ThreadPoolExecutor(POST_THREADS) as pool:
                statuses = list(pool.map(lambda pair: subscribe(server.port, pair[1], [key(pair[0])]), enumerate(streams)))
            idle = worker_memory(server.pid)["VmRSS"]
            pad = "y" * 10_000
            for n in range(900):
                notify(server.port, "example", {"n": n, "pad": pad})
            rss = worker_memory(server.pid)["VmRSS"]
            stats = requests.get(f"http://{HOST}:{server.port}/stats", timeout=10).json()
            result[variant] = {"statuses": sorted(set(statuses)), "rss_growth_mb": mb(rss - idle),
                               "slow_disconnects": stats.get("disconnects_total", {}).get("slow", 0)}
        finally:
            for stream in streams:
                stream.close()
            server.stop()
    result["memory_ratio"] = round(result["suffixed"]["rss_growth_mb"] / max(result["shared"]["rss_growth_mb"], 1.0), 2)
    return result


def hostile_posts(client_id: str, route: str) -> list[str]:
    """What one client POSTs by *route*: as much as its budgets let it keep."""
    if route == "long_keys":
        return [f"{client_id[:8]}-{i}-".ljust(2480, "x") for i in range(170)]
    if route == "option_names":
        return [options_key(f"t{i}", headers={f"h{j}-{client_id[:4]}-{i}": "v" * 30 for j in range(32)}) for i in range(16)]
    return [options_key(f"t{i}", query={"filter": "", "n": f"{client_id}-{i}", **{f"q{j}": "v" * 20 for j in range(20)}})
            for i in range(16)]


def case_memory(code: Path, tmp: Path, clients: int) -> dict[str, Any]:
    server = serve(code, tmp)
    assert server.pid is not None
    streams: list[SSEClient] = []
    try:
        idle = worker_memory(server.pid)["VmRSS"]
        streams = [SSEClient.connect(HOST, server.port, timeout=10) for _ in range(clients)]
        routes = ("long_keys", "option_names", "option_sets")
        statuses: dict[str, dict[int, int]] = {}
        with ThreadPoolExecutor(POST_THREADS) as pool:
            for route in routes:
                codes = list(pool.map(lambda s: subscribe(server.port, s, hostile_posts(s.client_id, route)), streams))
                statuses[route] = {code: codes.count(code) for code in sorted(set(codes))}
                print(f"  {route}: {statuses[route]}", flush=True)
            # every stream also holds a suffixed key it never reads, for notifies to queue on
            codes = list(pool.map(lambda s: subscribe(server.port, s, [f"q?options={s.client_id}"]), streams))
            statuses["queued"] = {code: codes.count(code) for code in sorted(set(codes))}
        pad = "z" * 10_000
        for n in range(50):
            notify(server.port, "q", {"n": n, "pad": pad})
        memory = worker_memory(server.pid)
        return {"clients": clients, "statuses": statuses, "idle_rss_mb": mb(idle), "rss_mb": mb(memory["VmRSS"]),
                "peak_rss_mb": mb(memory["VmHWM"])}
    finally:
        for stream in streams:
            stream.close()
        server.stop()


def create_post(port: int, seq: int) -> float:
    started = time.perf_counter()
    requests.post(f"http://{HOST}:{port}/api/collections/posts/records", json={"seq": seq, "pad": ""},
                  timeout=120).raise_for_status()
    return time.perf_counter() - started


def case_records(code: Path, tmp: Path, rounds: int = 7) -> dict[str, Any]:
    server = serve(code, tmp, records=True, env={"RECORD_APP_RULE": "query"})
    streams: list[SSEClient] = []
    try:
        reader = SSEClient.connect(HOST, server.port, timeout=10)
        streams.append(reader)
        subscribe(server.port, reader, ["posts/*"])
        seq = 0

        def measure() -> dict[str, float]:
            nonlocal seq
            request_s, delivered_s = [], []
            for _ in range(rounds):
                seq += 1
                started = time.perf_counter()
                request_s.append(create_post(server.port, seq))
                while json.loads(reader.next_event(timeout=60).data)["record"]["seq"] != seq:
                    pass
                delivered_s.append(time.perf_counter() - started)
            return {"request_ms": round(statistics.median(request_s) * 1000, 1),
                    "delivered_ms": round(statistics.median(delivered_s) * 1000, 1)}

        measure()  # warm-up
        quiet = measure()
        statuses: list[int] = []
        held: list[int] = []
        for _ in range(10):
            hostile = SSEClient.connect(HOST, server.port, timeout=10)
            streams.append(hostile)
            for sets in (1000, 500, 250, 125, 64, 32, 16):  # the most distinct option sets it may hold
                statuses.append(subscribe(server.port, hostile, [options_key("posts/*", {"n": str(i)}) for i in range(sets)]))
                if statuses[-1] == 204:
                    held.append(sets)
                    break
        loud = measure()
        return {"statuses": statuses, "option_sets_held": held, "quiet": quiet, "hostile": loud,
                "request_ratio": round(loud["request_ms"] / quiet["request_ms"], 2),
                "delivered_ratio": round(loud["delivered_ms"] / quiet["delivered_ms"], 2)}
    finally:
        for stream in streams:
            stream.close()
        server.stop()


def run_cases(code: Path, tmp: Path, label: str, cases: list[str], clients: int) -> dict[str, Any]:
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "notify": lambda: case_notify(code, tmp),
        "queues": lambda: case_queues(code, tmp),
        "memory": lambda: case_memory(code, tmp, clients),
        "records": lambda: case_records(code, tmp),
    }
    results: dict[str, Any] = {"label": label}
    for case in cases:
        print(f"[{label}] {case} ...", flush=True)
        results[case] = runners[case]()
        print(f"[{label}] {case}: {json.dumps(results[case])}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--cases", default="notify,queues,memory,records")
    parser.add_argument("--compare", metavar="REF", help="also measure the library as committed at REF, first")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    cases = args.cases.split(",")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.compare:
            code = Path(tmp, "code")
            code.mkdir()
            archive = subprocess.run(["git", "archive", args.compare, "flask_rtbroker", "examples", "benchmarks"],
                                     cwd=ROOT, capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
            (code / "benchmarks" / "record_app.py").write_bytes((ROOT / "benchmarks" / "record_app.py").read_bytes())
            runs.append(run_cases(code, Path(tmp), args.compare, cases, args.clients))
        runs.append(run_cases(ROOT, Path(tmp), "work tree", cases, args.clients))
    report = {"command": "python -m benchmarks.hostile_costs " + " ".join(sys.argv[1:]), "runs": runs}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    earlier = json.loads(RESULTS.read_text()).get("reports", []) if RESULTS.exists() else []
    reports = [kept for kept in earlier if kept["command"] != report["command"]] + [report]
    RESULTS.write_text(json.dumps({"reports": reports}, indent=2) + "\n")
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
