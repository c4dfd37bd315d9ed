"""The package type-checks: ``mypy flask_rtbroker --ignore-missing-imports`` reports no errors."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 300


def test_mypy_reports_no_errors(tmp_path: Path) -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.fail(
            f"mypy is not installed in {sys.executable}; install the test extra: pip install -e '.[test]'",
            pytrace=False,
        )
    command = [sys.executable, "-m", "mypy", "flask_rtbroker", "--ignore-missing-imports",
               "--cache-dir", str(tmp_path / "mypy-cache")]
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"mypy did not finish within {TIMEOUT}s:\n{exc.stdout or ''}{exc.stderr or ''}", pytrace=False)
    assert result.returncode == 0, (
        f"mypy exited with {result.returncode}:\n{result.stdout}{result.stderr}"
    )
