"""What a second gunicorn gevent worker costs: 1 vs 2 workers on the Redis backplane, side by side.

    .venv/bin/python -m benchmarks.second_worker [--clients 10000] [--rounds 5] [--repeats 2] [--code head]

Two configurations of the benchmark runner's server (``benchmarks.run.Server``: ``gunicorn -k
gevent --worker-connections 20000 -c benchmarks/gunicorn_conf.py examples.notify_app:app``,
``RTBROKER_HEARTBEAT=0``), both with ``RTBROKER_BACKPLANE=redis://127.0.0.1:<port>/0`` on one
throwaway ``redis-server`` (``tests.redis_server.RedisServer``, a free loopback port):

- **A**: ``-w 1``;
- **B**: ``-w 2``. The workers share the listening socket, so a client's ``GET /api/realtime``
  and its subscription ``POST`` may be accepted by different workers; such a POST is forwarded
  over Redis to the worker holding the stream (the POST and its reply: two ``PUBLISH``\\ es).

They run alternately, A B B A (``--repeats`` measurements of each; the pair's order flips every
time), a fresh server each time, after waiting (at most 30 s) for the machine to be quiet. The
load generator is ``benchmarks.loadgen.LoadGen`` running in this process (so it is never counted
as server CPU), subclassed only to count clients over all workers (``/stats?cluster=1``).
Per measurement:

1. **warm-up**: 50 clients connect, subscribe, get one broadcast, disconnect (repeated, at most 5
   times, until every worker has held one of them, so each has its backplane listener running);
   then wait until the workers are idle.
2. **connect + subscribe**: ``--clients`` N clients, 500 at a time (loadgen's ``connect_all``:
   ``GET /api/realtime``, read ``PB_CONNECT``, ``POST /api/realtime`` subscribing to ``bench``,
   expect 204). Rate = N / wall time. CPU = the sum over every worker (every child of the gunicorn
   master) of utime + stime from ``/proc/<pid>/stat`` over the phase (the tasks' ``schedstat``
   run time, the same without 10 ms ticks, next to it) / N. Redis's CPU over the phase
   (``INFO cpu``, user + sys) is reported on its own. **Forwarded POSTs**: the library has no
   counter of them, so they are inferred from Redis: ``INFO commandstats`` ``cmdstat_publish``
   calls during the phase / 2 (nothing else publishes then: a forwarded POST publishes the POST
   to the owner's inbox and the owner its reply). Which worker holds each stream is read from
   the client id (its first 8 characters are the holding process's route).
3. **broadcasts**: one warm-up broadcast, then ``--rounds`` measured ones 0.5 s apart
   (loadgen's ``broadcast_round``: ``POST /notify`` of a 100-byte payload to ``bench``, every
   client must get it once, with its own id, the right sequence number). Time to the last
   delivery (median over rounds); worker CPU (all workers, as above) over each round's window / N
   = CPU per delivery; Redis CPU per broadcast.

Per configuration the figures are pooled over its repeats (CPU: total CPU / total connects or
deliveries; time to last: median over all measured rounds); ratios are B / A. Saves
``benchmarks/results/second_worker.json`` and ``second_worker.md``. The library is measured from
a copy of the work tree taken at the start (``benchmarks.scale_out.snapshot_code``), or with
``--code head`` as committed at HEAD (``git archive``), so edits made meanwhile do not leak in.
Every socket is loopback; every server is stopped on exit, errors and Ctrl-C included.
"""

from __future__ import annotations

import argparse
import datetime
import json
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import gevent
import redis

from benchmarks import loadgen
from benchmarks.run import HOST, ROOT, Server, machine_info, wait_for_quiet
from benchmarks.scale_out import archive_code, cpu_seconds, redis_counters, run_seconds, snapshot_code
from tests.redis_server import RedisServer

RESULTS = ROOT / "benchmarks" / "results" / "second_worker.json"
REPORT = RESULTS.with_suffix(".md")
ROUTE_LENGTH = 8
"""A client id starts with the route of the process holding it (``flask_rtbroker.backplane.base``)."""
WARMUP_CLIENTS = 50
WARMUP_TRIES = 5
TARGETS = {"cpu_per_connect_ms": 1.2, "cpu_per_delivery_us": 1.1}
"""Issue targets for the ratio B / A."""


