"""The README's commands on a fresh clone, in fresh virtualenvs without the test extras.

A green suite once hid a demo that could not start on a new machine (gunicorn's gevent worker
imports ``packaging``, which only its ``gevent`` extra installs, and pytest happened to bring it).
These tests clone the repository's committed HEAD into a temporary folder and run:

- the README's main command, ``bash scripts/demo.sh``: the page answers and a stream gets
  ``PB_CONNECT``;
- the Quickstart: its install line from a checkout, run beside the clone, in a new venv, its
  Flask code as ``app.py`` under ``gunicorn -k gevent``, the README's Node snippet (with its
  ``eventsource`` line) as the subscriber, and ``POST /hello`` reaching it; its git URL form;
- the published form: ``python -m build`` makes the wheel and sdist, ``twine check`` passes, the
  wheel alone (with its declared dependencies, not editable) in a new venv serves the Quickstart
  under ``gunicorn -k gevent`` and passes the README's in-process test sample; then, with its
  ``sqlalchemy`` extra and pytest added, the tutorial's chat (examples/chat) passes its tests.

They take a minute or two (pip installs into new virtualenvs, from pip's cache once warm) and
belong in CI.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Iterator

import pytest
import requests

from flask_rtbroker.testing import SSEClient
from tests.jsrun import JS_DIR, require_node
from tests.live import HOST, ROOT, free_port
from tests.test_docs import readme_blocks

README = (ROOT / "README.rst").read_text()
INSTALL_TIMEOUT = 600


def quickstart() -> str:
    """The Quickstart section of the README."""
    return README.split("Quickstart\n----------\n", 1)[1].split("\n----", 1)[0]


def quickstart_install_line() -> list[str]:
    """The Quickstart's ``pip install ...`` line (the one from a checkout), as arguments."""
    match = re.search(r"^    (pip install .+)$", quickstart(), re.MULTILINE)
    assert match, "the Quickstart has a pip install line"
    return shlex.split(match.group(1))


def quickstart_git_line() -> list[str]:
    """The Quickstart's ``pip install ... @ git+<repository URL>`` line, as arguments."""
    match = re.search(r"``(pip install '[^`]+ @ git\+<repository URL>')``", quickstart())
    assert match, "the Quickstart shows the git URL form"
    return shlex.split(match.group(1))


def quickstart_app() -> str:
    """The Quickstart's Flask code block."""
    return readme_blocks("python")[0]


def quickstart_test_script() -> str:
    """The Quickstart's Flask code and its in-process test sample, as a script running the test."""
    app_code, test_code = readme_blocks("python")[:2]
    return f"{app_code}\n{test_code}\ntest_hello_reaches_subscribers()\nprint('passed')\n"


def quickstart_node_script(url: str) -> str:
    """The Quickstart's JavaScript block, pointed at *url*."""
    script = readme_blocks("javascript")[0]
    assert '"http://127.0.0.1:5000"' in script
    return script.replace('"http://127.0.0.1:5000"', json.dumps(url))


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


def new_venv(path: Path) -> Path:
    """A new virtualenv at *path* (pip only); returns its python."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    return path / "bin" / "python"


def pip_install(python: Path, *requirements: str, cwd: Path) -> None:
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements],
        cwd=cwd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
    )
    assert installed.returncode == 0, installed.stderr[-4000:]


def serve_quickstart(venv: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The Quickstart's code as ``app.py`` under the venv's ``gunicorn -k gevent``: its URL and log."""
    (tmp_path / "app.py").write_text(quickstart_app())
    port = free_port()
    log = tmp_path / "gunicorn.log"
    command = [str(venv / "bin" / "gunicorn"), "-k", "gevent", "-b", f"{HOST}:{port}", "app:app"]
    for process in started(command, tmp_path, log):
        wait_for_page(f"http://{HOST}:{port}/api/realtime/missing", process, 60)
        yield f"http://{HOST}:{port}", log


def hello_reaches_a_subscriber(url: str, log: Path) -> None:
    """A raw SSE subscriber of ``example`` gets the Quickstart's ``POST /hello``."""
    host, port = url.removeprefix("http://").split(":")
    stream = SSEClient.connect(host, int(port))
    try:
        answer = requests.post(
            f"{url}/api/realtime", json={"clientId": stream.client_id, "subscriptions": ["example"]}, timeout=10,
        )
        assert answer.status_code == 204, answer.text
        hello = requests.post(f"{url}/hello", timeout=10)
        assert hello.status_code == 200 and hello.json() == {"delivered": 1}, log_text(log)
        event = stream.next_event(timeout=10)
        assert (event.name, event.data) == ("example", '{"test":123}')
    finally:
        stream.close()


