"""Memory floor of a stream without this library: gunicorn + gevent + a bare Flask streaming view.

    .venv/bin/python -m benchmarks.floor_memory [--streams 2000]

Starts ``gunicorn -k gevent`` on a minimal Flask app whose ``/api/realtime`` writes one event and
then sleeps, opens *streams* raw connections, and prints the worker's RSS growth per stream
(``VmRSS`` before and after, after 2 s idle) — what any Flask streaming response costs under
gunicorn's gevent worker, to compare with this library's figure in the benchmark report. Saves
the figure to benchmarks/results/floor_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "floor_memory.json"
APP = '''
import gevent
from flask import Flask, Response, jsonify

app = Flask(__name__)
open_streams = [0]


@app.get("/api/realtime")
def stream():
    def events():
        open_streams[0] += 1
        try:
            yield b"id:x\\nevent:PB_CONNECT\\ndata:{}\\n\\n"
            gevent.sleep(600)
        finally:
            open_streams[0] -= 1
    return Response(events(), content_type="text/event-stream", direct_passthrough=True)


@app.get("/stats")
def stats():
    with open("/proc/self/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return jsonify(clients=open_streams[0], rss_kb=rss)
'''


def open_stream(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /api/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    received = b""
    while b"\n\n" not in received:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("the floor server closed a stream")
        received += chunk
    return sock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=2000)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "floorapp.py").write_text(APP)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1", "--worker-connections", "20000",
             "--graceful-timeout", "1", "-b", f"127.0.0.1:{port}", "floorapp:app"],
            cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": tmp},
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    requests.get(f"{url}/stats", timeout=1)
                    break
                except requests.RequestException:
                    time.sleep(0.1)
            warm = [open_stream(port) for _ in range(20)]
            before = requests.get(f"{url}/stats", timeout=10).json()
            streams = [open_stream(port) for _ in range(args.streams)]
            time.sleep(2)
            after = requests.get(f"{url}/stats", timeout=10).json()
            for sock in warm + streams:
                sock.close()
        finally:
            server.terminate()
            server.wait(30)
    per_stream = (after["rss_kb"] - before["rss_kb"]) / args.streams
    report = {
        "command": "python -m benchmarks.floor_memory " + " ".join(sys.argv[1:]),
        "streams": args.streams,
        "open_streams_seen": after["clients"],
        "rss_kb_per_stream": round(per_stream, 2),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
