"""The version is written once (``flask_rtbroker.__version__``) and agrees with the changelog;
the built artefacts themselves are tested in test_fresh_install.py."""

from __future__ import annotations

import re
from configparser import ConfigParser

import flask_rtbroker
from tests.live import ROOT


def test_the_version_is_the_changelogs_newest_section() -> None:
    heading = re.search(r"^(\d+\.\d+\.\d+) \((.+)\)$", (ROOT / "CHANGELOG.rst").read_text(), re.MULTILINE)
    assert heading, "CHANGELOG.rst starts with a '<version> (<date or unreleased>)' section"
    release, when = heading.groups()
    if when == "unreleased":
        assert re.fullmatch(re.escape(release) + r"\.dev\d+", flask_rtbroker.__version__)
    else:
        assert flask_rtbroker.__version__ == release


def test_setup_cfg_reads_the_version_from_the_package() -> None:
    config = ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert config["metadata"]["version"] == "attr: flask_rtbroker.__version__"
    assert config["options.package_data"]["flask_rtbroker"].strip() == "py.typed"
