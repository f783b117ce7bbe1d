"""The one place where errors become HTTP responses (SPEC §5): JSON, and never a traceback.

- A :class:`hub.errors.HubError` becomes its status (:func:`status_of`) with ``error.body`` when the
  raiser fixed one (an API whose document fixes its error body), else ``{"error": message}``.
- aiohttp's own HTTP errors (unknown route, wrong method, body over ``client_max_size`` …) keep
  their status and headers (``Allow`` of a 405) but answer ``{"error": …}`` instead of text.
- Anything else, and every 500, is logged with its traceback and answered
  ``{"error": "internal server error"}``, with no details.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from api.validation import parse_json_object, read_json_object
from hub.errors import (
    Forbidden,
    HubError,
    InvalidInput,
    NotFound,
    RateLimited,
    SearchTooBroad,
    TabAlreadyConnected,
    TooLarge,
    Unauthorized,
    Unavailable,
)

__all__ = [
    "error_middleware",
    "error_response",
    "parse_json_object",
    "read_json_object",
    "status_of",
]

log = logging.getLogger(__name__)

INTERNAL_ERROR = "internal server error"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Most specific first: TooLarge is an InvalidInput.
_STATUSES: tuple[tuple[type[HubError], int], ...] = (
    (TooLarge, 413),
    (InvalidInput, 400),
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (TabAlreadyConnected, 409),
    (SearchTooBroad, 422),
    (RateLimited, 429),
    (Unavailable, 503),
)

# Messages for aiohttp's HTTP errors whose text is not meant for an API client.
_HTTP_MESSAGES = {
    400: "bad request",
    404: "not found",
    405: "method not allowed",
    413: "request body too large",
}

# Headers of an aiohttp HTTP error that describe its text body, not the error.
_BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding"})


def status_of(error: HubError) -> int:
    """The HTTP status of a hub error; 500 for those no client could have caused."""
    for cls, status in _STATUSES:
        if isinstance(error, cls):
            return status
    return 500


def error_response(status: int, message: str) -> web.Response:
    """``{"error": message}`` with ``status``."""
    return web.json_response({"error": message}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error of a handler into a JSON response (see the module's docstring)."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise  # redirects and the like are answers, not errors
        return _from_http_exception(e)
    except HubError as e:
        status = status_of(e)
        if status >= 500 and not isinstance(e, Unavailable):
            log.exception("%s %s failed", request.method, request.path)
            return error_response(500, INTERNAL_ERROR)
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.path, e)
        if e.body is not None:
            return web.json_response(e.body, status=status)
        return error_response(status, str(e) or _default_message(status))
    except Exception:
        # CancelledError is a BaseException and passes: a cancelled request is not an error.
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, INTERNAL_ERROR)


def _from_http_exception(e: web.HTTPException) -> web.Response:
    response = error_response(e.status, _HTTP_MESSAGES.get(e.status) or e.reason.lower())
    for name, value in e.headers.items():
        if name.lower() not in _BODY_HEADERS:
            response.headers.add(name, value)
    return response


def _default_message(status: int) -> str:
    return {
        400: "invalid input",
        401: "unauthorized",
        403: "forbidden",
        404: "not found",
        409: "conflict",
        413: "request body too large",
        429: "too many requests",
        503: "service unavailable",
    }.get(status, INTERNAL_ERROR)
