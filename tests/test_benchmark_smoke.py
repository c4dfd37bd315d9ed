"""The benchmark suite runs end to end at small N (the figures themselves are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.live import ROOT


def test_benchmark_smoke_run_delivers_everything(tmp_path: Path) -> None:
    out = tmp_path / "smoke"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--code", "worktree", "--quiet-wait", "0", "--out-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, f"benchmark smoke run failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    report = (out / "report.md").read_text()
    assert "flask_rtbroker" in report and (out / "fanout.png").stat().st_size > 0
    raw = json.loads((out / "raw.json").read_text())
    assert raw, "the smoke run recorded no measurements"
