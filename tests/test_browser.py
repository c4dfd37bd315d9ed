"""A real browser against the demo: headless Chromium shows a change made from outside.

Starts examples/demo (``examples.demo.app:app``) under gunicorn + gevent, then
tests/js/browser_counter.mjs drives Debian's /usr/bin/chromium with playwright-core: the page
must report "live", then show the value of a ``POST /api/counter/increment`` sent from here,
then its own +1 button must work. The same with two demo processes sharing a Redis backplane
(page on one, change on the other), and a page on another origin subscribing through CORS.
Chromium missing is a failure, never a skip (scripts/test.sh installs it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

from tests.jsrun import JS_DIR, require_node, run_node
from tests.live import ROOT, LiveServer

CHROMIUM = Path("/usr/bin/chromium")
# The page loads the SDK the demo serves; the test serves tests/js's copy (same pinned
# version, checked below) so that CI needs only `npm ci --prefix tests/js`.
SDK_FILE = JS_DIR / "node_modules" / "pocketbase" / "dist" / "pocketbase.umd.js"
DEMO_TARGET = "examples.demo.app:app"


def _pinned_sdk_version(package_json: Path) -> str:
    return json.loads(package_json.read_text())["dependencies"]["pocketbase"]


def require_chromium() -> None:
    """Fail (never skip) without node, tests/js's packages or Chromium; check the SDK pins agree."""
    require_node()
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium; scripts/test.sh does it)")
    demo_pin = _pinned_sdk_version(ROOT / "examples" / "demo" / "package.json")
    test_pin = _pinned_sdk_version(JS_DIR / "package.json")
    assert demo_pin == test_pin, f"examples/demo pins pocketbase {demo_pin}, tests/js {test_pin}"


@pytest.fixture
def demo(make_server: Callable[..., LiveServer]) -> LiveServer:
    """The demo under gunicorn + gevent, one process, in-memory counter."""
    require_chromium()
    return make_server("gunicorn-gevent", target=DEMO_TARGET, env={"DEMO_POCKETBASE_JS": str(SDK_FILE)})


def check_counter_page(page_server: LiveServer, change_server: LiveServer, tmp_path: Path) -> dict[str, Any]:
    """Open the page on *page_server*, change the counter through *change_server*, check the page."""
    screenshot = tmp_path / "demo-counter.png"
    posted: list[dict[str, Any]] = []

    def page_live(message: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(f"{change_server.url}/api/counter/increment", timeout=10)
        response.raise_for_status()
        posted.append(response.json())
        return {"value": posted[-1]["value"], "delivered": posted[-1]["delivered"]}

    def clicked(message: dict[str, Any]) -> dict[str, Any]:
        return {"value": requests.get(f"{change_server.url}/api/counter", timeout=10).json()["value"]}

    servers = {page_server.log_path: page_server, change_server.log_path: change_server}
    result = run_node(
        "browser_counter.mjs", page_server.url, str(screenshot),
        steps={"page-live": page_live, "clicked": clicked},
        timeout=120,
        context=lambda: "\n".join(f"server log ({path}):\n{server.log()}" for path, server in servers.items()),
    )
    print(f"screenshot: {screenshot}")
    print(f"page live after {result['liveMs']} ms; outside change shown after {result['outsideMs']} ms")
    assert result["initial"] == "0", "a fresh demo starts at 0"
    assert posted and posted[0]["value"] == 1 and result["outsideValue"] == 1
    assert result["outsideMs"] < 3000
    assert result["afterClick"] == "2" and result["serverAfterClick"] == 2
    assert result["status"] == "live"
    assert result["problems"] == [], "the page logged errors"
    assert screenshot.is_file() and screenshot.stat().st_size > 1000
    return result


def test_page_shows_change_made_outside_the_browser(demo: LiveServer, tmp_path: Path) -> None:
    result = check_counter_page(demo, demo, tmp_path)
    assert result["outsideDelivered"] == 1, "the page's stream is the one subscriber"


def test_page_shows_change_made_in_another_process(
    make_server: Callable[..., LiveServer], redis_server: Any, tmp_path: Path
) -> None:
    """Two demo processes on one Redis (as with WEB_CONCURRENCY=2): the page is on one, the change on the other."""
    require_chromium()
    env = {"DEMO_POCKETBASE_JS": str(SDK_FILE), "RTBROKER_BACKPLANE": redis_server.url}
    page_server = make_server("gunicorn-gevent", target=DEMO_TARGET, env=env)
    other = make_server("gunicorn-gevent", target=DEMO_TARGET, env=env)
    result = check_counter_page(page_server, other, tmp_path)
    assert result["outsideDelivered"] == 0, "the page's stream is held by the other process"


@pytest.mark.parametrize("cors", ["default", "other-origin-only"])
def test_cross_origin_page_and_cors(demo: LiveServer, make_server: Callable[..., LiveServer], cors: str) -> None:
    """The demo page (one origin) subscribes to the notify app (another port, so another origin).

    With the default ``RTBROKER_CORS_ORIGINS="*"`` the browser lets the SDK in; with a list
    that lacks the page's origin it must not.
    """
    env = {} if cors == "default" else {"RTBROKER_CORS_ORIGINS": '["http://example.invalid"]'}
    broker = make_server("gunicorn-gevent", env=env)

    def subscribed(message: dict[str, Any]) -> dict[str, Any]:
        return {"delivered": broker.notify("example", {"cross": "origin"})}

    result = run_node(
        "browser_cross_origin.mjs", demo.url, broker.url, steps={"subscribed": subscribed}, timeout=120,
        context=lambda: f"broker log ({broker.log_path}):\n{broker.log()}",
    )
    assert result["pageOrigin"] == demo.url != broker.url
    if cors == "default":
        assert result["subscription"]["ok"] is True, result
        assert result["delivered"] == 1 and result["received"] == [{"cross": "origin"}]
        assert result["consoleErrors"] == []
    else:
        assert result["subscription"] == {"ok": False, "status": 0, "message": "Something went wrong."}, result
        assert any("CORS" in line for line in result["consoleErrors"]), result["consoleErrors"]
