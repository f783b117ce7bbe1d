"""The application factory: one hub node, REST and Socket.IO on one aiohttp application."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import socketio
from aiohttp import web

from api import middleware
from api.cors import cors
from api.errors import error_middleware
from api.routes import setup_routes
from hub import agent, livefeed, tracker
from hub.constants import SOCKETIO_CHANNEL
from hub.metrics import Metrics
from hub.pubsub import HubRedisManager
from hub.registry import create_registry
from hub.settings import Settings
from hub.sio_manager import HubManager
from hub.store import open_store
from hub.typedefs import METRICS, REGISTRY, SETTINGS, SIO, STORE
from hub.websocket import HubEngineIO

log = logging.getLogger(__name__)

CLOSE_SOCKETS_TIMEOUT = 5.0  # seconds SIGTERM waits for the connections to close


WRONG_PARSER_MESSAGE = (
    "this hub speaks the Socket.IO msgpack parser (HUB_SOCKET_SERIALIZER=msgpack); "
    "connect with a msgpack client"
)


class _HubServer(socketio.AsyncServer):  # type: ignore[misc]
    """The node's Socket.IO server: it turns away clients it cannot understand, clearly.

    Without this a JSON client's text packet fails to decode, the node logs a traceback and the
    client waits for a CONNECT that never comes. It gets a CONNECT_ERROR it can read instead.
    """

    msgpack_only = False

    def _engineio_server_class(self) -> type[HubEngineIO]:
        return HubEngineIO

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        if self.msgpack_only and isinstance(data, str):
            log.warning("refused a Socket.IO client with the JSON parser: this node uses msgpack")
            # Written as the JSON parser writes CONNECT_ERROR ("4"), the one thing it can read.
            await self.eio.send(eio_sid, "4" + json.dumps({"message": WRONG_PARSER_MESSAGE}))
            await self.eio.disconnect(eio_sid)
            return
        try:
            await super()._handle_eio_message(eio_sid, data)
        except ValueError:
            if self._decodes(data):
                raise
            # python-socketio would log a traceback and leave the client waiting for an answer
            # that never comes (a bare number as CONNECT auth does it): close it instead.
            log.warning("closed a Socket.IO connection that sent a packet it cannot decode")
            await self.eio.disconnect(eio_sid)

    def _decodes(self, data: Any) -> bool:
        try:
            self.packet_class(encoded_packet=data)
        except ValueError:
            return False
        return True


def create_sio(settings: Settings) -> socketio.AsyncServer:
    """The Socket.IO server of a node; cross-node emits go through Redis when it is set."""
    manager: socketio.AsyncManager = HubManager()
    if settings.redis_url:
        manager = HubRedisManager(settings.redis_url, channel=SOCKETIO_CHANNEL)
    kwargs: dict[str, Any] = {}
    if settings.socket_serializer == "msgpack":
        kwargs["serializer"] = "msgpack"
    sio = _HubServer(
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
    sio.msgpack_only = settings.socket_serializer == "msgpack"
    if not settings.ws_compression:
        sio.eio.use_hub_websocket()
    return sio


def create_app(settings: Settings) -> web.Application:
    """Build one hub node; tests use the same factory."""
    metrics = Metrics()
    app = web.Application(
        client_max_size=settings.limits.request_body_bytes,
        # Outermost first; docs in api/middleware.py. The Socket.IO endpoint skips the three
        # that would pass it on: its websocket would keep their frames for its whole life.
        middlewares=[
            middleware.by_endpoint(
                settings.socket_path,
                rest=[
                    middleware.request_context(settings.socket_path),
                    middleware.observe(metrics, settings.socket_path),
                    cors(settings.cors_origins, settings.socket_path),
                    error_middleware,
                    middleware.count_failures(metrics),
                ],
                socket=[error_middleware, middleware.count_failures(metrics)],
            )
        ],
        # The tracker's sessionInfo travels in the query string (docs/protocol.md).
        handler_args={"max_line_size": tracker.request_line_bytes(settings.limits)},
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    sio = create_sio(settings)
    app[SIO] = sio
    sio.attach(app, socketio_path=settings.socket_path)
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_registry_ctx)
    # Sockets are closed when shutdown starts, before aiohttp waits for open handlers, so every
    # tab leaves (its session enters the grace) while the registry still runs.
    app.on_shutdown.append(_close_sockets)
    tracker.register(app, sio)
    agent.register(app, sio)
    livefeed.register(app, sio)
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
    metrics = app[METRICS]
    registry = create_registry(app[SETTINGS], metrics.count_saves(store.save_session))
    metrics.watch_live_sessions(registry.live_count)
    await registry.start()
    app[REGISTRY] = registry
    yield
    await registry.close()


async def _close_sockets(app: web.Application) -> None:
    sio = app[SIO]
    try:
        # sio.shutdown() only stops background tasks: the connections themselves are closed
        # here, at the Engine.IO level (socket.io-client reconnects after a transport close,
        # not after a Socket.IO DISCONNECT). Each disconnect handler runs inside, while the
        # registry still runs. Bounded: a polling client may not come back for its CLOSE.
        sockets = list(sio.eio.sockets.values())
        if sockets:
            await asyncio.wait_for(sio.eio.disconnect(), CLOSE_SOCKETS_TIMEOUT)
        for socket in sockets:
            # python-engineio sends CLOSE but keeps a websocket open until its writer times out
            # (ping interval + timeout), and socket.io-client ignores CLOSE on a websocket: it
            # would go on sending into a closed session. None ends the writer, which closes
            # the websocket, so the client sees a transport close and reconnects at once.
            socket.queue.put_nowait(None)
    except Exception:
        log.exception("closing the Socket.IO connections failed")
    if isinstance(sio.manager, HubRedisManager):
        # What the disconnect handlers emitted leaves before the loop stops.
        await sio.manager.close()
    try:
        await sio.shutdown()
    except Exception:
        log.exception("stopping Socket.IO failed")
