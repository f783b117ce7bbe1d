"""The default Socket.IO namespace ``/``, shared by trackers and agents (SPEC §4.1, §4.4).

Each connection is dispatched on its ``identity`` query parameter to a :class:`Role`, and its
events go to the role it connected as. hub/tracker.py registers the ``session`` role; the assist
relay adds ``agent`` with ``root_namespace(sio).add_role("agent", ...)``.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import socketio

from hub.handshake import parse_query
from hub.logs import bind_connection
from hub.metrics import Metrics

NAMESPACE = "/"

log = logging.getLogger(__name__)


class Role(Protocol):
    """What connects to ``/`` with one ``identity``: trackers, agents."""

    async def connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        """Accept the connection, or raise socketio.exceptions.ConnectionRefusedError."""

    async def event(self, sid: str, event: str, args: tuple[Any, ...]) -> Any:
        """Handle an event; the return value is the ack sent when the client asked for one."""

    async def disconnect(self, sid: str, reason: str) -> None: ...


class RootNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """The default namespace: every connection is dispatched on its ``identity`` query parameter."""

    def __init__(self) -> None:
        super().__init__(NAMESPACE)
        self._roles: dict[str, Role] = {}
        self._role_of: dict[str, Role] = {}
        self.metrics: Metrics | None = None  # set by hub.tracker.register

    def add_role(self, identity: str, role: Role) -> None:
        self._roles[identity] = role

    def role(self, identity: str) -> Role | None:
        return self._roles.get(identity)

    async def trigger_event(self, event: str, *args: Any) -> Any:
        # Every log line of the handlers carries the connection's sid (hub/logs.py).
        with bind_connection(args[0]):
            return await self._dispatch(event, *args)

    async def _dispatch(self, event: str, *args: Any) -> Any:
        sid = args[0]
        connected = self.server.manager.is_connected(sid, NAMESPACE)
        if event == "connect" and not connected:
            return await self._connect(sid, args[1], args[2] if len(args) > 2 else None)
        if event == "disconnect" and not connected:
            role = self._role_of.pop(sid, None)
            if role is not None:
                if self.metrics is not None:
                    self.metrics.disconnected(self._identity(role))
                log.debug("disconnected (%s)", args[1] if len(args) > 1 else "")
                await role.disconnect(sid, args[1] if len(args) > 1 else "")
            return None
        role = self._role_of.get(sid)
        if role is None:
            return None
        if self.metrics is not None:
            self.metrics.event_in(self._identity(role), event)
        return await role.event(sid, event, args[1:])

    def _identity(self, role: Role) -> str:
        return next((name for name, r in self._roles.items() if r is role), "")

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        identity = parse_query(environ.get("QUERY_STRING", "")).get("identity", "")
        role = self._roles.get(identity)
        if role is None:
            if self.metrics is not None:
                self.metrics.refused_connection(identity)
            raise socketio.exceptions.ConnectionRefusedError(
                f"unknown identity {identity[:40]!r}: it must be session or agent"
            )
        try:
            await role.connect(sid, environ, auth)
        except Exception as e:
            if self.metrics is not None:
                self.metrics.refused_connection(identity)
            log.debug("refused identity=%.40s: %s", identity, e)
            raise
        self._role_of[sid] = role
        if self.metrics is not None:
            self.metrics.connected(identity)
        log.debug("connected as identity=%s", identity)


def still_open(sio: socketio.AsyncServer, sid: str) -> bool:
    """Whether the Engine.IO socket under a ``/`` connection is open and not closing."""
    eio_sid = sio.manager.eio_sid_from_sid(sid, NAMESPACE)
    socket = sio.eio.sockets.get(eio_sid) if eio_sid is not None else None
    return socket is not None and not socket.closing and not socket.closed


def root_namespace(sio: socketio.AsyncServer) -> RootNamespace:
    """The dispatching namespace ``register`` put on ``sio``."""
    namespace = sio.namespace_handlers.get(NAMESPACE)
    if not isinstance(namespace, RootNamespace):
        raise RuntimeError("hub.tracker.register was not called on this server")
    return namespace
