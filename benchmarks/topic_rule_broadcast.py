"""What a topic rule costs a broadcast: one notify to N subscribers of one topic, in process.

    .venv/bin/python benchmarks/topic_rule_broadcast.py --old /work/main --new .

Runs the two code trees side by side in one sitting, alternating child processes (each tree's
own ``.venv/bin/python``, so each imports its own ``flask_rtbroker``): N clients registered under
gevent, each signed in as a distinct user (the worst case for a per-identity cache) and
subscribed to ``news``; every round is one ``broker.notify("news", ...)`` timed alone, then the
queues are emptied untimed. The new tree runs twice: with a rule covering ``news`` registered
(``broker.topic_rule("news", ...)``, allowing everyone) and without any rule. Reported: the
median wall and CPU time per broadcast of each variant (median over children of the median over
rounds), the first broadcast with the rule (where every subscriber is decided once), and the
ratios to the old tree. No socket is written: this is the fan-out alone, where a per-subscriber
check weighs most (a real broadcast also writes to each socket; see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def child(clients: int, rounds: int, rule: bool) -> dict[str, Any]:
    """Measure in this process; *rule*: register a rule covering the topic (when supported)."""
    from gevent import monkey

    monkey.patch_all()
    from flask import Flask

    import flask_rtbroker
    from flask_rtbroker import RealtimeBroker
    from flask_rtbroker.client import AUTH_KEY

    app = Flask("bench")
    app.config.update(RTBROKER_CONCURRENCY="gevent", RTBROKER_GRACEFUL_SHUTDOWN=False)
    broker = RealtimeBroker(app)
    registered = rule and hasattr(broker, "topic_rule")
    if registered:
        broker.topic_rule("news", lambda client, topic, auth: auth is not None)
    state = app.extensions["rtbroker"]
    subscribers = []
    for i in range(clients):
        client = state.new_client()
        state.broker.register(client)
        client.set(AUTH_KEY, {"collectionName": "users", "id": f"u{i}"})
        client.subscribe("news")
        subscribers.append(client)
    walls, cpus = [], []
    with app.app_context():
        for n in range(rounds):
            wall, cpu = time.perf_counter(), time.process_time()
            delivered = broker.notify("news", {"n": n, "text": "hello"})
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            assert delivered == clients, delivered
            for client in subscribers:
                client.take()
    state.close()
    return {
        "code": str(Path(flask_rtbroker.__file__).parent.parent),
        "rule": registered,
        "first_ms": walls[0] * 1000,
        "wall_ms": statistics.median(walls[1:]) * 1000,
        "cpu_ms": statistics.median(cpus[1:]) * 1000,
    }


def run_child(tree: Path, clients: int, rounds: int, rule: bool) -> dict[str, Any]:
    command = [str(tree / ".venv" / "bin" / "python"), str(Path(__file__).resolve()), "--child",
               "--clients", str(clients), "--rounds", str(rounds)] + (["--rule"] if rule else [])
    output = subprocess.run(command, cwd=tree, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, help="the tree measured as today's (its own .venv)")
    parser.add_argument("--new", type=Path, default=Path("."), help="the tree with topic rules (its own .venv)")
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=40, help="broadcasts per child (the first is reported apart)")
    parser.add_argument("--children", type=int, default=5, help="children per variant, alternated")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rule", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.clients, args.rounds, args.rule)))
        return 0
    if args.old is None:
        parser.error("--old is required")
    variants = {"old": (args.old.resolve(), False), "new, rule": (args.new.resolve(), True),
                "new, no rule": (args.new.resolve(), False)}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for i in range(args.children):
        order = list(variants) if i % 2 == 0 else list(reversed(variants))
        for name in order:
            tree, rule = variants[name]
            runs[name].append(run_child(tree, args.clients, args.rounds, rule))
    summary: dict[str, Any] = {"clients": args.clients, "rounds": args.rounds, "children": args.children}
    for name, results in runs.items():
        summary[name] = {
            "code": results[0]["code"], "rule": results[0]["rule"],
            "wall_ms": statistics.median(r["wall_ms"] for r in results),
            "cpu_ms": statistics.median(r["cpu_ms"] for r in results),
            "first_ms": statistics.median(r["first_ms"] for r in results),
        }
    old = summary["old"]
    for name in ("new, rule", "new, no rule"):
        summary[name]["wall_ratio"] = summary[name]["wall_ms"] / old["wall_ms"]
        summary[name]["cpu_ratio"] = summary[name]["cpu_ms"] / old["cpu_ms"]
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
