"""Sign in with OAuth2, for real: the official SDK's ``authWithOAuth2`` against
examples/oauth2_login.py under gunicorn + gevent, with the stand-in provider
(examples/oauth2_provider.py) served on its own loopback port.

- Node (tests/js/oauth2.mjs): ``urlCallback`` plays the popup; the success path, form_post, a
  provider error, a wrong state, a state naming a client without ``@oauth2`` and a replay.
- The same with two processes sharing a redis-server: the SDK talks to A, the popup's redirect
  goes to B, which finds the @oauth2 client on A through the backplane.
- Headless Chromium (tests/js/oauth2_browser.mjs): the page's button opens a real popup.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
import requests

from tests.jsrun import run_node
from tests.live import LiveServer
from tests.redis_server import RedisServer
from tests.test_browser import SDK_FILE, require_chromium

APP = "examples.oauth2_login:app"
PROVIDER = "examples.oauth2_provider:app"


@pytest.fixture
def provider(make_server: Callable[..., LiveServer]) -> LiveServer:
    """The stand-in provider, a Flask app in werkzeug's threaded server."""
    return make_server("werkzeug", target=PROVIDER)


def app_env(provider: LiveServer, **extra: str) -> dict[str, str]:
    return {"OAUTH2_PROVIDER_URL": provider.url, "OAUTH2_EXAMPLE_POCKETBASE_JS": str(SDK_FILE), **extra}


def logs(*servers: LiveServer) -> Callable[[], str]:
    return lambda: "\n".join(f"--- {server.target} on {server.port} ---\n{server.log()}" for server in servers)


def check_scenarios(results: dict[str, Any], sdk_url: str, redirect_url: str) -> None:
    """What every scenario of tests/js/oauth2.mjs must have seen."""
    ok = results["ok"]
    assert ok["seen"]["authorize"]["redirectUri"] == sdk_url + "/api/oauth2-redirect"
    assert len(ok["seen"]["authorize"]["state"]) == 40, "the state is the SDK's realtime client id"
    assert ok["seen"]["redirect"]["url"].startswith(redirect_url + "/api/oauth2-redirect?")
    assert (ok["seen"]["redirect"]["status"], ok["seen"]["redirect"]["location"]) == (307, "/api/oauth2-redirect/success")
    assert ok["token"] and ok["storeToken"] == ok["token"], "the SDK keeps the app's token"
    assert ok["record"]["email"] == "alice@example.test" and ok["storeRecordId"] == ok["record"]["id"]
    meta = ok["meta"]
    assert (meta["id"], meta["email"], meta["username"], meta["isNew"]) == ("1001", "alice@example.test", "alice", True)
    assert meta["accessToken"] and meta["rawUser"]["sub"] == "1001"
    assert ok["me"] == {"status": 200, "body": ok["record"]}, "the token is one the app issued"
    assert (ok["replay"]["status"], ok["replay"]["location"]) == (307, "/api/oauth2-redirect/failure")

    form_post = results["form_post"]
    assert form_post.get("error") is None and form_post["token"], form_post
    redirect = form_post["seen"]["redirect"]
    assert (redirect["method"], redirect["status"], redirect["location"]) == ("POST", 303, "/api/oauth2-redirect/success")

    deny = results["deny"]
    assert not deny["resolved"] and "access_denied" in deny["error"]["original"]
    assert (deny["seen"]["redirect"]["status"], deny["seen"]["redirect"]["location"]) == (307, "/api/oauth2-redirect/failure")

    for name in ("wrong_state", "not_subscribed"):
        outcome = results[name]
        assert outcome["seen"]["afterRedirect"] == "pending", f"{name}: no event reached the SDK"
        assert not outcome["resolved"] and outcome["error"]["isAbort"], f"{name}: rejected once cancelled"
        assert (outcome["seen"]["redirect"]["status"], outcome["seen"]["redirect"]["location"]) == (
            307, "/api/oauth2-redirect/failure"), name
    assert results["not_subscribed"]["otherEvents"] == []


def test_sdk_signs_in_with_oauth2_on_one_gevent_worker(make_server, provider: LiveServer) -> None:
    app = make_server("gunicorn-gevent", target=APP, env=app_env(provider))
    result = run_node("oauth2.mjs", app.url, timeout=60, context=logs(app, provider))
    check_scenarios(result["results"], app.url, app.url)


def test_the_popup_redirect_reaches_the_sdk_through_another_process(
        make_server, provider: LiveServer, redis_server: RedisServer) -> None:
    env = app_env(provider, RTBROKER_BACKPLANE=redis_server.url, RTBROKER_FORWARD_TIMEOUT="2")
    a = make_server("gunicorn-gevent", target=APP, env=env)
    b = make_server("gunicorn-gevent", target=APP, env=env)
    result = run_node("oauth2.mjs", a.url, b.url, timeout=60, context=logs(a, b, provider))
    check_scenarios(result["results"], a.url, b.url)


def test_chromium_signs_in_through_a_real_popup(make_server, provider: LiveServer, tmp_path) -> None:
    require_chromium()
    app = make_server("gunicorn-gevent", target=APP, env=app_env(provider))
    result = run_node("oauth2_browser.mjs", app.url, str(tmp_path / "oauth2.png"), timeout=90,
                      context=logs(app, provider))
    assert result["state"] == "signed-in", result
    auth = result["auth"]
    assert auth["record"]["email"] == "alice@example.test" and auth["meta"]["username"] == "alice"
    me = requests.get(f"{app.url}/api/me", headers={"Authorization": auth["token"]}, timeout=5)
    assert me.status_code == 200 and me.json() == auth["record"]
    visited = result["popupRequests"]
    # The popup went to the provider with our redirect endpoint; the code it got back reached the
    # page only as the @oauth2 event (the SDK may close the popup before its last hop is seen).
    redirect_uri = "redirect_uri=" + requests.utils.quote(app.url + "/api/oauth2-redirect", safe="")
    assert any(u.startswith(provider.url + "/authorize?") and u.endswith(redirect_uri) for u in visited), visited
    assert result["problems"] == []
