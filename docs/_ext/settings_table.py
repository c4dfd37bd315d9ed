"""The ``rtbroker-settings`` directive: the table of every ``RTBROKER_*`` setting.

Read from flask_rtbroker/config.py itself: the keys and defaults from ``DEFAULTS``, the meaning
from the comment lines above each key. So the documented settings cannot drift from the code.
"""

from __future__ import annotations

import io
import json
import tokenize
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from flask_rtbroker import config


def setting_comments(source: str) -> dict[str, str]:
    """Map each key of the ``DEFAULTS = {...}`` literal in *source* to the comment above it."""
    comments: dict[str, str] = {}
    pending: list[str] = []
    inside = False
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if not inside:
            inside = token.type == tokenize.NAME and token.string == "DEFAULTS"
            continue
        if token.type == tokenize.COMMENT:
            pending.append(token.string.lstrip("#").strip())
        elif token.type == tokenize.STRING and token.string.strip("\"'").startswith("RTBROKER_") and pending:
            comments[token.string.strip("\"'")] = " ".join(pending)
            pending = []
        elif token.type == tokenize.OP and token.string == "}" and token.start[1] == 0:
            break
        elif token.type not in (tokenize.NL, tokenize.NEWLINE):
            pending = []
    return comments


def shown(value: Any) -> str:
    """A default as the reader writes it in ``app.config`` (JSON-like, ``None``/``True``)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value
    return json.dumps(value)


class SettingsTable(SphinxDirective):
    """``.. rtbroker-settings::`` renders a list-table of key, default and meaning."""

    def run(self) -> list[nodes.Node]:
        path = Path(config.__file__)
        self.env.note_dependency(str(path))
        comments = setting_comments(path.read_text())
        missing = [key for key in config.DEFAULTS if key not in comments]
        if missing:
            raise self.error(f"settings without a comment in config.py: {', '.join(missing)}")
        lines = [".. list-table::", "   :header-rows: 1", "   :widths: 28 14 58", "",
                 "   * - Setting", "     - Default", "     - Meaning"]
        for key, value in config.DEFAULTS.items():
            lines += [f"   * - ``{key}``", f"     - ``{shown(value)}``", f"     - {comments[key]}"]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=str(path)), self.content_offset, container)
        return container.children


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("rtbroker-settings", SettingsTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
