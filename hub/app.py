"""The application factory: one hub node, REST and Socket.IO on one aiohttp application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import socketio
from aiohttp import web
from engineio.async_drivers import aiohttp as eio_aiohttp

from api.errors import error_middleware
from api.routes import setup_routes
from hub import tracker
from hub.constants import SOCKETIO_CHANNEL
from hub.registry import create_registry
from hub.settings import Settings
from hub.store import open_store
from hub.typedefs import REGISTRY, SETTINGS, SIO, STORE

log = logging.getLogger(__name__)


class _UncompressedWebSocket(eio_aiohttp.WebSocket):  # type: ignore[misc]
    """The Engine.IO websocket without per-message deflate.

    Compression costs about 90 KB per connection (docs/benchmarks.md); the events of a live
    session are small, so it is off unless HUB_WS_COMPRESSION is set.
    """

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        request = environ["aiohttp.request"]
        self._sock = web.WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, compress=False
        )
        await self._sock.prepare(request)
        self.environ = environ
        await self.handler(self)
        return self._sock


def create_sio(settings: Settings) -> socketio.AsyncServer:
    """The Socket.IO server of a node; cross-node emits go through Redis when it is set."""
    manager = None
    if settings.redis_url:
        manager = socketio.AsyncRedisManager(settings.redis_url, channel=SOCKETIO_CHANNEL)
    kwargs: dict[str, Any] = {}
    if settings.socket_serializer == "msgpack":
        kwargs["serializer"] = "msgpack"
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=manager,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        # Engine.IO's own cap sits a little above the event limit so that an oversized event
        # reaches the handlers and gets its ERROR instead of a dropped connection.
        max_http_buffer_size=settings.limits.event_bytes + 64 * 1024,
        cors_allowed_origins="*",
        logger=False,
        engineio_logger=False,
        **kwargs,
    )
    if not settings.ws_compression:
        sio.eio._async = dict(sio.eio._async, websocket=_UncompressedWebSocket)
    return sio


def create_app(settings: Settings) -> web.Application:
    """Build one hub node; tests use the same factory."""
    app = web.Application(
        client_max_size=settings.limits.request_body_bytes,
        middlewares=[error_middleware],
        # The tracker's sessionInfo travels in the query string (docs/protocol.md).
        handler_args={"max_line_size": tracker.request_line_bytes(settings.limits)},
    )
    app[SETTINGS] = settings
    sio = create_sio(settings)
    app[SIO] = sio
    sio.attach(app, socketio_path=settings.socket_path)
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_registry_ctx)
    # Sockets are closed when shutdown starts, before aiohttp waits for open handlers, so every
    # tab leaves (its session enters the grace) while the registry still runs.
    app.on_shutdown.append(_close_sockets)
    tracker.register(app, sio)
    setup_routes(app)
    return app


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = open_store(app[SETTINGS])
    await store.open()
    app[STORE] = store
    yield
    await store.close()


async def _registry_ctx(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE]
    registry = create_registry(app[SETTINGS], store.save_session)
    await registry.start()
    app[REGISTRY] = registry
    yield
    await registry.close()


async def _close_sockets(app: web.Application) -> None:
    sio = app[SIO]
    try:
        await sio.shutdown()
    except Exception:
        log.exception("closing the Socket.IO connections failed")
