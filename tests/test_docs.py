"""The documentation: the Sphinx site builds with warnings as errors, its samples run (doctest),
the settings table is the code's, and the README's Quickstart is the code the docs test."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flask_rtbroker.config import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = (ROOT / "README.rst").read_text()
sys.path.insert(0, str(DOCS / "_ext"))

from settings_table import setting_comments  # noqa: E402


def sphinx(builder: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", builder, "-d", str(out / "doctrees"),
         str(DOCS), str(out / builder)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docs")
    result = sphinx("html", out)
    assert result.returncode == 0, f"sphinx-build -W -b html failed:\n{result.stdout}{result.stderr}"
    return out / "html"


def test_the_site_builds_without_warnings_and_has_every_page(built: Path) -> None:
    pages = {path.stem for path in DOCS.glob("*.rst")}
    assert {"quickstart", "configuration", "deployment", "records", "scaling", "limits", "security",
            "protocol", "testing", "api", "changelog", "tutorial"} <= pages
    assert all((built / f"{page}.html").is_file() for page in pages)
    api = (built / "api.html").read_text()
    for name in ("RealtimeBroker.notify", "RealtimeBroker.test_client", "DefaultClient.take", "RealtimeTestClient",
                 "ClientNotFound", "Emitter.from_config", "watch"):
        assert f'id="flask_rtbroker.' in api and name in api, name


def test_the_samples_run(tmp_path: Path) -> None:
    result = sphinx("doctest", tmp_path)
    assert result.returncode == 0, f"sphinx-build -b doctest failed:\n{result.stdout}{result.stderr}"
    summary = (tmp_path / "doctest" / "output.txt").read_text()
    tests = int(re.search(r"^\s+(\d+) tests?$", summary, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert tests >= 3 and "0 failures in tests" in summary, summary


def test_the_settings_table_is_generated_from_config(built: Path) -> None:
    comments = setting_comments((ROOT / "flask_rtbroker" / "config.py").read_text())
    assert list(comments) == list(DEFAULTS)  # every setting has its comment, none is left over
    page = html.unescape(re.sub(r"<[^>]+>", "", (built / "configuration.html").read_text()))
    page = " ".join(page.split())
    for key, meaning in comments.items():
        assert key in page and " ".join(meaning.split()) in page, key


def readme_blocks(language: str) -> list[str]:
    """The README's ``code-block:: <language>`` blocks, dedented."""
    blocks = []
    for part in README.split(f".. code-block:: {language}\n\n")[1:]:
        lines = []
        for line in part.splitlines():
            if line and not line.startswith("    "):
                break
            lines.append(line[4:])
        blocks.append("\n".join(lines).strip() + "\n")
    return blocks


def test_the_readme_quickstart_is_the_example_the_docs_test() -> None:
    quickstart_code = (ROOT / "examples" / "quickstart.py").read_text().split('"""\n\n', 1)[1]
    assert readme_blocks("python")[0] == quickstart_code


def test_the_readme_test_sample_passes() -> None:
    app_code, test_code = readme_blocks("python")[:2]
    namespace: dict[str, object] = {"__name__": "readme_quickstart"}
    exec(compile(app_code + "\n" + test_code, "README.rst", "exec"), namespace)
    try:
        namespace["test_hello_reaches_subscribers"]()  # type: ignore[operator]
    finally:
        namespace["app"].extensions["rtbroker"].close()  # type: ignore[attr-defined]


def test_the_readme_links_to_pages_that_exist() -> None:
    targets = re.findall(r"`[^`<]+<([^>]+)>`_", README)
    assert len(targets) >= 10
    assert [target for target in targets if not (ROOT / target).is_file()] == []
