"""The tracker side of the Socket.IO protocol (SPEC §4.1 to §4.3) on the default namespace ``/``.

Trackers (``identity=session``) and agents (``identity=agent``) share ``/``
(:mod:`hub.namespace`). This module registers the tracker role; the assist relay (hub/agent.py)
plugs in with ``root_namespace(sio).add_role("agent", ...)`` and ``tracker_role(sio).hooks``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import socketio
from aiohttp import web

from hub.errors import (
    HubError,
    InvalidInput,
    ProjectNotFound,
    RateLimited,
    SessionDataTooLarge,
    SessionNotFound,
    TabAlreadyConnected,
    TooLarge,
    Unavailable,
)
from hub.geo import GeoInfo, GeoLocator, client_address
from hub.handshake import build_record, parse_handshake, parse_query
from hub.namespace import NAMESPACE, RootNamespace, root_namespace, still_open
from hub.payloads import (
    SESSION_MESSAGE,
    UPDATE_SESSION,
    TokenBucket,
    check_event_size,
    check_merged_metadata,
    handle_event,
    validate_message,
    validate_update,
)
from hub.registry.base import TabJoin
from hub.rooms import session_room, tab_room
from hub.settings import Limits
from hub.store.base import Project
from hub.typedefs import METRICS, REGISTRY, SETTINGS, STORE
from hub.useragent import UserAgentParser

log = logging.getLogger(__name__)

ERROR_EVENT = "ERROR"
ALREADY_CONNECTED_EVENT = "SESSION_ALREADY_CONNECTED"
# A tab's leave that the registry could not take is retried, 0.1 s doubling to 5 s.
LEAVE_RETRY_FIRST = 0.1
LEAVE_RETRY_MAX = 5.0
# A client can send an EVENT packet named like these; python-socketio would hand it to the
# connect or disconnect handler, so they are recognised and refused as events.
_RESERVED_EVENTS = frozenset({"connect", "disconnect"})


def now_ms() -> int:
    """The wall time in milliseconds since the epoch."""
    return int(time.time() * 1000)


@dataclass(eq=False, slots=True)
class TrackerTab:
    """One connected tracker: a tab of a live session (slots: one is kept per connection)."""

    sid: str
    project_key: str
    project_id: int
    session_id: str
    tab_id: str
    limiter: TokenBucket
    # Events of one connection are handled in order (python-socketio runs each in its own task).
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    duplicate: bool = False  # its tabId was connected already: it is being turned away

    @property
    def room(self) -> str:
        return session_room(self.project_key, self.session_id)


class TrackerHooks:
    """The seam of the assist relay (hub/agent.py); this default does nothing.

    ``tab_joined`` runs once the tracker is connected; ``tab_left`` after the registry let the tab
    go (``last``: the session has no tab left); ``relay`` for every accepted event, with the
    payload as kept (a SESSION_MESSAGE with its timestamp).
    """

    async def tab_joined(self, tab: TrackerTab, join: TabJoin) -> None:
        return None

    async def tab_left(self, tab: TrackerTab, last: bool) -> None:
        return None

    async def relay(self, tab: TrackerTab, event: str, payload: Any) -> None:
        return None


class TrackerRole:
    """Trackers: the handshake, the events, the end of a tab."""

    def __init__(self, app: web.Application, sio: socketio.AsyncServer) -> None:
        self.app = app
        self.sio = sio
        self.hooks = TrackerHooks()
        self.tabs: dict[str, TrackerTab] = {}
        self.geo: GeoLocator | None = None
        self._user_agents: UserAgentParser | None = None
        # Projects are never deleted, so a found one is kept; a miss is asked again next time.
        self._projects: dict[str, Project] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def resources(self, app: web.Application) -> AsyncIterator[None]:
        """Cleanup context: the GeoIP database, opened once."""
        path = app[SETTINGS].geoip_db
        self.geo = GeoLocator(path) if path else None
        yield
        geo, self.geo = self.geo, None
        if geo is not None:
            geo.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        # Each task handles its own errors; gathering only waits for the cancellations.
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- connect -------------------------------------------------------------------------------

    async def connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        try:
            await self._connect(sid, environ)
        except socketio.exceptions.ConnectionRefusedError:
            raise
        except (InvalidInput, ProjectNotFound) as e:
            raise socketio.exceptions.ConnectionRefusedError(str(e)) from e
        except HubError as e:
            log.warning("refused a tracker: %s", e)
            self.app[METRICS].failed(e)
            raise socketio.exceptions.ConnectionRefusedError(
                "the hub cannot take sessions right now, retry later"
            ) from e
        except Exception as e:
            log.exception("tracker connect failed")
            raise socketio.exceptions.ConnectionRefusedError("internal error") from e

    async def _connect(self, sid: str, environ: dict[str, Any]) -> None:
        settings = self.app[SETTINGS]
        handshake = parse_handshake(parse_query(environ.get("QUERY_STRING", "")), settings.limits)
        project = await self._project(handshake.project_key)
        request = environ.get("aiohttp.request")
        address = client_address(
            request.remote if request is not None else None,
            environ.get("HTTP_X_FORWARDED_FOR"),
            settings.trusted_proxies,
        )
        geo = self.geo.locate(address) if self.geo is not None else GeoInfo()
        if self._user_agents is None:
            self._user_agents = UserAgentParser()
        agent = self._user_agents.parse(environ.get("HTTP_USER_AGENT"))
        record = build_record(handshake, project.project_id, now_ms(), agent, geo)
        tab = TrackerTab(
            sid=sid,
            project_key=handshake.project_key,
            project_id=project.project_id,
            session_id=handshake.session_id,
            tab_id=handshake.tab_id,
            limiter=TokenBucket(settings.limits.events_per_second, settings.limits.event_burst),
        )
        if not still_open(self.sio, sid):
            # Gone while its project was looked up: nothing to register.
            raise socketio.exceptions.ConnectionRefusedError("the connection closed while joining")
        registry = self.app[REGISTRY]
        try:
            join = await registry.join_tab(record, tab.tab_id)
        except TabAlreadyConnected:
            # SPEC §4.1: this one is told and sent away once connected; the first tab goes on.
            tab.duplicate = True
            self.tabs[sid] = tab
            self._when_connected(sid, lambda: self._turn_away(tab))
            return
        if not still_open(self.sio, sid):
            # The client left while it was joining: python-socketio would not report that
            # disconnect (the connection was not complete yet), so undo the join here.
            await registry.leave_tab(tab.project_key, tab.session_id, tab.tab_id)
            raise socketio.exceptions.ConnectionRefusedError("the connection closed while joining")
        await self.sio.enter_room(sid, tab.room, namespace=NAMESPACE)
        # The tab's own room, where agents address it (hub/agent.py): entered right after the
        # registry lists the tab, not in a hook that runs later.
        await self.sio.enter_room(
            sid, tab_room(tab.project_key, tab.session_id, tab.tab_id), namespace=NAMESPACE
        )
        self.tabs[sid] = tab
        self._when_connected(sid, lambda: self.hooks.tab_joined(tab, join))

    async def _project(self, project_key: str) -> Project:
        project = self._projects.get(project_key)
        if project is None:
            project = await self.app[STORE].project_by_key(project_key)
            if project is None:
                raise ProjectNotFound("unknown project key")
            self._projects[project_key] = project
        return project

    def _when_connected(self, sid: str, then: Callable[[], Awaitable[None]]) -> None:
        """Run ``then`` once python-socketio has sent CONNECT, so its emits come after it."""

        async def run() -> None:
            # CONNECT is sent right after the connect handler returns, with no real wait in
            # between; a few turns of the loop are plenty, and a refusal ends the wait.
            for _ in range(100):
                if self.sio.manager.is_connected(sid, NAMESPACE):
                    break
                await asyncio.sleep(0)
            else:
                return
            if sid in self.tabs:
                try:
                    await then()
                except Exception:
                    log.exception("tracker hook failed", extra={"sid": sid})

        self._spawn(run())

    async def _turn_away(self, tab: TrackerTab) -> None:
        await self.sio.emit(
            ALREADY_CONNECTED_EVENT,
            {
                "message": f"tab {tab.tab_id} of this session is connected already",
                "tabId": tab.tab_id,
            },
            to=tab.sid,
            namespace=NAMESPACE,
            ignore_queue=True,
        )
        self.app[METRICS].event_out(ALREADY_CONNECTED_EVENT)
        await self.sio.disconnect(tab.sid, namespace=NAMESPACE, ignore_queue=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- events --------------------------------------------------------------------------------

    async def event(self, sid: str, event: str, args: tuple[Any, ...]) -> dict[str, Any]:
        tab = self.tabs.get(sid)
        if tab is None or tab.duplicate:
            return {"ok": False, "error": {"code": "not_connected", "message": "not connected"}}
        return await handle_event(
            tab.limiter,
            tab.lock,
            lambda: self._accept(tab, event, args),
            lambda error: self._refuse(tab, event, error),
            f"tracker event {event!r}",
        )

    async def _accept(self, tab: TrackerTab, event: str, args: tuple[Any, ...]) -> None:
        limits = self.app[SETTINGS].limits
        if event in _RESERVED_EVENTS:
            raise InvalidInput(f"{event!r} is a reserved event name")
        check_event_size(args, limits)
        payload = args[0] if args else None
        registry = self.app[REGISTRY]
        if event == UPDATE_SESSION:
            update = validate_update(payload, limits)
            if "metadata" in update.changes:
                current = await registry.get(tab.project_key, tab.session_id)
                if current is not None:
                    check_merged_metadata(current["metadata"], update.changes["metadata"], limits)
            if update:
                await registry.update(
                    tab.project_key,
                    tab.session_id,
                    update.changes,
                    update.variables,
                    max_data_bytes=limits.session_data_bytes,
                )
        elif event == SESSION_MESSAGE:
            payload = validate_message(payload, now_ms)
            await registry.add_message(
                tab.project_key, tab.session_id, payload, limits.session_data_bytes
            )
        try:
            await self.hooks.relay(tab, event, payload)
        except Exception:
            # The event is accepted (and maybe stored) already: a failed relay is not its error.
            log.exception("relaying tracker event %r failed", event, extra={"sid": tab.sid})

    async def _refuse(self, tab: TrackerTab, event: str, error: HubError) -> dict[str, Any]:
        """Tell the tracker with ERROR; the returned value is the ack's answer."""
        body = {
            "code": error_code(error),
            "message": str(error) or error_code(error),
            "event": event,
        }
        try:
            await self.sio.emit(
                ERROR_EVENT, body, to=tab.sid, namespace=NAMESPACE, ignore_queue=True
            )
            self.app[METRICS].event_out(ERROR_EVENT, body["code"])
        except Exception:
            log.warning("could not send ERROR to %s", tab.sid, exc_info=True)
        self.app[METRICS].failed(error)
        return {"ok": False, "error": body}

    # -- disconnect ----------------------------------------------------------------------------

    async def disconnect(self, sid: str, reason: str) -> None:
        tab = self.tabs.pop(sid, None)
        if tab is None or tab.duplicate:
            return
        # After the events already under way, so their changes land before the tab goes.
        async with tab.lock:
            try:
                last = await self.app[REGISTRY].leave_tab(
                    tab.project_key, tab.session_id, tab.tab_id
                )
            except Unavailable:
                # Redis is away: a tab left registered would keep its session live for ever (and
                # be restored with it), so the leave is retried until Redis answers again.
                log.warning(
                    "could not let tab %s of session %s go yet; retrying",
                    tab.tab_id,
                    tab.session_id,
                    extra={"projectKey": tab.project_key},
                )
                self._spawn(self._leave_later(tab))
                return
            except Exception:
                log.exception(
                    "could not let tab %s of session %s go",
                    tab.tab_id,
                    tab.session_id,
                    extra={"projectKey": tab.project_key},
                )
                return
        await self._tab_left(tab, last)

    async def _leave_later(self, tab: TrackerTab) -> None:
        """Retry a tab's leave with capped backoff until the registry takes it."""
        delay = LEAVE_RETRY_FIRST
        while True:
            await asyncio.sleep(delay)
            try:
                last = await self.app[REGISTRY].leave_tab(
                    tab.project_key, tab.session_id, tab.tab_id
                )
            except Unavailable:
                delay = min(LEAVE_RETRY_MAX, delay * 2)
                continue
            except Exception:
                log.exception("could not let tab %s of session %s go", tab.tab_id, tab.session_id)
                return
            log.info("tab %s of session %s let go after a retry", tab.tab_id, tab.session_id)
            await self._tab_left(tab, last)
            return

    async def _tab_left(self, tab: TrackerTab, last: bool) -> None:
        try:
            await self.hooks.tab_left(tab, last)
        except Exception:
            log.exception("tracker hook failed", extra={"sid": tab.sid})


