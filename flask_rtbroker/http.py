"""HTTP details shared by the views: PocketBase's JSON errors, default headers, CORS, real IP."""

from __future__ import annotations

from functools import lru_cache
from http import HTTPStatus
from typing import Any, Iterable

from flask import Request, Response

from .protocol import encoding
from .config import Settings
from .errors import ApiError

GENERIC_MESSAGE = "Something went wrong while processing your request."

SECURITY_HEADERS = (
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "SAMEORIGIN"),
    ("X-Xss-Protection", "1; mode=block"),
)
"""PocketBase's app-wide response headers, sent on every realtime response."""

STREAM_HEADERS = (
    ("Cache-Control", "no-store"),
    ("Content-Type", "text/event-stream"),
    ("X-Accel-Buffering", "no"),
)
"""The SSE response's own headers (no charset on the Content-Type, no buffering by nginx)."""

PREFLIGHT_METHODS = "GET,HEAD,PUT,PATCH,POST,DELETE"


@lru_cache(maxsize=64)
def status_line(code: int) -> str:
    """``"204 No Content"``: the reason phrase as Go writes it (werkzeug would upper-case it).
    Cached: the server keeps a response's status line while it streams, so streams share one."""
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def error_response(error: ApiError) -> Response:
    """Render *error* as PocketBase does: compact JSON, keys sorted, with a Content-Length."""
    body = encoding.dumps_sorted(error.to_dict())
    return Response(body, status=status_line(error.status), content_type="application/json")


def bad_request(data: Any = None, message: str = GENERIC_MESSAGE) -> ApiError:
    """PocketBase's 400 with optional field errors."""
    return ApiError(400, message, data)


def stream_response(body: Iterable[bytes]) -> Response:
    """Wrap the stream iterator in a response with the SSE headers, passed through unbuffered."""
    response = Response(body, status=status_line(200), direct_passthrough=True)
    for name, value in STREAM_HEADERS:
        response.headers[name] = value
    return response


def no_content() -> Response:
    """A 204 with no body and no Content-Type, like PocketBase's."""
    response = Response(status=status_line(204))
    response.headers.remove("Content-Type")
    return response


def add_default_headers(response: Response, request: Request, settings: Settings) -> Response:
    """Add the security headers, ``Vary: Origin`` and, when the origin is allowed, CORS.

    Only the endpoint's own responses pass here, so the headers are appended, not merged.
    """
    headers = response.headers
    headers.extend(SECURITY_HEADERS)
    if "Vary" in headers:
        response.vary.add("Origin")
    else:
        headers.add("Vary", "Origin")
    origin = request.headers.get("Origin")
    allowed = allowed_origin(origin, settings)
    if allowed is not None:
        response.headers["Access-Control-Allow-Origin"] = allowed
    return response


def allowed_origin(origin: str | None, settings: Settings) -> str | None:
    """Return the ``Access-Control-Allow-Origin`` value for *origin*, or None for no CORS header."""
    origins = settings.cors_origins
    if origin is None or origins is None:
        return None
    if origins == "*":
        return "*"
    return origin if origin in origins else None


def preflight_response(request: Request, settings: Settings) -> Response:
    """Answer a CORS preflight (OPTIONS) like PocketBase's default CORS layer."""
    response = no_content()
    if allowed_origin(request.headers.get("Origin"), settings) is not None:
        response.headers["Access-Control-Allow-Methods"] = PREFLIGHT_METHODS
        requested = request.headers.get("Access-Control-Request-Headers")
        if requested:
            response.headers["Access-Control-Allow-Headers"] = requested
    response.vary.update(("Access-Control-Request-Method", "Access-Control-Request-Headers"))
    return response


def client_ip(request: Request, settings: Settings) -> str:
    """The real client IP: the socket peer unless trusted proxy headers are configured."""
    for header in settings.trusted_proxy_headers:
        value = request.headers.get(header, "").strip()
        if not value:
            continue
        addresses = [part.strip() for part in value.split(",") if part.strip()]
        if addresses:
            return addresses[0] if settings.use_leftmost_ip else addresses[-1]
    return request.remote_addr or ""
