"""Middlewares of the REST API around the error middleware: request ids, metrics, failures.

The order in ``create_app`` (outermost first)::

    request_context → observe → cors (api/cors.py) → error_middleware → count_failures

``request_context`` binds the request id to every log line and echoes it; ``observe`` sees the
final status (after errors became JSON) and times the whole request; ``count_failures`` sees the
exceptions themselves, before the error middleware turns them into responses. The Socket.IO
endpoint goes through all of them untouched: a websocket request lasts as long as its connection,
and its log lines carry the connection id instead (hub/namespace.py).

:func:`by_endpoint` puts them all in one middleware that runs only the ones a request needs: a
Socket.IO request skips the three that pass it on anyway, so its websocket does not keep their
three suspended frames alive for its whole life (docs/optimisations.md, P1).
"""

from __future__ import annotations

import functools
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_urldispatcher import SystemRoute

from hub.logs import bind_request
from hub.metrics import Metrics

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
# A request id from a client or a proxy is kept when it is short and plain (a UUID, a hex or
# base64url token, a trace id); anything else could forge or break log lines, so it is replaced.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"


def socket_path_matcher(socket_path: str) -> Callable[[web.Request], bool]:
    """A predicate: is this request for the Socket.IO endpoint (not the REST API)?"""
    prefix = socket_path.rstrip("/")

    def is_socket(request: web.Request) -> bool:
        path = request.path
        return path == prefix or path.startswith(prefix + "/")

    return is_socket


def by_endpoint(
    socket_path: str, rest: Sequence[Middleware], socket: Sequence[Middleware]
) -> Middleware:
    """One middleware: ``rest`` (outermost first) around REST requests, ``socket`` around requests
    for the Socket.IO endpoint.

    It is no coroutine itself: it hands back the chain's awaitable, so a websocket, whose request
    lasts as long as the connection, holds the frames of ``socket`` alone. Chains are built once
    per route handler, as aiohttp does for its own middleware list.
    """
    is_socket = socket_path_matcher(socket_path)
    rest, socket = tuple(rest), tuple(socket)

    def build(handler: Handler, for_socket: bool) -> Handler:
        for outer in reversed(socket if for_socket else rest):
            handler = functools.partial(outer, handler=handler)
        return handler

    # Not for an error route (404, 405): aiohttp makes a new handler for each such request.
    cached = functools.lru_cache(maxsize=256)(build)

    @web.middleware
    def middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        chain = build if isinstance(request.match_info.route, SystemRoute) else cached
        return chain(handler, is_socket(request))(request)

    return middleware


def request_id_of(request: web.Request) -> str:
    """The request's ``X-Request-Id`` when it is sane, else a new one."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    if _SANE_REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


def request_context(socket_path: str) -> Middleware:
    """Bind a request id to the log lines of each REST request and echo it in the response."""
    is_socket = socket_path_matcher(socket_path)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_socket(request):
            return await handler(request)
        request_id = request_id_of(request)
        with bind_request(request_id):
            try:
                response = await handler(request)
            except web.HTTPException as e:  # a redirect, passed on by the error middleware
                e.headers[REQUEST_ID_HEADER] = request_id
                raise
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = request_id
        return response

    return middleware


def route_label(request: web.Request) -> str:
    """The route's template (``/api/v1/{projectKey}/assist/sessions``), never the raw path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED_ROUTE


def observe(metrics: Metrics, socket_path: str) -> Middleware:
    """Time every REST request into ``livehub_rest_request_seconds`` and log it at debug level."""
    is_socket = socket_path_matcher(socket_path)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_socket(request):
            return await handler(request)
        started = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as e:
            _record(metrics, request, e.status, started)
            raise
        # Anything else escaping (a cancelled request: the client left) is no answer to count.
        _record(metrics, request, response.status, started)
        return response

    return middleware


def _record(metrics: Metrics, request: web.Request, status: int, started: float) -> None:
    seconds = time.perf_counter() - started
    method = request.method if request.method in _METHODS else "other"
    metrics.observe_request(method, route_label(request), status, seconds)
    # The path only: a query string may carry anything a client put in it.
    log.debug("%s %s %d %.1f ms", method, request.path, status, seconds * 1000)


def count_failures(metrics: Metrics) -> Middleware:
    """Count registry and store failures of REST handlers (inside the error middleware)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except Exception as e:
            metrics.failed(e)
            raise

    return middleware