def error_code(error: HubError) -> str:
    """The ``code`` of an ERROR event for an exception."""
    if isinstance(error, SessionDataTooLarge):
        return "session_data_too_large"
    if isinstance(error, TooLarge):
        return "too_large"
    if isinstance(error, InvalidInput):
        return "invalid_payload"
    if isinstance(error, SessionNotFound):
        return "session_not_found"
    if isinstance(error, RateLimited | Unavailable):
        return error.code
    return "internal"


def tracker_role(sio: socketio.AsyncServer) -> TrackerRole:
    """The tracker role ``register`` put on ``sio`` (its ``hooks`` are the assist relay's seam)."""
    role = root_namespace(sio).role("session")
    assert isinstance(role, TrackerRole)
    return role


def register(app: web.Application, sio: socketio.AsyncServer) -> None:
    """Put the default namespace, with the tracker role, on ``sio``; called by create_app."""
    role = TrackerRole(app, sio)
    namespace = RootNamespace()
    namespace.metrics = app.get(METRICS)
    namespace.add_role("session", role)
    sio.register_namespace(namespace)
    app.cleanup_ctx.append(role.resources)


def request_line_bytes(limits: Limits) -> int:
    """The longest HTTP request line the server must read (aiohttp's default is 8190 bytes).

    A tracker's sessionInfo is in the query string of every Engine.IO request, percent-encoded:
    up to three characters a byte. Without room for it a sessionInfo within the limit would be
    cut off by aiohttp with a bare 400 before the handshake could answer.
    """
    return 8190 + 3 * limits.session_info_bytes
