"""All REST routes of a node, in one table."""

from __future__ import annotations

from aiohttp import web

from api import agent_token, assist, openapi, ops, stored


def setup_routes(app: web.Application) -> None:
    app.router.add_routes(ops.routes)
    app.router.add_routes(assist.routes)
    app.router.add_routes(stored.routes)
    app.router.add_routes(openapi.routes)
    app.router.add_routes(agent_token.routes)