# -- server and load generator -------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """The child pids of *pid* (for the gunicorn master: its workers)."""
    return sorted(int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


class Workers(Server):
    """The runner's ``ours`` server with ``-w WORKERS`` on a Redis backplane; every worker's pid."""

    def __init__(self, workers: int, tmp: Path, code_dir: Path, backplane: str) -> None:
        super().__init__("ours", tmp, code_dir=code_dir, extra_env={"RTBROKER_BACKPLANE": backplane})
        self.workers = workers
        self.worker_pids: list[int] = []

    def command(self) -> tuple[list[str], dict[str, str]]:
        command, env = super().command()
        command[command.index("-w") + 1] = str(self.workers)
        return command, env

    def measured_pid(self, timeout: float = 30.0) -> int:
        """Wait until the master has forked every worker; the first one's pid (what loadgen reads)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = children(self.process.pid)
            if len(pids) == self.workers:
                self.worker_pids = pids
                return pids[0]
            time.sleep(0.1)
        raise RuntimeError(f"expected {self.workers} gunicorn workers, found {children(self.process.pid)}")

    def check_workers(self) -> None:
        """Raise if a worker was replaced (a restart would spoil the CPU sums)."""
        assert self.process is not None
        now = children(self.process.pid)
        if now != self.worker_pids:
            raise RuntimeError(f"gunicorn workers changed from {self.worker_pids} to {now}")

    def cpu(self) -> dict[str, Any]:
        """utime + stime and schedstat run time of every worker, and of the master, in seconds."""
        assert self.process is not None
        return {"workers": [cpu_seconds(pid) for pid in self.worker_pids],
                "workers_run": [run_seconds(pid) for pid in self.worker_pids],
                "master": cpu_seconds(self.process.pid)}

    def settle(self, timeout: float = 20.0, idle: float = 0.02) -> float:
        """Wait until the workers used less than *idle* CPU seconds in 0.5 s; the seconds waited."""
        start = time.monotonic()
        before = sum(self.cpu()["workers_run"])
        while time.monotonic() - start < timeout:
            gevent.sleep(0.5)
            now = sum(self.cpu()["workers_run"])
            if now - before < idle:
                break
            before = now
        return round(time.monotonic() - start, 1)


def cpu_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    per_worker = [b - a for a, b in zip(before["workers"], after["workers"])]
    run = [b - a for a, b in zip(before["workers_run"], after["workers_run"])]
    return {"worker_cpu_s": round(sum(per_worker), 3), "worker_run_s": round(sum(run), 4),
            "per_worker_cpu_s": [round(x, 3) for x in per_worker], "per_worker_run_s": [round(x, 4) for x in run],
            "master_cpu_s": round(after["master"] - before["master"], 3)}


class ClusterLoadGen(loadgen.LoadGen):
    """loadgen's generator, counting the clients of every worker (``/stats?cluster=1``), not only
    those of the worker that happens to answer ``/stats``."""

    def server_clients(self) -> int:
        status, body = self.request("GET", "/stats?cluster=1", timeout=10)
        if status != 200:
            raise loadgen.HttpError(f"/stats?cluster=1 answered {status}")
        return int(json.loads(body)["cluster"])


def measured(server: Workers, redis_client: redis.Redis, action: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """Run *action*; its result, and the workers' and Redis's CPU (and publishes) meanwhile."""
    server.check_workers()
    cpu0, redis0 = server.cpu(), redis_counters(redis_client)
    result = action()
    cpu1, redis1 = server.cpu(), redis_counters(redis_client)
    server.check_workers()
    return result, {**cpu_delta(cpu0, cpu1), "redis_cpu_s": round(redis1["cpu"] - redis0["cpu"], 4),
                    "publishes": int(redis1["publishes"] - redis0["publishes"])}


def streams_per_worker(gen: loadgen.LoadGen) -> list[int]:
    """How many of the generator's streams each process holds (by the route in the client id)."""
    return sorted(Counter(stream.cid[:ROUTE_LENGTH] for stream in gen.streams).values(), reverse=True)


# -- one measurement -----------------------------------------------------------------------------


def warm_up(server: Workers, gen: ClusterLoadGen) -> list[dict[str, Any]]:
    """Until every worker has held a stream (each then has its backplane listener up)."""
    tries = []
    for _ in range(WARMUP_TRIES):
        connect = gen.connect_all(WARMUP_CLIENTS)
        held = streams_per_worker(gen)
        gen.watch_all()
        round_ = gen.broadcast_round(0)
        gen.close_all()
        tries.append({"connected": connect["ok"], "streams_per_worker": held, "all_received": round_["all_received"]})
        if len(held) == server.workers and round_["all_received"]:
            break
    return tries


def broadcast(server: Workers, redis_client: redis.Redis, gen: ClusterLoadGen, seq: int) -> dict[str, Any]:
    """One of loadgen's broadcast rounds, with every worker's CPU and Redis's over its window."""
    round_, cost = measured(server, redis_client, lambda: gen.broadcast_round(seq))
    keep = ("seq", "received", "missing", "duplicates", "stale", "all_received", "p50_ms", "last_ms", "notify_ms",
            "status", "delivered_reported", "notify_error", "loadgen_cpu_util")
    return {**{k: round_[k] for k in keep if k in round_}, **cost}


def measure(workers: int, code_dir: Path, redis_server: RedisServer, tmp: Path,
            args: argparse.Namespace) -> dict[str, Any]:
    """One fresh server of *workers* workers: warm-up, connect + subscribe, broadcasts."""
    quiet = wait_for_quiet(0.3, args.quiet_wait)
    server = Workers(workers, tmp, code_dir, redis_server.url)
    redis_client = redis.Redis(host=HOST, port=redis_server.port, socket_timeout=10)
    try:
        server.start()
        gen = ClusterLoadGen(loadgen.parse_args(
            ["--port", str(server.port), "--server-pid", str(server.pid), "--concurrency", str(args.concurrency),
             "--connect-timeout", "60", "--round-timeout", "60"]))
        with gevent.Timeout(args.max_seconds, TimeoutError(f"measurement exceeded {args.max_seconds}s")):
            return run_phases(server, redis_client, gen, args, quiet)
    finally:
        redis_client.close()
        server.stop()


def run_phases(server: Workers, redis_client: redis.Redis, gen: ClusterLoadGen, args: argparse.Namespace,
               quiet: dict[str, Any]) -> dict[str, Any]:
    n = args.clients
    out: dict[str, Any] = {"workers": server.workers, "worker_pids": server.worker_pids, "machine_before": quiet}
    out["warmup"] = warm_up(server, gen)
    out["settle_s"] = server.settle()
    connect, cost = measured(server, redis_client, lambda: gen.connect_all(n, first_idx=1_000_000))
    ok = connect["ok"]
    out["connect"] = {
        **{k: connect[k] for k in ("clients", "ok", "errors", "error_samples", "seconds", "rate", "latency_ms",
                                   "loadgen_cpu_util")},
        **cost,
        "cpu_per_connect_ms": 1e3 * cost["worker_cpu_s"] / ok if ok else None,
        "run_per_connect_ms": 1e3 * cost["worker_run_s"] / ok if ok else None,
        "redis_cpu_per_connect_us": 1e6 * cost["redis_cpu_s"] / ok if ok else None,
        "forwarded_posts": cost["publishes"] / 2,
        "forwarded_share": cost["publishes"] / 2 / ok if ok else None,
        "streams_per_worker": streams_per_worker(gen),
        "server_clients": gen.server_clients(),
    }
    gen.watch_all()
    warm = gen.broadcast_round(1)
    gevent.sleep(gen.args.gap)
    rounds = []
    for i in range(args.rounds):
        rounds.append(broadcast(server, redis_client, gen, 2 + i))
        gevent.sleep(gen.args.gap)
    out["warmup_broadcast_all_received"] = warm["all_received"]
    out["rounds"] = rounds
    out["stream_errors"] = gen.stream_errors
    out["unexpected_events"] = gen.unexpected_events
    out["exactly_once"] = (ok == n and out["connect"]["server_clients"] == n and gen.stream_errors == 0
                           and gen.unexpected_events == 0
                           and all(r["all_received"] and not r["duplicates"] and not r["stale"] for r in rounds))
    out["teardown"] = gen.close_all()
    return out


# -- summary -------------------------------------------------------------------------------------


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One configuration's figures over its repeats."""
    connects = sum(r["connect"]["ok"] for r in runs)
    rounds = [x for r in runs for x in r["rounds"]]
    deliveries = sum(x["received"] for x in rounds)
    lasts = [x["last_ms"] for x in rounds if x.get("last_ms") is not None]
    return {
        "runs": len(runs),
        "connect_rate": statistics.mean(r["connect"]["rate"] or 0 for r in runs),
        "cpu_per_connect_ms": 1e3 * sum(r["connect"]["worker_cpu_s"] for r in runs) / max(1, connects),
        "run_per_connect_ms": 1e3 * sum(r["connect"]["worker_run_s"] for r in runs) / max(1, connects),
        "redis_cpu_per_connect_us": 1e6 * sum(r["connect"]["redis_cpu_s"] for r in runs) / max(1, connects),
        "forwarded_share": sum(r["connect"]["forwarded_posts"] for r in runs) / max(1, connects),
        "streams_per_worker": [r["connect"]["streams_per_worker"] for r in runs],
        "connect_errors": sum(r["connect"]["errors"] for r in runs),
        "last_ms_median": statistics.median(lasts) if lasts else None,
        "last_ms_min": min(lasts, default=None),
        "last_ms_max": max(lasts, default=None),
        "cpu_per_delivery_us": 1e6 * sum(x["worker_cpu_s"] for x in rounds) / max(1, deliveries),
        "run_per_delivery_us": 1e6 * sum(x["worker_run_s"] for x in rounds) / max(1, deliveries),
        "redis_cpu_per_broadcast_ms": 1e3 * statistics.mean(x["redis_cpu_s"] for x in rounds) if rounds else None,
        "publishes_per_broadcast": statistics.mean(x["publishes"] for x in rounds) if rounds else None,
        "loadgen_cpu_util_connect": statistics.mean(r["connect"]["loadgen_cpu_util"] or 0 for r in runs),
        "loadgen_cpu_util_broadcast": statistics.median(x["loadgen_cpu_util"] for x in rounds) if rounds else None,
        "exactly_once": all(r["exactly_once"] for r in runs),
    }


def ratios(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float | None]:
    keys = ("connect_rate", "cpu_per_connect_ms", "run_per_connect_ms", "redis_cpu_per_connect_us",
            "last_ms_median", "cpu_per_delivery_us", "run_per_delivery_us")
    return {k: round(b[k] / a[k], 3) if a.get(k) and b.get(k) is not None else None for k in keys}


def extra_per_forwarded(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """B's extra worker CPU per connect + subscribe over A's, per forwarded POST, in ms: what the
    second worker costs if all of it came from the forwarding."""
    if not b["forwarded_share"]:
        return None
    return round((b["cpu_per_connect_ms"] - a["cpu_per_connect_ms"]) / b["forwarded_share"], 3)


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    a, b, r = report["summary"]["A"], report["summary"]["B"], report["summary"]["ratio_b_over_a"]

    def target(key: str) -> str:
        limit = TARGETS[key]
        return f"≤ {limit}× ({'met' if r[key] is not None and r[key] <= limit else 'missed'})"

    rows = [
        ("connect + subscribe, /s", _f(a["connect_rate"], 0), _f(b["connect_rate"], 0), _f(r["connect_rate"], 2), ""),
        ("worker CPU per connect + subscribe, ms (schedstat)",
         f"{_f(a['cpu_per_connect_ms'], 3)} ({_f(a['run_per_connect_ms'], 3)})",
         f"{_f(b['cpu_per_connect_ms'], 3)} ({_f(b['run_per_connect_ms'], 3)})",
         f"{_f(r['cpu_per_connect_ms'], 2)} ({_f(r['run_per_connect_ms'], 2)})", target("cpu_per_connect_ms")),
        ("Redis CPU per connect + subscribe, µs", _f(a["redis_cpu_per_connect_us"]), _f(b["redis_cpu_per_connect_us"]),
         "", ""),
        ("subscription POSTs forwarded (PUBLISH calls / 2)", f"{100 * a['forwarded_share']:.1f}%",
         f"{100 * b['forwarded_share']:.1f}%", "", ""),
        ("streams per worker", "; ".join(map(str, a["streams_per_worker"])),
         "; ".join(map(str, b["streams_per_worker"])), "", ""),
        ("broadcast: last delivery, median ms (min–max)",
         f"{_f(a['last_ms_median'])} ({_f(a['last_ms_min'])}–{_f(a['last_ms_max'])})",
         f"{_f(b['last_ms_median'])} ({_f(b['last_ms_min'])}–{_f(b['last_ms_max'])})", _f(r["last_ms_median"], 2), ""),
        ("broadcast: worker CPU per delivery, µs (schedstat)",
         f"{_f(a['cpu_per_delivery_us'])} ({_f(a['run_per_delivery_us'])})",
         f"{_f(b['cpu_per_delivery_us'])} ({_f(b['run_per_delivery_us'])})",
         f"{_f(r['cpu_per_delivery_us'], 2)} ({_f(r['run_per_delivery_us'], 2)})", target("cpu_per_delivery_us")),
        ("Redis CPU per broadcast, ms (PUBLISH calls)", f"{_f(a['redis_cpu_per_broadcast_ms'], 2)} "
         f"({_f(a['publishes_per_broadcast'], 0)})", f"{_f(b['redis_cpu_per_broadcast_ms'], 2)} "
         f"({_f(b['publishes_per_broadcast'], 0)})", "", ""),
        ("load generator CPU, connect / broadcast (cores)",
         f"{_f(a['loadgen_cpu_util_connect'], 2)} / {_f(a['loadgen_cpu_util_broadcast'], 2)}",
         f"{_f(b['loadgen_cpu_util_connect'], 2)} / {_f(b['loadgen_cpu_util_broadcast'], 2)}", "", ""),
        ("every broadcast to every client exactly once", str(a["exactly_once"]), str(b["exactly_once"]), "", ""),
    ]
    s = report["settings"]
    lines = [
        "# A second gunicorn gevent worker: 1 vs 2 workers on the Redis backplane", "",
        f"Command: `{report['command']}`  ", f"Date: {report['started']} ({report['elapsed_s']:.0f} s)  ",
        f"Machine: {report['machine_text']}  ", f"Code: {report['code']}", "",
        f"{s['clients']:,} clients ({s['concurrency']} connecting at once), {s['rounds']} measured broadcasts per "
        f"measurement, order {' '.join(s['order'])}. Worker CPU = utime + stime of every child of the gunicorn master "
        "(the load generator is another process and not counted); pooled over the repeats.", "",
        "| | A: `-w 1` | B: `-w 2` | B / A | target |", "| --- | ---: | ---: | ---: | --- |",
        *(f"| {' | '.join(row)} |" for row in rows), "",
        "Forwarded POSTs: the library counts none; the figure is Redis's `cmdstat_publish` calls during the "
        "connect phase / 2 (the forwarded POST and the owner's reply). B's extra worker CPU per connect + "
        "subscribe, divided by the forwarded share: "
        f"{_f(report['summary']['extra_cpu_per_forwarded_post_ms'], 3)} ms per forwarded POST.", "",
        "| run | workers | connect /s | CPU / connect ms | per worker CPU s | forwarded | last ms (rounds) "
        "| CPU / delivery µs | errors |", "| ---: | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: |",
    ]
    for k, run in enumerate(report["runs"], 1):
        c = run["connect"]
        rounds = run["rounds"]
        per_delivery = 1e6 * sum(x["worker_cpu_s"] for x in rounds) / max(1, sum(x["received"] for x in rounds))
        lines.append(f"| {k} | {run['workers']} | {_f(c['rate'], 0)} | {_f(c['cpu_per_connect_ms'], 3)} | "
                     f"{c['per_worker_cpu_s']} | {c['forwarded_posts']:.0f} | "
                     f"{', '.join(_f(x['last_ms'], 0) for x in rounds)} | {_f(per_delivery)} | {c['errors']} |")
    return "\n".join(lines) + "\n"


# -- the run -------------------------------------------------------------------------------------


def order(repeats: int) -> list[str]:
    """A B, B A, A B, ...: each configuration *repeats* times, alternating which goes first."""
    return [x for i in range(repeats) for x in (("A", "B") if i % 2 == 0 else ("B", "A"))]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=5, help="measured broadcasts per measurement")
    parser.add_argument("--repeats", type=int, default=2, help="measurements of each configuration (A B B A ...)")
    parser.add_argument("--concurrency", type=int, default=500, help="clients connecting at once")
    parser.add_argument("--code", choices=("worktree", "head"), default="worktree",
                        help="the library as in the work tree at the start (a copy; default) or as committed at HEAD")
    parser.add_argument("--quiet-wait", type=float, default=30.0,
                        help="before each measurement wait at most this long for < 0.3 busy cores")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="hard limit for one measurement")
    parser.add_argument("--out-dir", type=Path, default=RESULTS.parent)
    return parser.parse_args(argv)


def interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)
    loadgen.raise_nofile_limit()
    started = time.time()
    machine = machine_info()
    report: dict[str, Any] = {
        "command": " ".join([".venv/bin/python -m benchmarks.second_worker", *(sys.argv[1:] if argv is None else argv)]),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": {"clients": args.clients, "rounds": args.rounds, "repeats": args.repeats,
                     "concurrency": args.concurrency, "order": order(args.repeats), "code": args.code},
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="second-worker-") as tmp_name:
        tmp = Path(tmp_name)
        if args.code == "head":
            report["code"] = f"HEAD {archive_code('HEAD', tmp / 'code')[:12]} (git archive)"
        else:
            digest = snapshot_code(ROOT, tmp / "code")
            dirty = machine["git"]["uncommitted_in_library"]
            report["code"] = (f"work tree at HEAD {machine['git']['commit']}, copied at the start (snapshot "
                              f"{digest}" + (f"; uncommitted: {', '.join(line[2:].strip() for line in dirty)})" if dirty
                                               else "; no uncommitted changes in flask_rtbroker/ or examples/)"))
        redis_server = RedisServer(tmp)
        try:
            redis_server.start()
            version = redis.Redis(host=HOST, port=redis_server.port, socket_timeout=10).info()["redis_version"]
            report["machine_text"] = (f"{machine['cpus']} cores ({machine['cpu_model']}), Linux {machine['kernel']}, "
                                      f"Python {machine['python']}, gunicorn {machine['versions']['gunicorn']}, "
                                      f"gevent {machine['versions']['gevent']}, redis-server {version}")
            for label in report["settings"]["order"]:
                workers = {"A": 1, "B": 2}[label]
                print(f"[{time.time() - started:5.0f}s] {label}: -w {workers}, {args.clients} clients", flush=True)
                run = measure(workers, tmp / "code", redis_server, tmp, args)
                c = run["connect"]
                print(f"        connect {c['rate'] or 0:.0f}/s, {c['cpu_per_connect_ms'] or 0:.3f} ms CPU each, "
                      f"forwarded {c['forwarded_posts']:.0f}, streams {c['streams_per_worker']}, errors {c['errors']}; "
                      f"last {[round(x['last_ms'] or 0) for x in run['rounds']]} ms, exactly once {run['exactly_once']}",
                      flush=True)
                report["runs"].append(run)
        finally:
            redis_server.stop()
    by = {label: pooled([r for r in report["runs"] if r["workers"] == workers]) for label, workers in (("A", 1), ("B", 2))}
    report["summary"] = {**by, "ratio_b_over_a": ratios(by["A"], by["B"]), "targets": TARGETS,
                         "extra_cpu_per_forwarded_post_ms": extra_per_forwarded(by["A"], by["B"])}
    report["elapsed_s"] = time.time() - started
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / RESULTS.name).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    text = markdown(report)
    (args.out_dir / REPORT.name).write_text(text)
    print()
    print(text)
    print(f"saved {args.out_dir / RESULTS.name} and {args.out_dir / REPORT.name}", flush=True)
    return 0 if by["A"]["exactly_once"] and by["B"]["exactly_once"] else 1


if __name__ == "__main__":
    sys.exit(main())
