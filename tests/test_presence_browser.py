"""The "who's here" page of docs/presence.rst (examples/presence) in headless Chromium: two tabs
(two guests) list each other, and a closed tab leaves the list within the grace period plus a
second."""

from __future__ import annotations

from typing import Callable

from tests.jsrun import run_node
from tests.live import LiveServer
from tests.test_browser import SDK_FILE, require_chromium

GRACE = 1.0


def test_whos_here_page_lists_tabs_and_drops_a_closed_one(make_server: Callable[..., LiveServer]) -> None:
    require_chromium()
    server = make_server("gunicorn-gevent", target="examples.presence.app:app",
                         env={"POCKETBASE_JS": str(SDK_FILE), "RTBROKER_PRESENCE_GRACE": str(GRACE)})
    result = run_node("browser_presence.mjs", server.url, timeout=60, context=server.log)
    assert result["problems"] == []
    assert len(result["alone"]) == 1 and result["alone"][0].startswith("guest ")
    assert len(result["together"]) == 2 and result["alone"][0] in result["together"]
    assert result["after"] == result["alone"]
    assert result["leaveMs"] < (GRACE + 1) * 1000
