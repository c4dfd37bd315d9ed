"""A stand-in OAuth2 provider for trying "Sign in with OAuth2" offline (and for the tests).

Authorization code grant with PKCE (S256), in memory, one registered client::

    flask --app examples.oauth2_provider run -p 5001

- ``GET /authorize``: checks the client, ``redirect_uri`` and the code challenge, then approves
  at once as the user ``?login=`` (default ``alice``) and sends the browser to ``redirect_uri``
  with ``code`` and ``state``; ``?outcome=deny`` sends ``error=access_denied`` instead;
  ``response_mode=form_post`` answers a page that POSTs them (as Apple does).
- ``POST /token``: the code (once), the same ``redirect_uri``, the client's secret (HTTP Basic or
  form) and the PKCE verifier -> an access token.
- ``GET /userinfo``: OpenID-style claims of the token's user.

Not a real provider: no consent screen, no expiry of codes. Never expose it.
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
import secrets
import threading
import time
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, jsonify, redirect, request

CLIENT_ID = os.environ.get("OAUTH2_PROVIDER_CLIENT_ID", "rtbroker-example")
CLIENT_SECRET = os.environ.get("OAUTH2_PROVIDER_CLIENT_SECRET", "example-secret-not-for-production")
USERS = {
    "alice": {"sub": "1001", "name": "Alice Example", "preferred_username": "alice",
              "email": "alice@example.test", "email_verified": True},
    "bob": {"sub": "1002", "name": "Bob Example", "preferred_username": "bob",
            "email": "bob@example.test", "email_verified": True},
}

app = Flask(__name__)
_lock = threading.Lock()
_codes: dict[str, dict[str, Any]] = {}
_tokens: dict[str, str] = {}


def _error(status: int, error: str) -> Response:
    response = jsonify({"error": error})
    response.status_code = status
    return response


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@app.get("/authorize")
def authorize() -> Any:
    """Approve at once (or deny with ``?outcome=deny``) and send the browser back."""
    args = request.args
    redirect_uri, state = args.get("redirect_uri", ""), args.get("state", "")
    if args.get("client_id") != CLIENT_ID or args.get("response_type") != "code" or not redirect_uri:
        return _error(400, "invalid_request")
    if args.get("code_challenge") and args.get("code_challenge_method") != "S256":
        return _error(400, "invalid_request")
    login = args.get("login", "alice")
    if login not in USERS:
        return _error(400, "unknown_user")
    if args.get("outcome") == "deny":
        answer = {"error": "access_denied", "state": state}
    else:
        code = secrets.token_urlsafe(24)
        with _lock:
            _codes[code] = {"user": login, "redirect_uri": redirect_uri,
                            "challenge": args.get("code_challenge", ""), "scope": args.get("scope", "")}
        answer = {"code": code, "state": state}
    if args.get("response_mode") == "form_post":
        inputs = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in answer.items())
        page = (f'<!doctype html><form method="post" action="{html.escape(redirect_uri)}">{inputs}</form>'
                "<script>document.forms[0].submit()</script>")
        return Response(page, content_type="text/html; charset=utf-8")
    return redirect(redirect_uri + ("&" if "?" in redirect_uri else "?") + urlencode(answer), 302)


def _client_authenticated() -> bool:
    auth = request.authorization
    if auth is not None and auth.type == "basic":
        return auth.username == CLIENT_ID and auth.password == CLIENT_SECRET
    return request.form.get("client_id") == CLIENT_ID and request.form.get("client_secret") == CLIENT_SECRET


@app.post("/token")
def token() -> Any:
    """Exchange a code (once) for an access token."""
    if not _client_authenticated():
        return _error(401, "invalid_client")
    form = request.form
    if form.get("grant_type") != "authorization_code":
        return _error(400, "unsupported_grant_type")
    with _lock:
        grant = _codes.pop(form.get("code", ""), None)
    if grant is None or grant["redirect_uri"] != form.get("redirect_uri"):
        return _error(400, "invalid_grant")
    if grant["challenge"] and _s256(form.get("code_verifier", "")) != grant["challenge"]:
        return _error(400, "invalid_grant")
    access = secrets.token_urlsafe(24)
    with _lock:
        _tokens[access] = grant["user"]
    return jsonify({"access_token": access, "token_type": "Bearer", "expires_in": 3600,
                    "expires_at": int(time.time()) + 3600, "refresh_token": secrets.token_urlsafe(24),
                    "scope": grant["scope"]})


@app.get("/userinfo")
def userinfo() -> Any:
    """The claims of the bearer token's user."""
    header = request.headers.get("Authorization", "")
    with _lock:
        login = _tokens.get(header.removeprefix("Bearer "))
    if not header.startswith("Bearer ") or login is None:
        return _error(401, "invalid_token")
    return jsonify(USERS[login])
