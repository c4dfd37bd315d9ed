"""Run the Node scenario scripts of tests/js/ and talk to them while they run.

A script gets the server URL as its first argument. When it needs the test to act it writes
``@@step {"step": name, ...}`` on stderr and waits for one JSON line on stdin: :func:`run_node`
calls ``steps[name](message)`` and sends back the dict it returns (or ``{"error": ...}`` when the
handler raised). At the end the script prints one JSON object on stdout, which is returned.

Any problem (node or the packages missing, a timeout, a non-zero exit, a failed scenario) ends
the test with ``pytest.fail`` and the script's stderr, so nothing is ever skipped silently.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

JS_DIR = Path(__file__).resolve().parent / "js"
STEP_PREFIX = "@@step "
REQUIRED_PACKAGES = ("pocketbase", "eventsource", "playwright-core")

StepHandler = Callable[[dict[str, Any]], dict[str, Any] | None]


def require_node() -> str:
    """Return the node executable; fail the test loudly when node or tests/js deps are missing."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the JS SDK tests need Node.js 20+ (see scripts/test.sh)")
    missing = [name for name in REQUIRED_PACKAGES if not (JS_DIR / "node_modules" / name / "package.json").is_file()]
    if missing:
        pytest.fail(
            f"tests/js/node_modules lacks {', '.join(missing)}: run `npm ci --prefix tests/js` "
            "(scripts/test.sh does it)"
        )
    return node


def _pump(stream: Any, tag: str, out: "queue.Queue[tuple[str, str | None]]") -> None:
    for raw in iter(stream.readline, b""):
        out.put((tag, raw.decode("utf-8", "replace").rstrip("\n")))
    out.put((tag, None))


def run_node(
    script: str,
    url: str,
    *args: str,
    steps: dict[str, StepHandler] | None = None,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
    context: Callable[[], str] | None = None,
) -> dict[str, Any]:
    """Run ``tests/js/<script>`` against *url*; answer its steps; return its JSON result.

    *timeout* bounds the whole run (steps included); *context* adds text (e.g. a server log) to
    failure messages.
    """
    node = require_node()
    steps = steps or {}
    process = subprocess.Popen(
        [node, str(JS_DIR / script), url, *args],
        cwd=JS_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    lines: "queue.Queue[tuple[str, str | None]]" = queue.Queue()
    for stream, tag in ((process.stdout, "out"), (process.stderr, "err")):
        threading.Thread(target=_pump, args=(stream, tag, lines), daemon=True).start()

    stdout: list[str] = []
    stderr: list[str] = []
    open_streams = 2
    deadline = time.monotonic() + timeout

    def failure(reason: str) -> None:
        extra = context() if context is not None else ""
        pytest.fail(
            f"{script}: {reason}\n--- stdout ---\n" + "\n".join(stdout)
            + "\n--- stderr ---\n" + "\n".join(stderr)
            + (f"\n--- context ---\n{extra}" if extra else ""),
            pytrace=False,
        )

    try:
        while open_streams:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                failure(f"still running after {timeout:.0f}s (killed)")
            try:
                tag, line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                open_streams -= 1
                continue
            if tag == "out":
                stdout.append(line)
                continue
            stderr.append(line)
            if line.startswith(STEP_PREFIX):
                message = json.loads(line[len(STEP_PREFIX):])
                handler = steps.get(message["step"])
                try:
                    if handler is None:
                        raise KeyError(f"the test has no handler for step {message['step']!r}")
                    reply = handler(message) or {}
                except Exception as exc:  # reported to the script, which then fails
                    reply = {"error": f"{type(exc).__name__}: {exc}"}
                    stderr.append(f"(python) step {message['step']!r} raised {exc!r}")
                assert process.stdin is not None
                process.stdin.write((json.dumps(reply) + "\n").encode())
                process.stdin.flush()
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            failure(f"did not exit within {timeout:.0f}s (killed)")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()

    output = [line for line in stdout if line.strip()]
    if len(output) != 1:
        failure(f"expected one JSON line on stdout, got {len(output)} (exit code {process.returncode})")
    try:
        result = json.loads(output[0])
    except ValueError:
        failure(f"stdout is not JSON (exit code {process.returncode})")
    if process.returncode != 0 or not result.get("ok"):
        failure(f"scenario failed (exit code {process.returncode}): {json.dumps(result.get('error'))}")
    return result
