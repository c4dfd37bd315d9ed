"""Live servers for tests: the example app in a real WSGI server process on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from flask_rtbroker.testing import SSEClient

ROOT = Path(__file__).resolve().parent.parent
SERVER_MODES = ("gunicorn-gevent", "pywsgi", "werkzeug", "gunicorn-gthread", "gunicorn-gevent-queued")
"""Every server the suite runs against; ``gunicorn-gevent-queued`` is gunicorn's gevent worker
with write-through off (``RTBROKER_WRITE_THROUGH=False``: every delivery through the stream)."""
QUEUED_SUFFIX = "-queued"
HOST = "127.0.0.1"


def free_port() -> int:
    """Return a TCP port that was free a moment ago on the loopback interface."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _command(mode: str, port: int, target: str, args: list[str]) -> list[str]:
    bind = f"{HOST}:{port}"
    mode = mode.removesuffix(QUEUED_SUFFIX)
    if mode == "gunicorn-gevent":
        return [sys.executable, "-m", "gunicorn", "-k", "gevent", "--worker-connections", "5000",
                "-w", "1", "-b", bind, "--graceful-timeout", "2", *args, target]
    if mode == "gunicorn-gthread":
        return [sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", "64",
                "-w", "1", "-b", bind, "--graceful-timeout", "2", *args, target]
    if mode in ("pywsgi", "werkzeug") and not args:
        return [sys.executable, str(ROOT / "tests" / "serve.py"), mode, HOST, str(port), target]
    raise ValueError(f"unknown server mode {mode!r}, or arguments {args} it does not take")


@dataclass
class LiveServer:
    """A server process running *target* (``module:app``) in *mode* with extra environment."""

    mode: str
    target: str = "examples.notify_app:app"
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    """Extra command-line arguments, after the defaults (gunicorn takes the last of a repeated flag)."""
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, log_dir: Path, timeout: float = 20.0) -> "LiveServer":
        """Start the process and wait until it accepts connections."""
        self.port = self.port or free_port()
        env = {**os.environ, "RTBROKER_HEARTBEAT": "0", **self.env, "PYTHONUNBUFFERED": "1"}
        if self.mode.endswith(QUEUED_SUFFIX):
            env["RTBROKER_WRITE_THROUGH"] = "False"
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        self.log_path = log_dir / f"{self.mode}-{self.port}.log"
        self.process = subprocess.Popen(
            _command(self.mode, self.port, self.target, self.args), cwd=ROOT, env=env,
            stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.mode} server exited early:\n{self.log()}")
            try:
                socket.create_connection((HOST, self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.mode} server did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop the server (its whole process group) and wait for it."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)

    # -- protocol helpers ----------------------------------------------------------------------

    def stream(self, **kwargs: Any) -> SSEClient:
        """Open an SSE stream and read its PB_CONNECT."""
        return SSEClient.connect(HOST, self.port, **kwargs)

    def subscribe(self, client_id: str, subscriptions: list[str], **kwargs: Any) -> requests.Response:
        """POST a subscription list."""
        return requests.post(f"{self.url}/api/realtime", json={"clientId": client_id, "subscriptions": subscriptions}, timeout=10, **kwargs)

    def notify(self, topic: str, data: Any, **extra: Any) -> int:
        """Call the example app's ``POST /notify``; return how many deliveries were queued."""
        response = requests.post(f"{self.url}/notify", json={"topic": topic, "data": data, **extra}, timeout=30)
        response.raise_for_status()
        return response.json()["delivered"]

    def total_clients(self) -> int:
        return requests.get(f"{self.url}/stats", timeout=10).json()["clients"]

    def wait_clients(self, expected: int, timeout: float) -> float:
        """Wait until the server counts *expected* clients; return the seconds it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.total_clients() == expected:
                return time.monotonic() - start
            time.sleep(0.02)
        raise AssertionError(f"server still has {self.total_clients()} clients, expected {expected}")
