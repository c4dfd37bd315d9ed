"""The README's commands on a fresh clone, in fresh virtualenvs without the test extras.

A green suite once hid a demo that could not start on a new machine (gunicorn's gevent worker
imports ``packaging``, which only its ``gevent`` extra installs, and pytest happened to bring it).
These tests clone the repository's committed HEAD into a temporary folder and run:

- the README's main command, ``bash scripts/demo.sh``: the page answers and a stream gets
  ``PB_CONNECT``;
- the Quickstart: its install line (with the clone in place of the package name) in a new venv,
  its Flask code as ``app.py`` under ``gunicorn -k gevent``, a subscriber, and ``POST /hello``
  reaching it.

They take a minute or two (pip installs into new virtualenvs) and belong in CI.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from flask_rtbroker.testing import SSEClient
from tests.live import HOST, ROOT, free_port

README = (ROOT / "README.rst").read_text()
INSTALL_TIMEOUT = 600


def quickstart() -> str:
    """The Quickstart section of the README."""
    return README.split("Quickstart\n----------\n", 1)[1].split("\n----", 1)[0]


def quickstart_install_line() -> list[str]:
    """The Quickstart's ``pip install ...`` line, as arguments."""
    match = re.search(r"^    (pip install .+)$", quickstart(), re.MULTILINE)
    assert match, "the Quickstart has a pip install line"
    return shlex.split(match.group(1))


def quickstart_app() -> str:
    """The Quickstart's Flask code block."""
    block = quickstart().split(".. code-block:: python\n\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    return "\n".join(lines).strip() + "\n"


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed HEAD of this repository, cloned into a temporary folder (no .venv, no node_modules)."""
    target = tmp_path_factory.mktemp("fresh") / "flask_rtbroker"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(target)], check=True, timeout=120)
    assert not (target / ".venv").exists()
    return target


def wait_for_page(url: str, process: subprocess.Popen[bytes], timeout: float) -> requests.Response:
    """GET *url* until it answers, failing if *process* exits first or *timeout* passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with code {process.returncode} before answering")
        try:
            return requests.get(url, timeout=2)
        except requests.ConnectionError:
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop *process* and everything it started (its process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(15)


def started(command: list[str], cwd: Path, log: Path, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run *command* in its own process group with the environment plus *env*; stop it afterwards."""
    environment = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    process = subprocess.Popen(
        command, cwd=cwd, env={**environment, **env}, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        stop(process)


def log_text(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:]


@pytest.mark.timeout(INSTALL_TIMEOUT + 120)
def test_the_demo_command_serves_the_page_on_a_fresh_clone(clone: Path, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "demo.log"
    for process in started(["bash", "scripts/demo.sh"], clone, log, PORT=str(port)):
        page = wait_for_page(f"http://{HOST}:{port}/", process, INSTALL_TIMEOUT)
        assert page.status_code == 200, log_text(log)
        assert "pocketbase" in page.text.lower()
        stream = SSEClient.connect(HOST, port)
        try:
            assert stream.connect_event is not None and stream.connect_event.name == "PB_CONNECT"
            assert stream.client_id
        finally:
            stream.close()
    assert (clone / ".venv" / "bin" / "gunicorn").exists()


@pytest.mark.timeout(INSTALL_TIMEOUT + 120)
def test_the_quickstart_install_line_runs_the_quickstart_app_under_gunicorn_gevent(clone: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip, requirement = quickstart_install_line()[:2], quickstart_install_line()[2:]
    assert pip == ["pip", "install"] and len(requirement) == 1
    package = requirement[0].replace("flask-rtbroker", str(clone), 1)
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", package],
        capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
    )
    assert installed.returncode == 0, installed.stderr[-4000:]
    (tmp_path / "app.py").write_text(quickstart_app())
    port = free_port()
    log = tmp_path / "gunicorn.log"
    command = [str(venv / "bin" / "gunicorn"), "-k", "gevent", "-b", f"{HOST}:{port}", "app:app"]
    for process in started(command, tmp_path, log):
        wait_for_page(f"http://{HOST}:{port}/api/realtime/missing", process, 60)
        stream = SSEClient.connect(HOST, port)
        try:
            answer = requests.post(
                f"http://{HOST}:{port}/api/realtime",
                json={"clientId": stream.client_id, "subscriptions": ["example"]}, timeout=10,
            )
            assert answer.status_code == 204, answer.text
            hello = requests.post(f"http://{HOST}:{port}/hello", timeout=10)
            assert hello.status_code == 200 and hello.json() == {"delivered": 1}, log_text(log)
            event = stream.next_event(timeout=10)
            assert (event.name, event.data) == ("example", '{"test":123}')
        finally:
            stream.close()
