"""Sign in with OAuth2: the official SDK's ``authWithOAuth2`` against a Flask app.

Run the stand-in provider and this app (the SDK page is at http://127.0.0.1:5000/)::

    flask --app examples.oauth2_provider run -p 5001 &
    OAUTH2_PROVIDER_URL=http://127.0.0.1:5001 gunicorn -k gevent -b 127.0.0.1:5000 examples.oauth2_login:app

In the browser (or Node)::

    const pb = new PocketBase("http://127.0.0.1:5000");
    const auth = await pb.collection("users").authWithOAuth2({ provider: "example" });

The realtime redirect (``/api/oauth2-redirect``, the ``@oauth2`` event) comes with
``RealtimeBroker``; ``OAuth2Login`` adds ``auth-methods`` and ``auth-with-oauth2`` for the
``users`` collection. The app keeps its users (here in memory, keyed by provider and account id)
and issues its own tokens; ``GET /api/me`` shows who a token belongs to.
``OAUTH2_EXAMPLE_POCKETBASE_JS`` is the SDK file the page loads (default: the demo's copy).
"""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request, send_file

from flask_rtbroker import RealtimeBroker, load_env
from flask_rtbroker.oauth2 import AuthResult, OAuth2Login, OAuth2SignIn

SDK_FILE = Path(__file__).resolve().parent / "demo" / "node_modules" / "pocketbase" / "dist" / "pocketbase.umd.js"
PAGE = """<!doctype html><meta charset="utf-8"><title>Sign in with OAuth2</title>
<button id="signin">Sign in with the example provider</button>
<pre id="result"></pre>
<script src="pocketbase.umd.js"></script>
<script>
const pb = new PocketBase(location.origin);
document.getElementById("signin").onclick = async () => {
  const out = document.getElementById("result");
  try {
    const auth = await pb.collection("users").authWithOAuth2({ provider: "example" });
    out.dataset.state = "signed-in";
    out.textContent = JSON.stringify({ token: auth.token, record: auth.record, meta: auth.meta });
  } catch (error) {
    out.dataset.state = "failed";
    out.textContent = String(error);
  }
};
</script>
"""


def create_app() -> Flask:
    """The example app; the provider's URL comes from ``OAUTH2_PROVIDER_URL``."""
    app = Flask(__name__)
    load_env(app.config)
    provider_url = os.environ.get("OAUTH2_PROVIDER_URL", "http://127.0.0.1:5001").rstrip("/")
    app.config["RTBROKER_OAUTH2_PROVIDERS"] = {
        "example": {
            "display_name": "Example provider",
            "client_id": os.environ.get("OAUTH2_PROVIDER_CLIENT_ID", "rtbroker-example"),
            "client_secret": os.environ.get("OAUTH2_PROVIDER_CLIENT_SECRET", "example-secret-not-for-production"),
            "authorize_url": provider_url + "/authorize",
            "token_url": provider_url + "/token",
            "userinfo_url": provider_url + "/userinfo",
            "scopes": ["openid", "email", "profile"],
        },
    }
    RealtimeBroker(app)
    users: dict[tuple[str, str], dict[str, Any]] = {}
    tokens: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()

    def sign_in(login: OAuth2SignIn) -> AuthResult:
        """Find the user of this provider account, or create it; issue a token of ours."""
        key = (login.provider.name, login.user.id)
        with lock:
            record = users.get(key)
            is_new = record is None
            if record is None:
                record = users[key] = {
                    "id": secrets.token_hex(8), "collectionName": login.collection,
                    "email": login.user.email, "name": login.create_data.get("name") or login.user.name,
                    "verified": bool(login.user.email),
                }
            token = secrets.token_urlsafe(32)
            tokens[token] = record
        return AuthResult(token=token, record=record, is_new=is_new)

    OAuth2Login(app, "users", authenticate=sign_in)

    @app.get("/")
    def index() -> Response:
        return Response(PAGE, content_type="text/html; charset=utf-8")

    @app.get("/pocketbase.umd.js")
    def sdk() -> Any:
        return send_file(os.environ.get("OAUTH2_EXAMPLE_POCKETBASE_JS") or SDK_FILE, mimetype="text/javascript")

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status=204)

    @app.get("/api/me")
    def me() -> Any:
        with lock:
            record = tokens.get(request.headers.get("Authorization", ""))
        return (jsonify(record), 200) if record else (jsonify({"message": "not signed in"}), 401)

    return app


app = create_app()
