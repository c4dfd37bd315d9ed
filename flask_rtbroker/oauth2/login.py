"""``auth-methods`` and ``auth-with-oauth2`` for one auth collection of the app, on Authlib.

What is PocketBase's (the shapes the SDK reads) and what is the app's:

- ``GET <api>/collections/<collection>/auth-methods``: PocketBase's ``{password, oauth2, mfa,
  otp}`` (plus its legacy ``authProviders``, ``usernamePassword``, ``emailPassword``); each
  provider with ``name``, ``displayName``, ``state``, ``authURL`` (ending in ``redirect_uri=``,
  for the SDK to append its redirect URL), ``codeVerifier``, ``codeChallenge``,
  ``codeChallengeMethod``. ``?fields=`` picks top-level keys, as the SDK asks. Nothing is kept
  on the server: the verifier goes to the client, which sends it back with the code.
- ``POST <api>/collections/<collection>/auth-with-oauth2`` with ``{provider, code,
  codeVerifier, redirectURL, createData}``: PocketBase's 400s for a missing or unknown provider or
  code; the code exchange and the userinfo call (Authlib; 400 ``Failed to fetch OAuth2 token.``
  / ``... user.`` when they fail); then the app's ``authenticate`` hook finds or creates its user
  and issues its own token: the app owns users, tokens and what ``record`` holds. The answer is
  PocketBase's ``{token, record, meta}``, ``meta`` being the provider account (``id``, ``name``,
  ``username``, ``email``, ``avatarURL``, ``accessToken``, ``refreshToken``, ``expiry``,
  ``rawUser``) plus the hook's ``isNew``.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from flask import Blueprint, Flask, Request, Response, request
from werkzeug.exceptions import HTTPException

from ..protocol import encoding
from ..errors import ApiError, InvalidJSON, NotInitializedError
from ..http import add_default_headers, bad_request, error_response, preflight_response, status_line
from ..state import EXTENSION_KEY, BrokerState
from .provider import OAuth2Provider, OAuth2User, providers_from_config

try:
    from authlib.common.security import generate_token
    from authlib.integrations.requests_client import OAuth2Session
    from authlib.oauth2.rfc7636 import create_s256_code_challenge
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    from ..errors import MissingDependency

    raise MissingDependency("flask_rtbroker.oauth2 needs Authlib: pip install 'flask-rtbroker[oauth2]'") from exc

log = logging.getLogger("flask_rtbroker.oauth2")

PROVIDERS_KEY = "RTBROKER_OAUTH2_PROVIDERS"
"""The ``app.config`` key :class:`OAuth2Login` reads its providers from by default."""
LOAD_DATA_MESSAGE = "An error occurred while loading the submitted data."
TOKEN_FAILED_MESSAGE = "Failed to fetch OAuth2 token."
USER_FAILED_MESSAGE = "Failed to fetch OAuth2 user."
MAX_FIELDS_LENGTH = 1000
"""Characters of ``?fields=`` read; the rest is ignored."""


@dataclass(frozen=True)
class OAuth2SignIn:
    """What the ``authenticate`` hook gets: the provider's account and tokens, the SDK's
    ``createData`` and the request (for the app's own checks)."""

    collection: str
    provider: OAuth2Provider
    user: OAuth2User
    token: Mapping[str, Any]
    create_data: Mapping[str, Any]
    request: Request


@dataclass(frozen=True)
class AuthResult:
    """The hook's answer: the app's own *token* and *record* (any JSON-encodable mapping) and
    whether the record was created now; *meta* adds keys to the answer's ``meta``."""

    token: str
    record: Mapping[str, Any]
    is_new: bool = False
    meta: Mapping[str, Any] = field(default_factory=dict)


Authenticate = Callable[[OAuth2SignIn], AuthResult]


class OAuth2Login:
    """Serve ``auth-methods`` and ``auth-with-oauth2`` for *collection* on *app*::

        OAuth2Login(app, "users", authenticate=find_or_create_user)

    *providers* defaults to ``app.config["RTBROKER_OAUTH2_PROVIDERS"]`` (``{name: {options}}``,
    see :class:`~flask_rtbroker.oauth2.OAuth2Provider`). *password_identity_fields* (e.g.
    ``["email"]``) reports password sign-in as enabled in ``auth-methods``, for an app that has
    it. *timeout* bounds each call to a provider, in seconds. Register after ``init_app``: the
    endpoints sit beside the realtime prefix (``/api/realtime`` -> ``/api/collections/...``) and
    use its CORS and body-size settings.
    """

    def __init__(self, app: Flask, collection: str, *, authenticate: Authenticate,
                 providers: Any = None, password_identity_fields: Iterable[str] = (),
                 timeout: float = 10.0) -> None:
        state: BrokerState | None = app.extensions.get(EXTENSION_KEY)
        if state is None:
            raise NotInitializedError("OAuth2Login needs a RealtimeBroker on the app: call init_app(app) first")
        self.state = state
        self.collection = collection
        self.authenticate = authenticate
        self.providers = providers_from_config(app.config.get(PROVIDERS_KEY, {}) if providers is None else providers)
        self.password_identity_fields = list(password_identity_fields)
        self.timeout = timeout
        app.register_blueprint(self.blueprint(), url_prefix=self.url_prefix)

    @property
    def url_prefix(self) -> str:
        """``<api>/collections/<collection>``, beside the realtime prefix."""
        return self.state.settings.url_prefix.rpartition("/")[0] + "/collections/" + self.collection

    def blueprint(self) -> Blueprint:
        """The two endpoints (and their CORS preflights), with PocketBase's headers and errors."""
        blueprint = Blueprint(f"rtbroker_oauth2_{self.collection}", __name__)
        settings = self.state.settings

        def auth_methods() -> Response:
            if request.method == "OPTIONS":
                return preflight_response(request, settings)
            return self.auth_methods()

        def auth_with_oauth2() -> Response:
            if request.method == "OPTIONS":
                return preflight_response(request, settings)
            return self.auth_with_oauth2()

        for view in (auth_methods, auth_with_oauth2):
            view.provide_automatic_options = False  # type: ignore[attr-defined]
        blueprint.add_url_rule("/auth-methods", "auth_methods", auth_methods, methods=["GET", "OPTIONS"])
        blueprint.add_url_rule("/auth-with-oauth2", "auth_with_oauth2", auth_with_oauth2, methods=["POST", "OPTIONS"])
        blueprint.register_error_handler(ApiError, error_response)
        blueprint.register_error_handler(HTTPException, _http_error)
        blueprint.after_request(lambda response: add_default_headers(response, request, settings))
        return blueprint

    # -- auth-methods ---------------------------------------------------------------------------

    def auth_methods(self) -> Response:
        """PocketBase's auth-methods answer, with a fresh state and PKCE pair per provider."""
        providers = [self.provider_info(provider) for provider in self.providers.values()]
        identity_fields = self.password_identity_fields
        result: dict[str, Any] = {
            "password": {"identityFields": identity_fields, "enabled": bool(identity_fields)},
            "oauth2": {"providers": providers, "enabled": bool(providers)},
            "mfa": {"enabled": False, "duration": 0},
            "otp": {"enabled": False, "duration": 0},
            "authProviders": [{k: v for k, v in p.items() if k != "logo"} for p in providers],
            "usernamePassword": "username" in identity_fields,
            "emailPassword": "email" in identity_fields,
        }
        wanted = _top_level_fields(request.args.get("fields", ""))
        if wanted:
            result = {key: value for key, value in result.items() if key in wanted}
        return _json(result)

    def provider_info(self, provider: OAuth2Provider) -> dict[str, Any]:
        """One provider's entry: its authorize URL built by Authlib, ending in ``redirect_uri=``."""
        state = generate_token(30)
        verifier = generate_token(43) if provider.pkce else ""
        with OAuth2Session(provider.client_id, scope=" ".join(provider.scopes) or None,
                           code_challenge_method="S256" if provider.pkce else None) as session:
            url, _ = session.create_authorization_url(provider.authorize_url, state=state,
                                                      code_verifier=verifier or None, **provider.authorize_params)
        url += "&redirect_uri="  # the SDK appends its <base>/api/oauth2-redirect
        return {
            "name": provider.name,
            "displayName": provider.title,
            "logo": "",
            "state": state,
            "authURL": url,
            "authUrl": url,
            "codeVerifier": verifier,
            "codeChallenge": create_s256_code_challenge(verifier) if verifier else "",
            "codeChallengeMethod": "S256" if verifier else "",
        }

    # -- auth-with-oauth2 -----------------------------------------------------------------------

    def auth_with_oauth2(self) -> Response:
        """Exchange the code, fetch the user, let the app sign them in; ``{token, record, meta}``."""
        body = self._read_body()
        provider, code, verifier, redirect_url, create_data = self._validate(body)
        with OAuth2Session(provider.client_id, provider.client_secret,
                           token_endpoint_auth_method=provider.token_endpoint_auth_method,
                           redirect_uri=redirect_url or None, scope=" ".join(provider.scopes) or None) as session:
            token, user = self._exchange(session, provider, code, verifier)
        result = self.authenticate(OAuth2SignIn(self.collection, provider, user, dict(token), create_data, request))
        meta = {
            "id": user.id, "name": user.name, "username": user.username, "email": user.email,
            "avatarURL": user.avatar_url, "avatarUrl": user.avatar_url,
            "accessToken": token.get("access_token") or "", "refreshToken": token.get("refresh_token") or "",
            "expiry": _expiry(token.get("expires_at")), "rawUser": user.raw, "isNew": result.is_new,
            **result.meta,
        }
        return _json({"token": result.token, "record": result.record, "meta": meta})

    def _exchange(self, session: Any, provider: OAuth2Provider, code: str, verifier: str) -> tuple[Any, OAuth2User]:
        """The provider's token for *code*, then its account; 400s as PocketBase's when either fails."""
        try:
            extra = {"code_verifier": verifier} if provider.pkce and verifier else {}
            token = session.fetch_token(provider.token_url, code=code, timeout=self.timeout, **extra)
        except Exception as exc:  # noqa: BLE001 - any failure of the exchange is the client's 400
            log.info("OAuth2 code exchange with %r failed: %r", provider.name, exc)
            raise ApiError(400, TOKEN_FAILED_MESSAGE, {}) from exc
        try:
            answer = session.get(provider.userinfo_url, timeout=self.timeout)
            answer.raise_for_status()
            raw = answer.json()
            if not isinstance(raw, dict):
                raise ValueError("the userinfo answer is not a JSON object")
            user = provider.map_user(raw)
            if not user.id:
                raise ValueError("the userinfo answer has no account id")
        except Exception as exc:  # noqa: BLE001 - as PocketBase: the user could not be fetched
            log.info("OAuth2 userinfo from %r failed: %r", provider.name, exc)
            raise ApiError(400, USER_FAILED_MESSAGE, {}) from exc
        return token, user

    def _read_body(self) -> Mapping[str, Any]:
        request.max_content_length = self.state.settings.max_body_size
        request.max_form_parts = 64
        try:
            if request.mimetype == "application/json":
                data = encoding.loads_untrusted(request.get_data(cache=False))
            else:
                data = request.form.to_dict()
        except (HTTPException, InvalidJSON):
            raise ApiError(400, LOAD_DATA_MESSAGE, {}) from None
        if not isinstance(data, dict):
            raise ApiError(400, LOAD_DATA_MESSAGE, {})
        return data

    def _validate(self, body: Mapping[str, Any]) -> tuple[OAuth2Provider, str, str, str, Mapping[str, Any]]:
        text = {key: body.get(key) for key in ("provider", "code", "codeVerifier", "redirectURL", "redirectUrl")}
        create_data = body.get("createData") or {}
        if not all(value is None or isinstance(value, str) for value in text.values()) or not isinstance(create_data, dict):
            raise ApiError(400, LOAD_DATA_MESSAGE, {})
        errors: dict[str, Any] = {}
        name, code = text["provider"] or "", text["code"] or ""
        if not name:
            errors["provider"] = {"code": "validation_required", "message": "Cannot be blank."}
        elif len(name) > 100:
            errors["provider"] = {"code": "validation_length_too_long",
                                  "message": "The length must be no more than 100.", "params": {"max": 100}}
        elif name not in self.providers:
            errors["provider"] = {"code": "validation_invalid_provider",
                                  "message": f"Provider with name {name} is missing or is not enabled.",
                                  "params": {"name": name}}
        if not code:
            errors["code"] = {"code": "validation_required", "message": "Cannot be blank."}
        if errors:
            raise bad_request(errors, LOAD_DATA_MESSAGE)
        redirect_url = text["redirectURL"] or text["redirectUrl"] or ""
        return self.providers[name], code, text["codeVerifier"] or "", redirect_url, create_data


def _top_level_fields(text: str) -> set[str]:
    """The top-level names of a ``?fields=`` list (``*`` or nothing: every key)."""
    names = {part.strip().partition(".")[0].partition(":")[0] for part in text[:MAX_FIELDS_LENGTH].split(",")}
    names.discard("")
    return set() if "*" in names else names


def _expiry(expires_at: Any) -> str:
    """PocketBase's DateTime text (``2006-01-02 15:04:05.000Z``) of a Unix time, "" without one."""
    if not isinstance(expires_at, (int, float)) or isinstance(expires_at, bool):
        return ""
    try:
        moment = datetime.datetime.fromtimestamp(expires_at, datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):  # a provider's nonsense stays out of the answer
        return ""
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _json(value: Any) -> Response:
    return Response(encoding.dumps(value), status=status_line(200), content_type="application/json")


def _http_error(exc: HTTPException) -> Response:
    code = exc.code or 500
    return error_response(ApiError(code, LOAD_DATA_MESSAGE if code in (400, 413) else (exc.description or exc.name)))
