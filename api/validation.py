"""Reading request bodies: one strict JSON reader for every REST handler."""

from __future__ import annotations

import json
from typing import Any, NoReturn

from aiohttp import web

from hub.errors import InvalidInput


def _reject_constant(name: str) -> NoReturn:
    # Python's json reads NaN and Infinity, which are not JSON.
    raise ValueError(f"{name} is not JSON")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The JSON object in ``raw``; an empty (or all-whitespace) body is ``{}``.

    Raises InvalidInput ``invalid JSON body`` for text that is not strict UTF-8 JSON (NaN and
    Infinity included, and nesting too deep to parse), and ``request body must be a JSON object``
    for JSON of another type.
    """
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        # RecursionError: "[[[[…" a few thousand deep; it is bad input, not a server failure.
        raise InvalidInput("invalid JSON body", "body") from e
    if not isinstance(value, dict):
        raise InvalidInput("request body must be a JSON object", "body")
    return value


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request's body as a JSON object (see :func:`parse_json_object`).

    The Content-Type is not checked: curl and many clients send JSON without it. A body over the
    app's ``client_max_size`` raises aiohttp's 413, which the error middleware answers as JSON.
    """
    return parse_json_object(await request.read())
