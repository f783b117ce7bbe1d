"""Agent tokens over REST (SPEC §4.4).

``POST /api/v1/{projectKey}/assist/sessions/{sessionId}/agent-token``: an API-key holder (an
agent's backend) gets a short-lived token for one live session and hands it to the agent's browser,
which then connects to ``/`` with ``auth={"token": …}`` without ever seeing the API key.

Checks, in the Assist API's order: the key (401), the project (404), that the key covers it (403),
the sessionId (400), then that the session is live (404): a token is minted only for a session
that is live at that moment (docs/api.md).
"""

from __future__ import annotations

from aiohttp import web

from api.assist import assist_project
from hub.errors import InvalidInput, SessionNotFound
from hub.handshake import ID_PATTERN, ID_RULE
from hub.typedefs import AGENT_TOKENS, REGISTRY

routes = web.RouteTableDef()


@routes.post("/api/v1/{projectKey}/assist/sessions/{sessionId}/agent-token")
async def agent_token(request: web.Request) -> web.Response:
    """``{"data": {"token": "<HS256 JWT for that project and session, valid 1 h>"}}``."""
    project = await assist_project(request)
    session_id = request.match_info["sessionId"]
    if not ID_PATTERN.match(session_id):
        raise InvalidInput(f"sessionId must be {ID_RULE}", "sessionId")
    if await request.app[REGISTRY].get(project.project_key, session_id) is None:
        raise SessionNotFound("session not found")
    token = await request.app[AGENT_TOKENS].mint(
        project.project_id, project.project_key, session_id
    )
    return web.json_response({"data": {"token": token}})
