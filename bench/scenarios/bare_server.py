"""A bare python-socketio server, for P1's baseline: what one connection costs without livehub.

``python -m bench.scenarios.bare_server`` listens on ``HUB_HOST:HUB_PORT`` with the same Socket.IO
server livehub builds (``hub.app.create_sio``: websocket compression off, same heartbeat) and
accepts every connection on ``/``, keeping nothing about it.
"""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web

from hub.app import create_sio
from hub.settings import Settings


def main() -> None:
    settings = Settings(
        host=os.environ.get("HUB_HOST", "127.0.0.1"),
        port=int(os.environ["HUB_PORT"]),
        ping_interval=float(os.environ.get("HUB_PING_INTERVAL", "25")),
    )
    sio = create_sio(settings)
    app = web.Application()
    sio.attach(app, socketio_path=settings.socket_path)

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        return True

    sio.on("connect", connect)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/health", health)
    web.run_app(app, host=settings.host, port=settings.port, backlog=1024, print=None)


if __name__ == "__main__":
    main()
