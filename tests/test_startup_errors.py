"""Mistakes reported when they are made, not as intermittent 404s or silent defaults later:

- several gunicorn workers on the process-local ``memory://`` backplane refuse to start (each
  worker would know only its own streams), unless ``RTBROKER_ALLOW_LOCAL_BACKPLANE`` says so;
- a misspelt ``RTBROKER_*`` key is logged with the nearest real one;
- ``notify(None, ...)`` and NaN data raise the package's errors, saying what is wrong;
- a malformed subscription POST keeps PocketBase's generic 400 body and logs why at debug level.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask

from flask_rtbroker import InvalidArgument, NotSerializable, RealtimeBroker
from flask_rtbroker.backplane import MemoryBackplane
from flask_rtbroker.config import Settings
from flask_rtbroker.errors import ConfigurationError
from flask_rtbroker.state import refuse_local_backplane_with_workers
from tests.live import HOST, ROOT, LiveServer, free_port
from tests.test_test_client import app_broker  # noqa: F401  (the fixture: an app and its broker)

# -- several workers on a process-local backplane ------------------------------------------------


def gunicorn(log_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run gunicorn with *args* on the notify example until it exits or 20 s pass (then stop it)."""
    command = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-b", f"{HOST}:{free_port()}", "--graceful-timeout", "1",
               *args, "examples.notify_app:app"]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    try:
        return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"gunicorn did not exit: {exc.stderr!r}")


@pytest.mark.parametrize("preload", [False, True], ids=["in-workers", "preload"])
def test_two_gunicorn_workers_on_the_memory_backplane_refuse_to_start(log_dir: Path, preload: bool) -> None:
    result = gunicorn(log_dir, "-w", "2", *(["--preload"] if preload else []))
    assert result.returncode != 0
    assert "ConfigurationError: RTBROKER_BACKPLANE is 'memory://'" in result.stderr, result.stderr[-3000:]
    assert "gunicorn runs 2 workers" in result.stderr and "RTBROKER_ALLOW_LOCAL_BACKPLANE=True" in result.stderr


def test_the_override_starts_them(log_dir: Path) -> None:
    server = LiveServer("gunicorn-gevent", env={"RTBROKER_ALLOW_LOCAL_BACKPLANE": "true"}, args=["-w", "2"]).start(log_dir)
    try:
        server.stream().close()
        assert "ConfigurationError" not in server.log()
    finally:
        server.stop()


def test_only_a_process_local_backplane_with_several_workers_is_refused() -> None:
    refuse_local_backplane_with_workers(MemoryBackplane(), 1)
    refuse_local_backplane_with_workers(MemoryBackplane(), None)  # not under gunicorn
    with pytest.raises(ConfigurationError, match="RTBROKER_BACKPLANE"):
        refuse_local_backplane_with_workers(MemoryBackplane(), 4)


# -- a misspelt setting --------------------------------------------------------------------------


def test_a_misspelt_key_is_logged_naming_the_nearest_setting(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="flask_rtbroker"):
        settings = Settings.from_config({"RTBROKER_MAX_CLIENT": 5, "RTBROKER_HEARTBEAT": 0, "RTBROKER_ZZZ": 1})
    assert settings.heartbeat == 0 and settings.max_clients != 5  # the misspelt key did nothing
    assert [record.getMessage() for record in caplog.records] == [
        "RTBROKER_MAX_CLIENT is not a flask_rtbroker setting and is ignored; did you mean RTBROKER_MAX_CLIENTS?",
        "RTBROKER_ZZZ is not a flask_rtbroker setting and is ignored",
    ]


def test_init_app_warns_for_a_misspelt_key(caplog: pytest.LogCaptureFixture) -> None:
    app = Flask(__name__)
    app.config["RTBROKER_BACKPLANE_SECRETS"] = "x" * 16
    with caplog.at_level(logging.WARNING, logger="flask_rtbroker"):
        RealtimeBroker(app)
    app.extensions["rtbroker"].close()
    assert any("did you mean RTBROKER_BACKPLANE_SECRET?" in record.getMessage() for record in caplog.records)


# -- notify's arguments and data -----------------------------------------------------------------


@pytest.mark.parametrize("topic", [None, 3, b"bytes"])
def test_notify_with_a_topic_that_is_not_a_string_says_so(app_broker: tuple[Flask, RealtimeBroker], topic: object) -> None:
    app, broker = app_broker
    with app.app_context(), pytest.raises(InvalidArgument, match="must be a string, not"):
        broker.notify(topic, {"a": 1})  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_infinity_raise_not_serializable(app_broker: tuple[Flask, RealtimeBroker], value: float) -> None:
    app, broker = app_broker
    with broker.test_client() as rt:
        rt.subscribe("t")
        with app.app_context(), pytest.raises(NotSerializable, match="not JSON compliant"):
            broker.notify("t", {"value": value})
        assert rt.get_received() == []  # nothing half-sent


# -- a malformed subscription POST ---------------------------------------------------------------


def test_a_malformed_json_body_gets_pocketbase_body_and_a_debug_line(
    app_broker: tuple[Flask, RealtimeBroker], caplog: pytest.LogCaptureFixture,
) -> None:
    app, _ = app_broker
    with caplog.at_level(logging.DEBUG, logger="flask_rtbroker"):
        answer = app.test_client().post("/api/realtime", data='{"clientId": "x", ', content_type="application/json")
    assert answer.status_code == 400
    assert answer.get_data() == b'{"data":{},"message":"Something went wrong while processing your request.","status":400}'
    lines = [record.getMessage() for record in caplog.records if record.levelno == logging.DEBUG]
    assert any(line.startswith("subscription POST refused with 400: ") and "application/json" in line for line in lines), lines
