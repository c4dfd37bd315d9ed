"""One OAuth2 provider's configuration, and the user it signs in.

A provider is configured by the app (``RTBROKER_OAUTH2_PROVIDERS`` or code); nothing here is
stored anywhere else. :func:`openid_user` maps the usual userinfo claims (OpenID Connect's, and
GitHub-like ``id``/``login``/``avatar_url``) to :class:`OAuth2User`; a provider with other
claims passes its own ``map_user``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..errors import ConfigurationError


@dataclass(frozen=True)
class OAuth2User:
    """The provider's account, as PocketBase's ``AuthUser`` names it.

    *email* must be a verified address (empty when the provider does not vouch for it): apps
    commonly link accounts by email.
    """

    id: str
    name: str = ""
    username: str = ""
    email: str = ""
    avatar_url: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict)


UserMapper = Callable[[Mapping[str, Any]], OAuth2User]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def openid_user(raw: Mapping[str, Any]) -> OAuth2User:
    """Map OpenID Connect claims (``sub``, ``name``, ``preferred_username``, ``email`` unless
    ``email_verified`` is false, ``picture``), or GitHub-like ones (``id``, ``login``,
    ``avatar_url``)."""
    email = _text(raw.get("email")) if raw.get("email_verified", True) is not False else ""
    return OAuth2User(
        id=_text(raw.get("sub") or raw.get("id")),
        name=_text(raw.get("name")),
        username=_text(raw.get("preferred_username") or raw.get("login") or raw.get("username")),
        email=email,
        avatar_url=_text(raw.get("picture") or raw.get("avatar_url")),
        raw=dict(raw),
    )


@dataclass(frozen=True)
class OAuth2Provider:
    """An OAuth2 provider an auth collection signs in with.

    *name* is what the SDK passes as ``provider``; *authorize_url*, *token_url* and
    *userinfo_url* are the provider's endpoints; *pkce* adds an S256 code challenge (PocketBase
    does for most providers); *authorize_params* go into the authorize URL as they are (e.g.
    ``{"response_mode": "form_post"}``); *token_endpoint_auth_method* is how the client
    authenticates at the token endpoint (``client_secret_basic``, ``client_secret_post``, ``none``).
    """

    name: str
    client_id: str
    client_secret: str = field(repr=False)
    authorize_url: str
    token_url: str
    userinfo_url: str
    scopes: tuple[str, ...] = ()
    display_name: str = ""
    pkce: bool = True
    authorize_params: Mapping[str, str] = field(default_factory=dict)
    token_endpoint_auth_method: str = "client_secret_basic"
    map_user: UserMapper = openid_user

    @property
    def title(self) -> str:
        """The name shown to users: *display_name*, else *name*."""
        return self.display_name or self.name


_REQUIRED = ("client_id", "client_secret", "authorize_url", "token_url", "userinfo_url")
_OPTIONAL = ("scopes", "display_name", "pkce", "authorize_params", "token_endpoint_auth_method", "map_user")


def provider_from_config(name: str, options: Mapping[str, Any]) -> OAuth2Provider:
    """Build a provider from its config mapping; :class:`ConfigurationError` naming what is wrong."""
    where = f"OAuth2 provider {name!r}"
    if not isinstance(options, Mapping):
        raise ConfigurationError(f"{where} must be a mapping of options, not {type(options).__name__}")
    unknown = set(options) - set(_REQUIRED) - set(_OPTIONAL)
    if unknown:
        raise ConfigurationError(f"{where} has unknown options {sorted(unknown)}")
    for key in _REQUIRED:
        if not isinstance(options.get(key), str) or not options[key]:
            raise ConfigurationError(f"{where} needs {key!r} (a non-empty string)")
    values = dict(options)
    scopes = values.get("scopes", ())
    if isinstance(scopes, str):
        scopes = scopes.split()
    if not isinstance(scopes, (list, tuple)) or not all(isinstance(s, str) for s in scopes):
        raise ConfigurationError(f"{where}: 'scopes' must be a list of strings or one space-separated string")
    values["scopes"] = tuple(scopes)
    if not isinstance(values.get("pkce", True), bool):
        raise ConfigurationError(f"{where}: 'pkce' must be True or False")
    return OAuth2Provider(name=name, **values)


def providers_from_config(value: Any) -> dict[str, OAuth2Provider]:
    """Providers by name from ``{name: {option: value}}`` or a list of :class:`OAuth2Provider`."""
    if isinstance(value, Mapping):
        providers = [p if isinstance(p, OAuth2Provider) else provider_from_config(name, p) for name, p in value.items()]
    elif isinstance(value, (list, tuple)) and all(isinstance(p, OAuth2Provider) for p in value):
        providers = list(value)
    else:
        raise ConfigurationError(
            "OAuth2 providers must be a mapping {name: {options}} or a list of OAuth2Provider")
    by_name = {provider.name: provider for provider in providers}
    if len(by_name) != len(providers):
        raise ConfigurationError("two OAuth2 providers have the same name")
    return by_name
