"""API-key authentication of REST requests (SPEC §3)."""

from __future__ import annotations

from aiohttp import web

from hub.errors import Unauthorized
from hub.store.base import ApiKey
from hub.typedefs import STORE


def presented_key(request: web.Request) -> str | None:
    """The key in ``Authorization: <key>`` or ``Authorization: Bearer <key>``, or None."""
    header = request.headers.get("Authorization", "").strip()
    scheme, _, rest = header.partition(" ")
    if scheme.lower() == "bearer":
        header = rest.strip()
    return header or None


async def authenticate(request: web.Request, *, body: dict[str, object] | None = None) -> ApiKey:
    """The valid API key of the request; raises Unauthorized (with ``body`` if given)."""
    secret = presented_key(request)
    key = await request.app[STORE].authenticate(secret) if secret else None
    if key is None:
        raise Unauthorized("invalid or missing API key", body=body)
    return key
