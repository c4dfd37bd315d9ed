"""Backplane channel churn: one client loops POSTs of 1,000 fresh topics while a normal client
subscribes now and then; how many channels the process holds, and how long the normal POSTs take.

    .venv/bin/python -m benchmarks.channel_churn [--seconds 15] [--backplanes redis,redis-cluster] [--compare REF]

Per backplane (a fresh redis-server, or a 3-master Redis Cluster, from the test fixtures) the
benchmark runner's server (``gunicorn -k gevent -w 1`` running ``examples.notify_app:app``,
library defaults) is started once per variant: the work tree with its defaults, the work tree
with ``RTBROKER_MAX_SUBSCRIPTION_CHANGES=0`` (no bucket: the channel cap and sweeps alone) and,
with ``--compare REF``, the library as committed at REF (``git archive``), first. For *seconds*
the hostile client POSTs ``churn<round>-<i>`` x 1,000 back to back, the normal client POSTs a
two-key set (one key alternating) every 50 ms, and the channels the app holds on the server
(``PUBSUB CHANNELS`` / ``SHARDCHANNELS``, the run's own prefix) are counted every 0.25 s.

Printed and saved to benchmarks/results/channel_churn.json per run: the hostile answers by
status, the channels held at most and at the end (and 2 s after the churn), what the clients
hold (the hostile client's last accepted set plus the normal client's keys), and the normal
POSTs' p50 / p99 / max. Every connection is loopback.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import redis
import requests

from benchmarks.run import HOST, ROOT, Server
from flask_rtbroker.testing import SSEClient
from tests.redis_cluster_server import RedisClusterServer
from tests.redis_server import RedisServer

RESULTS = ROOT / "benchmarks" / "results" / "channel_churn.json"
PER_POST = 1000
NORMAL_EVERY = 0.05
SAMPLE_EVERY = 0.25


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0


def counter(kind: str, server: Any, prefix: str) -> Callable[[], int]:
    """Count the topic channels of *prefix* subscribed on the Redis server or cluster."""
    if kind == "redis":
        client = redis.Redis.from_url(server.url)
        return lambda: len(client.pubsub_channels(f"{prefix}:0:t:*"))
    return lambda: sum(len(node.command("PUBSUB", "SHARDCHANNELS", f"{prefix}:t:*")) for node in server.masters())


def run(kind: str, backplane: Any, code_dir: Path, tmp: Path, label: str, env: dict[str, str],
        seconds: float) -> dict[str, Any]:
    prefix = f"churn{uuid.uuid4().hex[:8]}"
    count = counter(kind, backplane, prefix)
    server = Server("ours", tmp, code_dir=code_dir, extra_env={
        "RTBROKER_BACKPLANE": backplane.url, "RTBROKER_CHANNEL_PREFIX": prefix, **env}).start()
    url = f"http://{HOST}:{server.port}/api/realtime"
    hostile = SSEClient.connect(HOST, server.port, timeout=10)
    normal = SSEClient.connect(HOST, server.port, timeout=10)
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    samples: list[int] = []
    accepted = 0
    stop = time.monotonic() + seconds

    def churn() -> None:
        nonlocal accepted
        with requests.Session() as session:
            round_ = 0
            while time.monotonic() < stop:
                keys = [f"churn{round_}-{i}" for i in range(PER_POST)]
                status = session.post(url, json={"clientId": hostile.client_id, "subscriptions": keys}, timeout=30).status_code
                statuses[status] += 1
                accepted = len(keys) if status == 204 else accepted
                round_ += 1

    def subscribe_now_and_then() -> None:
        with requests.Session() as session:
            round_ = 0
            while time.monotonic() < stop:
                keys = ["normal", f"normal-{round_ % 2}"]
                start = time.perf_counter()
                response = session.post(url, json={"clientId": normal.client_id, "subscriptions": keys}, timeout=30)
                latencies.append(time.perf_counter() - start)
                assert response.status_code == 204, response.text
                round_ += 1
                time.sleep(NORMAL_EVERY)

    try:
        threads = [threading.Thread(target=churn), threading.Thread(target=subscribe_now_and_then)]
        for thread in threads:
            thread.start()
        while time.monotonic() < stop:
            samples.append(count())
            time.sleep(SAMPLE_EVERY)
        for thread in threads:
            thread.join()
        at_end = count()
        time.sleep(2.0)
        result = {
            "label": label, "backplane": kind, "env": env, "seconds": seconds,
            "hostile_statuses": dict(statuses), "held": accepted + 2,
            "channels_max": max(samples), "channels_at_end": at_end, "channels_2s_later": count(),
            "normal_posts": len(latencies),
            "normal_p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
            "normal_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
            "normal_max_ms": round(max(latencies) * 1000, 1),
        }
        print(f"[{kind} / {label}] hostile {dict(statuses)}; channels max {result['channels_max']}, "
              f"at end {at_end}, 2 s later {result['channels_2s_later']} (clients hold {result['held']}); "
              f"normal POST p50 {result['normal_p50_ms']} ms, p99 {result['normal_p99_ms']} ms, "
              f"max {result['normal_max_ms']} ms over {len(latencies)}", flush=True)
        return result
    finally:
        hostile.close()
        normal.close()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--backplanes", default="redis,redis-cluster")
    parser.add_argument("--compare", metavar="REF", help="also measure the library as committed at REF, first")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        variants: list[tuple[Path, str, dict[str, str]]] = []
        if args.compare:
            code = tmp / "code"
            code.mkdir()
            archive = subprocess.run(["git", "archive", args.compare, "flask_rtbroker", "examples"], cwd=ROOT,
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
            variants.append((code, args.compare, {}))
        variants.append((ROOT, "work tree", {}))
        variants.append((ROOT, "work tree, no bucket", {"RTBROKER_MAX_SUBSCRIPTION_CHANGES": "0"}))
        for kind in args.backplanes.split(","):
            workdir = tmp / kind
            workdir.mkdir()
            backplane = RedisServer(workdir).start() if kind == "redis" else RedisClusterServer(workdir).start()
            try:
                for code_dir, label, env in variants:
                    runs.append(run(kind, backplane, code_dir, tmp, label, env, args.seconds))
            finally:
                backplane.stop()
    report = {"command": "python -m benchmarks.channel_churn " + " ".join(sys.argv[1:]), "runs": runs}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
