"""CORS for the REST API (``HUB_CORS_ORIGINS``): browsers of the listed origins may call it.

- A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from an allowed origin is
  answered 204 with the methods and headers the API takes (``Authorization``, ``Content-Type``,
  ``X-Request-Id``); from any other origin it is 403 ``{"error": "origin not allowed"}`` with no
  CORS header, so the browser sends nothing.
- Every other response to an allowed origin carries ``Access-Control-Allow-Origin: <origin>``
  (the origin itself, never ``*``) and exposes ``X-Request-Id``. A request from another origin is
  answered as usual but without CORS headers: the browser hides the answer from the page, and a
  client that is not a browser is not stopped by CORS anyway (the API key is what protects).
- ``*`` in the list allows every origin. Origins compare ignoring case and a trailing ``/``.
- No origin listed (the default): no CORS header at all and preflights are 405, as before.

The Socket.IO endpoint is left alone: Engine.IO answers its own CORS.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict

from api.errors import error_response
from api.middleware import socket_path_matcher

ALLOW_METHODS = "GET, HEAD, POST"
ALLOW_HEADERS = "Authorization, Content-Type, X-Request-Id"
EXPOSE_HEADERS = "X-Request-Id"
# Seconds a browser may cache a preflight answer.
MAX_AGE = "600"


def _normal(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def cors(origins: Iterable[str], socket_path: str) -> Middleware:
    """The CORS middleware for ``origins`` (see the module's docstring)."""
    allowed = frozenset(_normal(o) for o in origins)
    any_origin = "*" in allowed
    is_socket = socket_path_matcher(socket_path)

    def allows(origin: str) -> bool:
        return any_origin or _normal(origin) in allowed

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if not allowed or origin is None or is_socket(request):
            return await handler(request)
        ok = allows(origin)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if not isinstance(request.match_info.http_exception, web.HTTPNotFound):
                return _preflight(origin) if ok else _refused()
        try:
            response = await handler(request)
        except web.HTTPException as e:  # a redirect, passed on by the error middleware
            _decorate(e.headers, origin if ok else None)
            raise
        if not response.prepared:
            _decorate(response.headers, origin if ok else None)
        return response

    return middleware


def _preflight(origin: str) -> web.Response:
    response = web.Response(status=204)
    _decorate(response.headers, origin)
    response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
    response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
    response.headers["Access-Control-Max-Age"] = MAX_AGE
    return response


def _refused() -> web.Response:
    response = error_response(403, "origin not allowed")
    response.headers["Vary"] = "Origin"
    return response


def _decorate(headers: CIMultiDict[str], origin: str | None) -> None:
    """Say that the answer depends on Origin; allow ``origin`` when given."""
    if "Origin" not in headers.getall("Vary", []):
        headers.add("Vary", "Origin")
    if origin is not None:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
