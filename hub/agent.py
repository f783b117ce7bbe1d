"""The agent side of the Socket.IO protocol: the assist relay (SPEC §4.4, docs/protocol.md).

Agents connect to ``/`` with ``identity=agent`` (:mod:`hub.namespace` dispatches them here) and
exchange events with the tabs of one live session. Three rooms per session (:mod:`hub.rooms`):
``session_room`` holds its tabs and agents, ``agents_room`` its agents, ``tab_room`` one tab. Every
emit to a room reaches the clients on every node (python-socketio's Redis manager), and the agent
directory (:mod:`hub.registry.agents`) knows the agents of a session across the cluster. The tab
side plugs into the tracker through :class:`AgentHooks`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import socketio
from aiohttp import web

from hub.errors import (
    Forbidden,
    HubError,
    InvalidInput,
    NotFound,
    ProjectNotFound,
    Unauthorized,
)
from hub.handshake import (
    ID_PATTERN,
    ID_RULE,
    PROJECT_KEY_PATTERN,
    parse_json_object_param,
    parse_query,
)
from hub.namespace import NAMESPACE, root_namespace, still_open
from hub.payloads import UPDATE_SESSION, TokenBucket, check_event_size, handle_event
from hub.registry.agents import Agent, AgentDirectory, create_agent_directory
from hub.registry.base import TabJoin
from hub.rooms import agents_room, session_room, tab_room
from hub.settings import Limits
from hub.store.base import Project
from hub.tokens import AgentTokens
from hub.tracker import ERROR_EVENT, TrackerHooks, TrackerTab, error_code, tracker_role
from hub.typedefs import AGENT_TOKENS, METRICS, REGISTRY, SETTINGS, STORE

log = logging.getLogger(__name__)

NEW_AGENT = "NEW_AGENT"
AGENT_DISCONNECTED = "AGENT_DISCONNECTED"
NO_AGENT = "NO_AGENT"
AGENTS_CONNECTED = "AGENTS_CONNECTED"
AGENTS_INFO_CONNECTED = "AGENTS_INFO_CONNECTED"
SESSION_DISCONNECTED = "SESSION_DISCONNECTED"
SESSION_RECONNECTED = "SESSION_RECONNECTED"
_RESERVED_EVENTS = frozenset({"connect", "disconnect"})


class TabNotConnected(NotFound):
    """An agent event has no tab to go to."""

    code = "tab_not_connected"


@dataclass(frozen=True)
class AgentHandshake:
    """A validated agent connection query."""

    project_key: str
    session_id: str
    info: dict[str, Any]


@dataclass(eq=False)
class AgentConnection:
    """One connected agent."""

    sid: str
    project_key: str
    session_id: str
    info: dict[str, Any]
    limiter: TokenBucket
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # its events in arrival order

    @property
    def peer_id(self) -> str:
        return f"{self.project_key}-{self.session_id}"


def parse_agent_handshake(query: Mapping[str, str], limits: Limits) -> AgentHandshake:
    """Validate ``peerId=<projectKey>-<sessionID>`` and ``agentInfo`` (InvalidInput naming it)."""
    peer_id = query.get("peerId", "")
    if not peer_id:
        raise InvalidInput("peerId is required", "peerId")
    project_key, _, session_id = peer_id.partition("-")
    if not PROJECT_KEY_PATTERN.match(project_key):
        raise ProjectNotFound("unknown project key")
    if not session_id:
        raise InvalidInput(
            "sessionID is missing: peerId must be <projectKey>-<sessionID>", "peerId"
        )
    if not ID_PATTERN.match(session_id):
        raise InvalidInput(f"bad sessionID: it must be {ID_RULE}", "sessionID")
    return AgentHandshake(project_key, session_id, parse_agent_info(query.get("agentInfo"), limits))


def parse_agent_info(raw: str | None, limits: Limits) -> dict[str, Any]:
    """``agentInfo``: a JSON object (within the sessionInfo size limit) with a non-empty ``id``."""
    if not raw:
        raise InvalidInput("agentInfo is required: a JSON object with an id", "agentInfo")
    info = parse_json_object_param(raw, "agentInfo", limits)
    agent_id = info.get("id")
    if isinstance(agent_id, bool) or not isinstance(agent_id, str | int) or agent_id == "":
        raise InvalidInput("agentInfo.id must be a non-empty string or an integer", "agentInfo.id")
    return info


def _named_tab(payload: Any) -> str | None:
    """The tabId in ``payload.meta.tabId``, or None when the payload names none."""
    meta = payload.get("meta") if isinstance(payload, dict) else None
    tab_id = meta.get("tabId") if isinstance(meta, dict) else None
    if tab_id is None:
        return None
    if not isinstance(tab_id, str):
        raise InvalidInput("meta.tabId must be a string", "meta.tabId")
    return tab_id


class AgentRole:
    """Agents: the handshake and its credentials, the relay to the tabs, the room events."""

    def __init__(self, app: web.Application, sio: socketio.AsyncServer) -> None:
        self.app = app
        self.sio = sio
        self.tokens = AgentTokens(lambda: app[STORE].jwt_secret())
        self.agents: dict[str, AgentConnection] = {}
        self._directory: AgentDirectory | None = None
        self._projects: dict[str, Project] = {}  # projects are never deleted: a hit is kept
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def directory(self) -> AgentDirectory:
        if self._directory is None:
            raise RuntimeError("the agent directory is not started")
        return self._directory

    async def resources(self, app: web.Application) -> AsyncIterator[None]:
        """Cleanup context: the agent directory."""
        directory = create_agent_directory(app[SETTINGS])
        await directory.start()
        self._directory = directory
        yield
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._directory = None
        await directory.close()

    # -- connect -------------------------------------------------------------------------------

    async def connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        try:
            await self._connect(sid, environ, auth)
        except socketio.exceptions.ConnectionRefusedError:
            raise
        except (InvalidInput, NotFound, Unauthorized, Forbidden) as e:
            raise socketio.exceptions.ConnectionRefusedError(str(e)) from e
        except HubError as e:
            self.app[METRICS].failed(e)
            log.warning("refused an agent: %s", e)
            raise socketio.exceptions.ConnectionRefusedError(
                "the hub cannot take agents right now, retry later"
            ) from e
        except Exception as e:
            log.exception("agent connect failed")
            raise socketio.exceptions.ConnectionRefusedError("internal error") from e

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        limits = self.app[SETTINGS].limits
        handshake = parse_agent_handshake(parse_query(environ.get("QUERY_STRING", "")), limits)
        await self._authorize(handshake, auth)
        conn = AgentConnection(
            sid=sid,
            project_key=handshake.project_key,
            session_id=handshake.session_id,
            info=handshake.info,
            limiter=TokenBucket(limits.events_per_second, limits.event_burst),
        )
        if not still_open(self.sio, sid):
            raise socketio.exceptions.ConnectionRefusedError("the connection closed while joining")
        await self.directory.add(conn.project_key, conn.session_id, Agent(sid, conn.info))
        if not still_open(self.sio, sid):
            # python-socketio reports no disconnect for a connection never completed.
            await self.directory.remove(conn.project_key, conn.session_id, sid)
            raise socketio.exceptions.ConnectionRefusedError("the connection closed while joining")
        await self.sio.enter_room(
            sid, session_room(conn.project_key, conn.session_id), namespace=NAMESPACE
        )
        await self.sio.enter_room(
            sid, agents_room(conn.project_key, conn.session_id), namespace=NAMESPACE
        )
        self.agents[sid] = conn
        self._when_connected(sid, lambda: self._announce(conn))

    async def _authorize(self, handshake: AgentHandshake, auth: Any) -> Project:
        """Check the credentials in the same order as the Assist API: 401, 404, then 403."""
        if not isinstance(auth, dict):
            raise Unauthorized('auth is required: {"token": …} or {"apiKey": …}')
        token, api_key = auth.get("token"), auth.get("apiKey")
        if isinstance(token, str) and token.strip():
            claims = await self.tokens.verify(token, handshake.project_key, handshake.session_id)
            project = await self._project(handshake.project_key)
            if claims.project_id != project.project_id:
                raise Forbidden("the token is for another project")
            return project
        if isinstance(api_key, str) and api_key.strip():
            key = await self.app[STORE].authenticate(api_key.strip())
            if key is None:
                raise Unauthorized("invalid or revoked API key")
            project = await self._project(handshake.project_key)
            if not key.covers(project.project_id):
                raise Forbidden("this API key does not cover this project")
            return project
        raise Unauthorized('auth must hold a "token" or an "apiKey" (non-empty strings)')

    async def _project(self, project_key: str) -> Project:
        project = self._projects.get(project_key)
        if project is None:
            project = await self.app[STORE].project_by_key(project_key)
            if project is None:
                raise ProjectNotFound("unknown project key")
            self._projects[project_key] = project
        return project

    async def _announce(self, conn: AgentConnection) -> None:
        pk, session_id = conn.project_key, conn.session_id
        await self.sio.emit(
            NEW_AGENT,
            (conn.sid, conn.info),
            room=session_room(pk, session_id),
            skip_sid=conn.sid,
            namespace=NAMESPACE,
        )
        # After entering the agents' room: either this read sees a tab, and that tab's leaving
        # will reach the room, or it sees none.
        if not await self.app[REGISTRY].tabs(pk, session_id):
            await self.sio.emit(
                SESSION_DISCONNECTED,
                conn.peer_id,
                to=conn.sid,
                namespace=NAMESPACE,
                ignore_queue=True,  # the agent is on this node
            )

    def _when_connected(self, sid: str, then: Callable[[], Awaitable[None]]) -> None:
        """Run ``then`` once python-socketio has sent CONNECT, so its emits come after it."""

        async def run() -> None:
            for _ in range(100):  # CONNECT goes out within a few turns of the loop
                if self.sio.manager.is_connected(sid, NAMESPACE):
                    break
                await asyncio.sleep(0)
            else:
                return
            if sid in self.agents:
                try:
                    await then()
                except Exception:
                    log.exception("announcing agent %s failed", sid)

        self._spawn(run())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- events --------------------------------------------------------------------------------

    async def event(self, sid: str, event: str, args: tuple[Any, ...]) -> dict[str, Any]:
        conn = self.agents.get(sid)
        if conn is None:
            return {"ok": False, "error": {"code": "not_connected", "message": "not connected"}}
        return await handle_event(
            conn.limiter,
            conn.lock,
            lambda: self._forward(conn, event, args),
            lambda error: self._refuse(conn, event, error),
            f"agent event {event!r}",
        )

    async def _forward(self, conn: AgentConnection, event: str, args: tuple[Any, ...]) -> None:
        if event in _RESERVED_EVENTS:
            raise InvalidInput(f"{event!r} is a reserved event name")
        check_event_size(args, self.app[SETTINGS].limits)
        payload = args[0] if args else None
        tab_id = _named_tab(payload)
        tabs = await self.app[REGISTRY].tabs(conn.project_key, conn.session_id)
        if tab_id is None:
            if not tabs:
                raise TabNotConnected("the session has no tab connected")
            tab_id = tabs[0]
        elif tab_id not in tabs:
            raise TabNotConnected(f"tab {tab_id[:128]} of this session is not connected")
        await self.sio.emit(
            event,
            (conn.sid, payload),
            room=tab_room(conn.project_key, conn.session_id, tab_id),
            namespace=NAMESPACE,
        )

    async def _refuse(self, conn: AgentConnection, event: str, error: HubError) -> dict[str, Any]:
        code = error.code if isinstance(error, TabNotConnected) else error_code(error)
        body = {"code": code, "message": str(error) or code, "event": event}
        try:
            await self.sio.emit(
                ERROR_EVENT, body, to=conn.sid, namespace=NAMESPACE, ignore_queue=True
            )
            self.app[METRICS].event_out(ERROR_EVENT, code)
        except Exception:
            log.warning("could not send ERROR to %s", conn.sid, exc_info=True)
        self.app[METRICS].failed(error)
        return {"ok": False, "error": body}

    # -- disconnect ----------------------------------------------------------------------------

    async def disconnect(self, sid: str, reason: str) -> None:
        conn = self.agents.pop(sid, None)
        if conn is None:
            return
        pk, session_id = conn.project_key, conn.session_id
        async with conn.lock:  # after the events under way
            try:
                remaining: list[Agent] | None = await self.directory.remove(pk, session_id, sid)
            except Exception:
                log.exception("could not unlist agent %s", sid)
                remaining = None
            try:
                room = session_room(pk, session_id)
                await self.sio.emit(
                    AGENT_DISCONNECTED, sid, room=room, skip_sid=sid, namespace=NAMESPACE
                )
                if remaining == []:
                    # Only tabs are left in the room (and agents joining this very moment).
                    await self.sio.emit(
                        NO_AGENT, None, room=room, skip_sid=sid, namespace=NAMESPACE
                    )
            except Exception:
                log.exception("announcing agent %s leaving failed", sid)


class AgentHooks(TrackerHooks):
    """The tab side of the relay, run by the tracker role on the tab's node."""

    def __init__(self, role: AgentRole) -> None:
        self.role = role

    async def tab_joined(self, tab: TrackerTab, join: TabJoin) -> None:
        agents = await self.role.directory.agents(tab.project_key, tab.session_id)
        if not agents:
            return
        sio = self.role.sio
        await sio.emit(
            AGENTS_CONNECTED,
            [agent.sid for agent in agents],
            to=tab.sid,
            namespace=NAMESPACE,
            ignore_queue=True,
        )
        await sio.emit(
            AGENTS_INFO_CONNECTED,
            [agent.info for agent in agents],
            to=tab.sid,
            namespace=NAMESPACE,
            ignore_queue=True,
        )
        if join.reconnected or join.started:
            # The session had no tab: its agents were told SESSION_DISCONNECTED.
            await sio.emit(
                SESSION_RECONNECTED,
                f"{tab.project_key}-{tab.session_id}",
                room=agents_room(tab.project_key, tab.session_id),
                namespace=NAMESPACE,
            )

    async def tab_left(self, tab: TrackerTab, last: bool) -> None:
        if last and await self.role.directory.has_agents(tab.project_key, tab.session_id):
            await self.role.sio.emit(
                SESSION_DISCONNECTED,
                f"{tab.project_key}-{tab.session_id}",
                room=agents_room(tab.project_key, tab.session_id),
                namespace=NAMESPACE,
            )

    async def relay(self, tab: TrackerTab, event: str, payload: Any) -> None:
        if not await self.role.directory.has_agents(tab.project_key, tab.session_id):
            return  # nobody watches: nothing crosses Redis
        if event == UPDATE_SESSION:
            payload = {"meta": {"tabId": tab.tab_id, "version": 1}, "data": _update_data(payload)}
        await self.role.sio.emit(
            event,
            payload,
            room=agents_room(tab.project_key, tab.session_id),
            namespace=NAMESPACE,
        )


def _update_data(payload: Any) -> Any:
    """The changes of an UPDATE_SESSION, unwrapped from OpenReplay's ``{meta, data}`` form."""
    if (
        isinstance(payload, dict)
        and set(payload) <= {"meta", "data"}
        and isinstance(payload.get("data"), dict)
    ):
        return payload["data"]
    return payload


def agent_role(sio: socketio.AsyncServer) -> AgentRole:
    """The agent role ``register`` put on ``sio``."""
    role = root_namespace(sio).role("agent")
    assert isinstance(role, AgentRole)
    return role


def register(app: web.Application, sio: socketio.AsyncServer) -> None:
    """Add the agent role to ``/`` and plug it into the tracker; after tracker.register."""
    role = AgentRole(app, sio)
    root_namespace(sio).add_role("agent", role)
    tracker_role(sio).hooks = AgentHooks(role)
    app[AGENT_TOKENS] = role.tokens
    app.cleanup_ctx.append(role.resources)