@pytest.mark.timeout(INSTALL_TIMEOUT + 120)
def test_the_quickstart_install_line_runs_the_quickstart_app_and_its_node_snippet(clone: Path, tmp_path: Path) -> None:
    pip, requirement = quickstart_install_line()[:2], quickstart_install_line()[2:]
    assert pip == ["pip", "install"] and requirement == ["./flask_rtbroker[gunicorn]"]
    python = new_venv(tmp_path / "venv")
    pip_install(python, *requirement, cwd=clone.parent)  # run beside the checkout, as the README says
    node = require_node()
    (tmp_path / "node_modules").symlink_to(JS_DIR / "node_modules")  # pocketbase and eventsource
    for url, log in serve_quickstart(tmp_path / "venv", tmp_path):
        (tmp_path / "snippet.mjs").write_text(quickstart_node_script(url))
        snippet = subprocess.Popen(
            [node, "snippet.mjs"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            deadline = time.monotonic() + 20
            delivered = 0
            while delivered == 0 and time.monotonic() < deadline and snippet.poll() is None:
                delivered = requests.post(f"{url}/hello", timeout=10).json()["delivered"]
                time.sleep(0.2)
            assert delivered == 1, f"the Node snippet never subscribed: {log_text(log)}"
            assert snippet.stdout is not None
            printed = select.select([snippet.stdout], [], [], 10)[0] and snippet.stdout.readline()
        finally:
            snippet.terminate()
            errors = snippet.communicate(timeout=10)[1]
        assert printed and "test: 123" in printed, f"stdout: {printed!r}\nstderr: {errors[-4000:]}"


@pytest.mark.timeout(INSTALL_TIMEOUT + 120)
def test_the_git_url_install_line_builds_the_package(clone: Path, tmp_path: Path) -> None:
    pip, requirement = quickstart_git_line()[:2], quickstart_git_line()[2:]
    assert pip == ["pip", "install"] and len(requirement) == 1
    requirement = [requirement[0].replace("<repository URL>", f"file://localhost{clone}")]  # pip 23 wants a host
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), *requirement],
        capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    import flask_rtbroker
    assert [path.name for path in tmp_path.glob("*.whl")] == [
        f"flask_rtbroker-{flask_rtbroker.__version__}-py3-none-any.whl"]


@pytest.mark.timeout(INSTALL_TIMEOUT + 120)
def test_the_built_wheel_alone_serves_the_quickstart_and_passes_its_test_sample(clone: Path, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "build", "-o", str(dist), str(clone)], capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    (wheel,), (sdist,) = dist.glob("*.whl"), dist.glob("*.tar.gz")
    checked = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)], capture_output=True, text=True, timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "flask_rtbroker/py.typed" in names and not [name for name in names if name.startswith("tests/")]

    python = new_venv(tmp_path / "venv")
    pip_install(python, f"{wheel}[gunicorn]", cwd=tmp_path)  # not editable, its declared dependencies only
    installed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, timeout=60,
    ).stdout.lower()
    assert "flask-rtbroker==" in installed.replace("_", "-") and "pytest" not in installed

    for url, log in serve_quickstart(tmp_path / "venv", tmp_path):
        hello_reaches_a_subscriber(url, log)

    (tmp_path / "sample").mkdir()
    (tmp_path / "sample" / "test_quickstart.py").write_text(quickstart_test_script())
    sample = subprocess.run(
        [str(python), "-c", "import flask_rtbroker, runpy; print(flask_rtbroker.__file__); "
         "runpy.run_path('test_quickstart.py')"],
        cwd=tmp_path / "sample", capture_output=True, text=True, timeout=60,
    )
    assert sample.returncode == 0, sample.stderr[-4000:]
    module_file, result = sample.stdout.split()
    assert module_file.startswith(str(tmp_path / "venv")) and result == "passed"

    # The tutorial's chat and its tests, as a project of its own on the installed wheel.
    pip_install(python, f"{wheel}[sqlalchemy]", "pytest", cwd=tmp_path)
    shutil.copytree(clone / "examples" / "chat", tmp_path / "chat")
    chat_tests = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=tmp_path / "chat",
        capture_output=True, text=True, timeout=120,
    )
    assert chat_tests.returncode == 0 and "5 passed" in chat_tests.stdout, chat_tests.stdout[-3000:] + chat_tests.stderr[-2000:]
