"""Sign in with OAuth2 (extra ``oauth2``: Authlib): the rest of the SDK's ``authWithOAuth2``.

The redirect over realtime (``/api/oauth2-redirect`` and the ``@oauth2`` event) is built in
(:mod:`flask_rtbroker.oauth2_redirect`); this package adds ``auth-methods`` and
``auth-with-oauth2`` for an auth collection of the app: :class:`OAuth2Login`.
"""

from .login import PROVIDERS_KEY, AuthResult, OAuth2Login, OAuth2SignIn
from .provider import OAuth2Provider, OAuth2User, openid_user

__all__ = ["PROVIDERS_KEY", "AuthResult", "OAuth2Login", "OAuth2Provider", "OAuth2SignIn", "OAuth2User", "openid_user"]
