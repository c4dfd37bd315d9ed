"""OAuth2Login in process: PocketBase's auth-methods shape with PKCE, auth-with-oauth2's
validation errors, a provider that cannot be reached, provider config checks and the userinfo
mapping. The code exchange against a real provider runs in tests/test_oauth2.py."""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask
from werkzeug.serving import make_server

from flask_rtbroker import RealtimeBroker
from flask_rtbroker.errors import ApiError, ConfigurationError, NotInitializedError
from flask_rtbroker.oauth2 import AuthResult, OAuth2Login, OAuth2Provider, openid_user
from flask_rtbroker.oauth2.login import _expiry
from flask_rtbroker.oauth2.provider import providers_from_config
from tests.live import free_port

PROVIDERS = {
    "acme": {"client_id": "cid", "client_secret": "shh", "authorize_url": "https://acme.test/authorize",
             "token_url": "https://acme.test/token", "userinfo_url": "https://acme.test/me",
             "scopes": "openid email", "display_name": "Acme"},
    "fruit": {"client_id": "fid", "client_secret": "s2", "authorize_url": "https://fruit.test/auth?x=1",
              "token_url": "https://fruit.test/token", "userinfo_url": "https://fruit.test/me", "pkce": False,
              "authorize_params": {"response_mode": "form_post"}},
}


def never(login: Any) -> AuthResult:
    raise AssertionError("the hook must not run for a rejected request")


