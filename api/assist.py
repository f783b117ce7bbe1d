"""The Assist API (SPEC §5.1, seed 000): list, search and read the live sessions of a project.

Every route checks, in this order: the API key (401), the project key (404), that the key covers
the project (403), then the input (400/413). So a caller without a valid key learns nothing, not
even whether a project exists or whether its input was well formed. The queries themselves are
answered by the registry's in-memory index (``hub/registry/index.py``).
"""

from __future__ import annotations

from aiohttp import web

from api.auth import authenticate
from api.validation import json_response, read_json_object
from hub.errors import Forbidden, ProjectNotFound, SessionNotFound
from hub.handshake import ID_PATTERN
from hub.query import autocomplete_field, parse_query, parse_query_params, parse_text
from hub.registry.base import SessionQuery
from hub.store.base import Project
from hub.typedefs import REGISTRY, STORE

routes = web.RouteTableDef()

# Values an autocomplete answers at most (SPEC §5.1).
AUTOCOMPLETE_LIMIT = 10


async def assist_project(request: web.Request) -> Project:
    """The project of ``{projectKey}`` once the request's API key is checked against it.

    Raises Unauthorized (no, unknown or revoked key), ProjectNotFound, then Forbidden (a project
    key of another project). The project key is public (every tracker page carries it), so
    answering 404 before 403 tells a key holder nothing secret.
    """
    key = await authenticate(request)
    project = await request.app[STORE].project_by_key(request.match_info["projectKey"])
    if project is None:
        raise ProjectNotFound("project not found")
    if not key.covers(project.project_id):
        raise Forbidden("this API key does not cover this project")
    return project


@routes.get("/api/v1/{projectKey}/assist/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    """One page of the project's live sessions, newest first unless ``sort``/``order`` say."""
    project = await assist_project(request)
    return await _answer(request, project, parse_query_params(request.query))


@routes.post("/api/v1/{projectKey}/assist/sessions")
async def search_sessions(request: web.Request) -> web.Response:
    """One page of the project's live sessions that match the body's filters."""
    project = await assist_project(request)
    return await _answer(request, project, parse_query(await read_json_object(request)))


@routes.get("/api/v1/{projectKey}/assist/sessions/{sessionId}")
async def get_session(request: web.Request) -> web.Response:
    """The record of one live session, or 404."""
    project = await assist_project(request)
    session_id = request.match_info["sessionId"]
    # An id no tracker may use cannot be live: no need to ask the registry.
    record = None
    if ID_PATTERN.match(session_id):
        record = await request.app[REGISTRY].get(project.project_key, session_id)
    if record is None:
        raise SessionNotFound("session not found")
    return json_response({"data": record})


@routes.get("/api/v1/{projectKey}/assist/autocomplete")
async def autocomplete(request: web.Request) -> web.Response:
    """Distinct values of one filter type among the live sessions that contain ``q``."""
    project = await assist_project(request)
    type_name, field = autocomplete_field(request.query.get("type"), request.query.get("source"))
    q = parse_text(request.query.get("q"), "q")
    values = await request.app[REGISTRY].autocomplete(
        project.project_key, field, q, AUTOCOMPLETE_LIMIT
    )
    return json_response({"data": [{"type": type_name, "value": v} for v in values]})


async def _answer(request: web.Request, project: Project, query: SessionQuery) -> web.Response:
    result = await request.app[REGISTRY].query(project.project_key, query)
    return json_response({"data": {"total": result.total, "sessions": result.sessions}})
