"""Sphinx configuration of the flask_rtbroker documentation (``sphinx-build -W docs <out>``)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE / "_ext"), str(HERE.parent)]

import flask_rtbroker  # noqa: E402

project = "flask_rtbroker"
author = "the flask_rtbroker authors"
copyright = "2026, the flask_rtbroker authors"
release = flask_rtbroker.__version__
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc", "sphinx.ext.doctest", "settings_table"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"exclude-members": "__weakref__, __init__"}
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list[str] = []
smartquotes = False  # settings and samples show quotes and "..." exactly as typed