def make_app(providers: Any = PROVIDERS, **options: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(RTBROKER_GRACEFUL_SHUTDOWN=False, RTBROKER_OAUTH2_PROVIDERS=providers)
    RealtimeBroker(app)
    OAuth2Login(app, "users", authenticate=never, **options)
    return app


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def test_auth_methods_has_pocketbase_s_shape_with_a_fresh_pkce_pair_per_provider() -> None:
    http = make_app(password_identity_fields=["email"]).test_client()
    answer = http.get("/api/collections/users/auth-methods")
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    body = answer.get_json()
    assert set(body) == {"password", "oauth2", "mfa", "otp", "authProviders", "usernamePassword", "emailPassword"}
    assert body["password"] == {"identityFields": ["email"], "enabled": True} and body["emailPassword"] is True
    assert body["mfa"] == {"enabled": False, "duration": 0} and body["otp"] == {"enabled": False, "duration": 0}
    acme, fruit = body["oauth2"]["providers"]
    assert body["oauth2"]["enabled"] and (acme["name"], acme["displayName"], fruit["displayName"]) == ("acme", "Acme", "fruit")
    assert acme["authURL"] == acme["authUrl"] and acme["authURL"].endswith("&redirect_uri=")
    query = parse_qs(urlsplit(acme["authURL"]).query)
    assert query["client_id"] == ["cid"] and query["scope"] == ["openid email"] and query["state"] == [acme["state"]]
    assert len(acme["codeVerifier"]) == 43 and acme["codeChallenge"] == s256(acme["codeVerifier"])
    assert query["code_challenge"] == [acme["codeChallenge"]] and acme["codeChallengeMethod"] == "S256"
    assert (fruit["codeVerifier"], fruit["codeChallenge"], fruit["codeChallengeMethod"]) == ("", "", "")
    fruit_query = parse_qs(urlsplit(fruit["authURL"]).query)
    assert fruit_query["response_mode"] == ["form_post"] and fruit_query["x"] == ["1"] and "code_challenge" not in fruit_query
    again = http.get("/api/collections/users/auth-methods").get_json()["oauth2"]["providers"][0]
    assert again["state"] != acme["state"] and again["codeVerifier"] != acme["codeVerifier"]
    assert [p for p in body["authProviders"] if "logo" in p] == []


def test_auth_methods_takes_the_sdk_s_fields_and_answers_cors() -> None:
    http = make_app().test_client()
    answer = http.get("/api/collections/users/auth-methods?fields=mfa,otp,password,oauth2",
                      headers={"Origin": "https://app.test"})
    assert set(answer.get_json()) == {"mfa", "otp", "password", "oauth2"}
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    preflight = http.options("/api/collections/users/auth-with-oauth2", headers={
        "Origin": "https://app.test", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 204 and preflight.headers["Access-Control-Allow-Headers"] == "content-type"


@pytest.mark.parametrize(("body", "errors"), [
    ({}, {"provider": "validation_required", "code": "validation_required"}),
    ({"provider": "nope", "code": "c"}, {"provider": "validation_invalid_provider"}),
    ({"provider": "p" * 101, "code": "c"}, {"provider": "validation_length_too_long"}),
    ({"provider": "acme"}, {"code": "validation_required"}),
])
def test_auth_with_oauth2_validates_like_pocketbase(body: dict[str, Any], errors: dict[str, str]) -> None:
    answer = make_app().test_client().post("/api/collections/users/auth-with-oauth2", json=body)
    assert answer.status_code == 400
    data = answer.get_json()
    assert data["message"] == "An error occurred while loading the submitted data."
    assert {field: error["code"] for field, error in data["data"].items()} == errors


@pytest.mark.parametrize("kwargs", [
    {"data": b"{", "content_type": "application/json"},
    {"data": b"[1]", "content_type": "application/json"},
    {"json": {"provider": ["acme"], "code": "c"}},
    {"json": {"provider": "acme", "code": "c", "createData": [1]}},
    {"data": b"[" * 100000, "content_type": "application/json"},
    {"data": b"x" * (1024 * 1024 + 1), "content_type": "application/json"},
])
def test_auth_with_oauth2_refuses_bad_bodies_with_a_400(kwargs: dict[str, Any]) -> None:
    answer = make_app().test_client().post("/api/collections/users/auth-with-oauth2", **kwargs)
    assert answer.status_code == 400
    assert answer.get_json()["message"] == "An error occurred while loading the submitted data."


def test_a_provider_that_cannot_be_reached_is_a_400_not_a_500() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    providers = {"dead": {"client_id": "c", "client_secret": "s", "authorize_url": dead + "/a",
                          "token_url": dead + "/token", "userinfo_url": dead + "/me"}}
    answer = make_app(providers, timeout=2).test_client().post(
        "/api/collections/users/auth-with-oauth2",
        json={"provider": "dead", "code": "c", "codeVerifier": "v", "redirectURL": "http://x/api/oauth2-redirect"})
    assert answer.status_code == 400
    assert answer.get_json() == {"data": {}, "message": "Failed to fetch OAuth2 token.", "status": 400}


@pytest.mark.parametrize(("value", "words"), [
    ({"a": {"client_id": "c"}}, "needs 'client_secret'"),
    ({"a": {**PROVIDERS["acme"], "colour": "red"}}, "unknown options"),
    ({"a": {**PROVIDERS["acme"], "pkce": "yes"}}, "'pkce'"),
    ({"a": {**PROVIDERS["acme"], "scopes": 3}}, "'scopes'"),
    ({"a": "acme"}, "mapping of options"),
    ("acme", "mapping"),
])
def test_bad_provider_config_is_refused_with_its_name(value: Any, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        providers_from_config(value)


def test_providers_may_be_objects_and_the_broker_must_come_first() -> None:
    provider = OAuth2Provider(name="x", client_id="c", client_secret="secret-value", authorize_url="https://x/a",
                              token_url="https://x/t", userinfo_url="https://x/u")
    assert "secret-value" not in repr(provider), "a secret stays out of logs and tracebacks"
    with pytest.raises(ConfigurationError, match="same name"):
        providers_from_config([provider, provider])
    with pytest.raises(NotInitializedError):
        OAuth2Login(Flask(__name__), "users", authenticate=never, providers=[provider])


def test_userinfo_mapping_and_expiry() -> None:
    oidc = openid_user({"sub": "7", "name": "N", "preferred_username": "n", "email": "n@x", "email_verified": False,
                        "picture": "https://x/p.png"})
    assert (oidc.id, oidc.username, oidc.email, oidc.avatar_url) == ("7", "n", "", "https://x/p.png")
    github_like = openid_user({"id": 42, "login": "octo", "email": "o@x", "avatar_url": "https://x/o.png"})
    assert (github_like.id, github_like.username, github_like.email) == ("42", "octo", "o@x")
    assert _expiry(0) == "1970-01-01 00:00:00.000Z" and _expiry(None) == "" and _expiry(10 ** 30) == ""


# -- against the stand-in provider, served on a loopback port by a thread -----------------------


@pytest.fixture
def stand_in() -> Iterator[str]:
    """examples/oauth2_provider.py in werkzeug's threaded server; yields its URL."""
    from examples import oauth2_provider

    server = make_server("127.0.0.1", 0, oauth2_provider.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


def code_for(provider_url: str, redirect_uri: str, challenge: str, login: str = "bob") -> str:
    """Play the popup up to the provider's redirect; return the code it carries."""
    answer = requests.get(f"{provider_url}/authorize", allow_redirects=False, timeout=5, params={
        "response_type": "code", "client_id": "rtbroker-example", "redirect_uri": redirect_uri, "state": "s",
        "code_challenge": challenge, "code_challenge_method": "S256", "login": login})
    assert answer.status_code == 302, answer.text
    return parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]


def provider_app(provider_url: str, authenticate: Any, userinfo_path: str = "/userinfo") -> Flask:
    app = Flask(__name__)
    app.config.update(RTBROKER_GRACEFUL_SHUTDOWN=False)
    RealtimeBroker(app)
    OAuth2Login(app, "users", authenticate=authenticate, timeout=5, providers={"example": {
        "client_id": "rtbroker-example", "client_secret": "example-secret-not-for-production",
        "authorize_url": provider_url + "/authorize", "token_url": provider_url + "/token",
        "userinfo_url": provider_url + userinfo_path}})
    return app


def test_the_hook_gets_the_account_and_create_data_and_its_answer_is_the_response(stand_in: str) -> None:
    seen: list[Any] = []

    def authenticate(login: Any) -> AuthResult:
        seen.append(login)
        return AuthResult("app-token", {"id": "r1", "email": login.user.email}, is_new=False, meta={"plan": "free"})

    http = provider_app(stand_in, authenticate).test_client()
    methods = http.get("/api/collections/users/auth-methods").get_json()["oauth2"]["providers"][0]
    redirect_uri = "http://app.test/api/oauth2-redirect"
    code = code_for(stand_in, redirect_uri, methods["codeChallenge"])
    answer = http.post("/api/collections/users/auth-with-oauth2", json={
        "provider": "example", "code": code, "codeVerifier": methods["codeVerifier"], "redirectURL": redirect_uri,
        "createData": {"name": "Robert"}})
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert (body["token"], body["record"]) == ("app-token", {"id": "r1", "email": "bob@example.test"})
    meta = body["meta"]
    assert (meta["id"], meta["username"], meta["isNew"], meta["plan"]) == ("1002", "bob", False, "free")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z", meta["expiry"]) and meta["refreshToken"]
    (login,) = seen
    assert (login.collection, login.provider.name, login.create_data) == ("users", "example", {"name": "Robert"})
    replayed = http.post("/api/collections/users/auth-with-oauth2", json={
        "provider": "example", "code": code, "codeVerifier": methods["codeVerifier"], "redirectURL": redirect_uri})
    assert replayed.get_json()["message"] == "Failed to fetch OAuth2 token.", "a code works once"


def test_a_wrong_verifier_a_refusing_hook_and_a_failing_userinfo(stand_in: str) -> None:
    def refuse(login: Any) -> AuthResult:
        raise ApiError(403, "Sign-ups are closed.")

    http = provider_app(stand_in, refuse).test_client()
    methods = http.get("/api/collections/users/auth-methods").get_json()["oauth2"]["providers"][0]
    redirect_uri = "http://app.test/api/oauth2-redirect"
    body = {"provider": "example", "codeVerifier": methods["codeVerifier"], "redirectURL": redirect_uri}
    wrong = http.post("/api/collections/users/auth-with-oauth2", json={
        **body, "code": code_for(stand_in, redirect_uri, methods["codeChallenge"]), "codeVerifier": "x" * 43})
    assert (wrong.status_code, wrong.get_json()["message"]) == (400, "Failed to fetch OAuth2 token."), "PKCE is checked"
    refused = http.post("/api/collections/users/auth-with-oauth2", json={
        **body, "code": code_for(stand_in, redirect_uri, methods["codeChallenge"])})
    assert refused.status_code == 403 and refused.get_json() == {"data": {}, "message": "Sign-ups are closed.", "status": 403}

    no_userinfo = provider_app(stand_in, refuse, userinfo_path="/no-such-path").test_client()
    no_user = no_userinfo.post("/api/collections/users/auth-with-oauth2", json={
        **body, "code": code_for(stand_in, redirect_uri, methods["codeChallenge"])})
    assert (no_user.status_code, no_user.get_json()["message"]) == (400, "Failed to fetch OAuth2 user.")
