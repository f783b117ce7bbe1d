"""The stored-session search API (SPEC §5.2, seed 002): search and read ended sessions.

Every route checks, in this order: the API key (401, with the seed's body), the project id
(404 for one that cannot exist), that the key covers the project (401 again: the seed knows no
403, and a caller learns nothing about projects its key does not cover), that the project exists
(404), then the input (400). A store failure is the seed's 500 ``internal server error``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from api.auth import authenticate
from api.validation import read_json_object
from hub.errors import (
    HubError,
    InvalidInput,
    ProjectNotFound,
    SessionNotFound,
    StoreUnavailable,
    Unauthorized,
)
from hub.store.base import Project, StoredSession
from hub.typedefs import STORE

routes = web.RouteTableDef()

INVALID_AUTH: dict[str, object] = {"error": {"message": "Invalid authentication"}}
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000

_PROJECT_ID = re.compile(r"[1-9][0-9]{0,17}")  # below 2**63: every id a database can hold
_SESSION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # what a tracker may use (SPEC §4.1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Handler = Callable[[web.Request], Awaitable[web.Response]]


def store_failure_is_500(handler: Handler) -> Handler:
    """Answer a store that does not answer with the seed's 500, not the hub's usual 503."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except StoreUnavailable as e:
            raise HubError(f"stored-session API: {e}") from e

    return wrapped


async def stored_project(request: web.Request) -> Project:
    """The project of ``{projectId}`` once the request's key is checked (see the module doc)."""
    key = await authenticate(request, body=INVALID_AUTH)
    raw_id = request.match_info["projectId"]
    if not _PROJECT_ID.fullmatch(raw_id):
        raise ProjectNotFound("project not found")
    project_id = int(raw_id)
    if not key.covers(project_id):
        raise Unauthorized("this API key does not cover this project", body=INVALID_AUTH)
    project = await request.app[STORE].project_by_id(project_id)
    if project is None:
        raise ProjectNotFound("project not found")
    return project


@routes.post("/api/project/{projectId}/integration/api/session/search")
@store_failure_is_500
async def search_sessions(request: web.Request) -> web.Response:
    """One page of the project's stored sessions whose compact JSON holds ``search_string``."""
    project = await stored_project(request)
    body = await read_json_object(request)
    needle = body.get("search_string")
    if not isinstance(needle, str) or not needle:
        raise InvalidInput("search_string is required", "search_string")
    limit = _int_field(body, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _int_field(body, "offset", 0, 0, None)
    page = await request.app[STORE].search(project.project_id, needle, limit, offset)
    pagination = json.dumps({"limit": limit, "offset": offset, "total": page.total})
    results = ",".join(session_json(s) for s in page.sessions)
    return _json_text(f'{{"results":[{results}],"pagination":{pagination}}}')


@routes.get("/api/project/{projectId}/integration/api/session/{sessionId}")
@store_failure_is_500
async def get_session(request: web.Request) -> web.Response:
    """The most recently updated stored session with that id, or 404."""
    project = await stored_project(request)
    session_id = request.match_info["sessionId"]
    stored = None
    if _SESSION_ID.fullmatch(session_id):  # no other id was ever stored
        stored = await request.app[STORE].get_session(project.project_id, session_id)
    if stored is None:
        raise SessionNotFound("session not found")
    return _json_text(session_json(stored))


def session_json(session: StoredSession) -> str:
    """``{"sessionId", "data", "createdAt", "updatedAt"}`` as JSON text.

    ``data`` is the stored compact JSON, spliced in as it is: the very text that was searched,
    and no cost of parsing and writing again up to 4 MiB a session.
    """
    return (
        f'{{"sessionId":{json.dumps(session.session_id)},"data":{session.data_json},'
        f'"createdAt":"{iso_time(session.created_at_ms)}",'
        f'"updatedAt":"{iso_time(session.updated_at_ms)}"}}'
    )


def iso_time(ms: int) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC with milliseconds: 2024-01-15T10:30:00.000Z."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def _int_field(body: dict[str, Any], name: str, default: int, low: int, high: int | None) -> int:
    raw = body.get(name)
    if raw is None:
        return default
    # bool is an int in Python, but true is not a count.
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise InvalidInput(f"{name} must be an integer", name)
    if raw < low or (high is not None and raw > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise InvalidInput(f"{name} must be {bounds}, got {raw}", name)
    return raw


def _json_text(text: str) -> web.Response:
    return web.Response(text=text, content_type="application/json", charset="utf-8")
