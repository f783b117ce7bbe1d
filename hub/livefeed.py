"""The live feed for subscribers (dashboards), SPEC §4.5: the Socket.IO namespace ``/live``.

A subscriber names a project and Assist filters; it gets a snapshot of the live sessions that match
(``SESSIONS``) and then every change to that set, in order. docs/protocol.md ("Live feed") is the
protocol; docs/architecture.md ("Cross-node fan-out") says why every node serves its own.

How no change is missed or repeated: subscribers with the same project and filters share a group
(one Socket.IO room on this node). The registry's listener puts each change of a project that has
a group on one queue, synchronously, as the registry applies it to its index. A snapshot is taken
from that index and its delivery put on the same queue with no ``await`` in between, so every
change the snapshot reflects is ahead of it in the queue and every later one behind it. One task
drains the queue: it keeps each group's set of matching sessions, tests a changed record against
each group's filters once, emits once per group, and sends snapshots and moves subscribers between
rooms. It is the only sender of feed events, so each subscriber gets them in queue order.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sys
from collections.abc import AsyncIterator, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

import socketio
from aiohttp import web

from hub.errors import Forbidden, HubError, InvalidInput, ProjectNotFound, Unauthorized, Unavailable
from hub.handshake import PROJECT_KEY_PATTERN
from hub.logs import bind_connection
from hub.query import parse_filters
from hub.records import Record
from hub.registry.base import Change, Filter, PresenceRegistry, SessionQuery
from hub.registry.match import FilterKey, RecordMatcher, filters_key
from hub.store.base import ApiKey, Project
from hub.typedefs import METRICS, REGISTRY, STORE
from hub.websocket import deliver

log = logging.getLogger(__name__)

NAMESPACE = "/live"
SNAPSHOT_LIMIT = 1000  # sessions a SESSIONS snapshot lists at most (SPEC §4.5)

SESSIONS = "SESSIONS"
STARTED = "SESSION_STARTED"
UPDATED = "SESSION_UPDATED"
ENDED = "SESSION_ENDED"
SUBSCRIBE = "SUBSCRIBE"
ERROR = "ERROR"
ROLE = "subscriber"  # the role label of the metrics

# A group's first snapshot reads every matching session (to know the whole set, not only the
# first page): the index takes any positive limit.
_EVERY = sys.maxsize
_CONNECT_TURNS = 100  # loop turns to wait for python-socketio to send CONNECT (see _after_connect)

GroupKey = tuple[str, tuple[FilterKey, ...]]


@dataclass(eq=False)
class _Group:
    """The subscribers of one (project, filters) on this node, and the sessions in their set."""

    key: GroupKey
    project_key: str
    matches: RecordMatcher
    room: str
    holds: int = 0  # subscriptions and subscription requests that keep it
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # its first snapshot is taken
    failed: bool = False  # its first snapshot could not be taken: it is gone
    members: set[str] | None = None  # sessionIDs in the set; None until the drainer installs it


@dataclass(eq=False)
class _Snapshot:
    """A snapshot on its way to a subscriber through the queue, after the changes it reflects."""

    subscriber: _Subscriber
    group: _Group
    members: set[str] | None  # the group's first snapshot installs its set
    total: int
    sessions: list[Record]
    sent: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class _Subscriber:
    sid: str
    api_key: str  # checked again at each SUBSCRIBE, so a revoked key cannot subscribe again
    project_key: str
    requests: int = 0  # subscription requests made (connect, SUBSCRIBE), in arrival order
    applied: int = 0  # the number of the request now in force
    group: _Group | None = None  # the group of the subscription in force
    snapshot: _Snapshot | None = None  # its snapshot (the only one the drainer delivers)
    room: str | None = None  # the room the drainer put it in
    closed: bool = False


class LiveFeed(socketio.AsyncNamespace):  # type: ignore[misc]
    """The ``/live`` namespace of one node: subscribers, their groups, and the queue's drainer."""

    def __init__(self, app: web.Application) -> None:
        super().__init__(NAMESPACE)
        self.app = app
        self._subscribers: dict[str, _Subscriber] = {}
        self._groups: dict[GroupKey, _Group] = {}
        self._by_project: dict[str, dict[GroupKey, _Group]] = {}
        self._queue: asyncio.Queue[Change | _Snapshot] = asyncio.Queue()
        self._room_numbers = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle -----------------------------------------------------------------------------

    async def running(self, app: web.Application) -> AsyncIterator[None]:
        """Cleanup context: listen to the registry and drain the queue until shutdown."""
        stop = app[REGISTRY].listen(self._on_change)
        drainer = asyncio.create_task(self._drain(), name="live feed drainer")
        yield
        stop()
        for task in [drainer, *self._tasks]:
            task.cancel()
        for task in [drainer, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while not self._queue.empty():  # no SUBSCRIBE waits for a snapshot never to be sent
            item = self._queue.get_nowait()
            if isinstance(item, _Snapshot):
                item.sent.set()

    def _on_change(self, change: Change) -> None:
        # Called by the registry as it applies each change; only projects with a group matter.
        if change.project_key in self._by_project:
            self._queue.put_nowait(change)

    # -- Socket.IO -----------------------------------------------------------------------------

    async def trigger_event(self, event: str, *args: Any) -> Any:
        sid = args[0]
        with bind_connection(sid):  # every log line of the handlers carries the sid
            if not self.server.manager.is_connected(sid, NAMESPACE):
                # An EVENT packet named "connect" from a connected client is not a connect.
                if event == "connect":
                    return await self._connect(sid, args[2] if len(args) > 2 else None)
                if event == "disconnect":
                    return self._disconnect(sid)
            subscriber = self._subscribers.get(sid)
            if subscriber is None:
                return None
            self.app[METRICS].event_in(ROLE, event)
            if event == SUBSCRIBE:
                return await self._resubscribe(subscriber, args[1] if len(args) > 1 else None)
            error = InvalidInput(f"unknown event {event[:64]!r}: /live takes SUBSCRIBE only")
            return await self._refuse(subscriber, event, error, "unknown_event")

    async def _connect(self, sid: str, auth: Any) -> None:
        metrics = self.app[METRICS]
        auth = auth if isinstance(auth, dict) else {}
        secret = auth.get("apiKey")
        try:
            project, filters = await self._authorize(
                secret, auth.get("projectKey"), auth.get("filters")
            )
        except Exception as e:
            metrics.refused_connection(ROLE)
            if isinstance(e, InvalidInput | Unauthorized | Forbidden | ProjectNotFound):
                raise socketio.exceptions.ConnectionRefusedError(str(e)) from e
            if isinstance(e, HubError):
                log.warning("refused a subscriber: %s", e)
                reason = "the hub cannot take subscribers right now, retry later"
            else:
                log.exception("subscriber connect failed")
                reason = "internal error"
            raise socketio.exceptions.ConnectionRefusedError(reason) from e
        assert isinstance(secret, str)
        subscriber = _Subscriber(sid, secret, project.project_key, requests=1)
        self._subscribers[sid] = subscriber
        metrics.connected(ROLE)
        self._spawn(self._after_connect(subscriber, project, filters))

    async def _after_connect(
        self, subscriber: _Subscriber, project: Project, filters: tuple[Filter, ...]
    ) -> None:
        # python-socketio sends CONNECT right after the connect handler returns, with no real
        # wait; a snapshot sent before it would be dropped by the client.
        for _ in range(_CONNECT_TURNS):
            if self.server.manager.is_connected(subscriber.sid, NAMESPACE):
                break
            await asyncio.sleep(0)
        else:
            self._disconnect(subscriber.sid)  # gone before it was connected
            return
        try:
            await self._subscribe(subscriber, 1, project.project_key, filters)
        except Exception as e:
            await self._refuse(subscriber, SUBSCRIBE, e)

    async def _resubscribe(self, subscriber: _Subscriber, payload: Any) -> dict[str, Any]:
        """SUBSCRIBE: a new subscription replaces the one in force once its snapshot is taken."""
        subscriber.requests += 1
        number = subscriber.requests
        try:
            if not isinstance(payload, dict):
                raise InvalidInput('SUBSCRIBE takes an object {"projectKey", "filters"}')
            project_key = payload.get("projectKey")
            if project_key is None:  # absent or null: the subscription's project
                project_key = subscriber.project_key
            project, filters = await self._authorize(
                subscriber.api_key, project_key, payload.get("filters")
            )
            snapshot = await self._subscribe(subscriber, number, project.project_key, filters)
        except Exception as e:
            return await self._refuse(subscriber, SUBSCRIBE, e)
        if snapshot is not None:
            # Answered once the snapshot is out, so a client awaiting the ack has it.
            await snapshot.sent.wait()
        return {"ok": True}

    def _disconnect(self, sid: str) -> None:
        subscriber = self._subscribers.pop(sid, None)
        if subscriber is None:
            return
        subscriber.closed = True
        self.app[METRICS].disconnected(ROLE)
        if subscriber.group is not None:
            self._release(subscriber.group)
            subscriber.group = None

    async def _authorize(
        self, secret: Any, project_key: Any, raw_filters: Any
    ) -> tuple[Project, tuple[Filter, ...]]:
        """The key, then the project, then the key's right to it, then the filters (as REST)."""
        store = self.app[STORE]
        key: ApiKey | None = None
        if isinstance(secret, str) and secret:
            key = await store.authenticate(secret)
        if key is None:
            raise Unauthorized("invalid or missing API key")
        if project_key is None or project_key == "":
            raise InvalidInput("projectKey is required", "projectKey")
        if not isinstance(project_key, str):
            raise InvalidInput("projectKey must be a string", "projectKey")
        project = None
        if PROJECT_KEY_PATTERN.match(project_key):
            project = await store.project_by_key(project_key)
        if project is None:
            raise ProjectNotFound("unknown project key")
        if not key.covers(project.project_id):
            raise Forbidden("this API key does not cover this project")
        return project, parse_filters(raw_filters, path="filters")

    async def _refuse(
        self, subscriber: _Subscriber, event: str, error: Exception, code: str | None = None
    ) -> dict[str, Any]:
        """Tell the subscriber with ERROR; the returned value is the ack's answer."""
        if not isinstance(error, HubError):
            log.error("subscription failed", exc_info=error)
            error = HubError("internal error")
        elif isinstance(error, Unavailable):
            log.warning("subscription failed: %s", error)
        if code is None:
            code = "invalid_payload" if isinstance(error, InvalidInput) else error.code
        body = {"code": code, "message": str(error) or code, "event": event}
        with contextlib.suppress(Exception):  # a connection already gone has nobody to tell
            await self.server.emit(
                ERROR, body, to=subscriber.sid, namespace=NAMESPACE, ignore_queue=True
            )
        self.app[METRICS].event_out(ERROR, code)
        return {"ok": False, "error": body}

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- subscriptions ---------------------------------------------------------------------------

    async def _subscribe(
        self, subscriber: _Subscriber, number: int, project_key: str, filters: tuple[Filter, ...]
    ) -> _Snapshot | None:
        """Take a snapshot for request ``number`` and queue it; None when a later one won."""
        registry: PresenceRegistry = self.app[REGISTRY]
        key: GroupKey = (project_key, filters_key(filters))
        while True:
            group = self._groups.get(key)
            creating = group is None
            if group is None:
                group = self._add_group(key, project_key, filters)
            group.holds += 1
            try:
                if creating:
                    query = SessionQuery(filters=filters, limit=_EVERY)
                else:
                    await group.ready.wait()
                    if group.failed:
                        self._release(group)
                        continue
                    query = SessionQuery(filters=filters, limit=SNAPSHOT_LIMIT)
                result = await registry.query(project_key, query)
            except BaseException:
                self._release(group)
                if creating:
                    self._fail(group)
                raise
            # From here to the queue, nothing awaits: the snapshot sits in the queue right behind
            # the changes it reflects.
            members = {str(r["sessionID"]) for r in result.sessions} if creating else None
            snapshot = _Snapshot(
                subscriber, group, members, result.total, result.sessions[:SNAPSHOT_LIMIT]
            )
            group.ready.set()
            if subscriber.closed or number < subscriber.applied:
                self._release(group)
                if creating:
                    self._queue.put_nowait(snapshot)  # installs the set for the group's others
                return None
            previous = subscriber.group
            subscriber.group, subscriber.snapshot = group, snapshot
            subscriber.applied, subscriber.project_key = number, project_key
            if previous is not None:
                self._release(previous)
            self._queue.put_nowait(snapshot)
            return snapshot

    def _add_group(self, key: GroupKey, project_key: str, filters: tuple[Filter, ...]) -> _Group:
        group = _Group(
            key=key,
            project_key=project_key,
            matches=RecordMatcher(filters),
            room=f"live:{next(self._room_numbers)}",
        )
        self._groups[key] = group
        self._by_project.setdefault(project_key, {})[key] = group
        return group

    def _release(self, group: _Group) -> None:
        group.holds -= 1
        if group.holds <= 0:
            self._drop(group)

    def _fail(self, group: _Group) -> None:
        group.failed = True
        group.ready.set()
        self._drop(group)

    def _drop(self, group: _Group) -> None:
        if self._groups.get(group.key) is not group:
            return
        del self._groups[group.key]
        project = self._by_project[group.project_key]
        del project[group.key]
        if not project:
            del self._by_project[group.project_key]

    # -- the drainer -----------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Apply queued changes and deliver queued snapshots, one at a time, in order."""
        while True:
            item = await self._queue.get()
            try:
                if isinstance(item, _Snapshot):
                    await self._deliver(item)
                else:
                    self._fan_out(item)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the live feed failed on %r; going on", item)
            finally:
                if isinstance(item, _Snapshot):
                    item.sent.set()

    async def _deliver(self, snapshot: _Snapshot) -> None:
        group, subscriber = snapshot.group, snapshot.subscriber
        if snapshot.members is not None and self._groups.get(group.key) is group:
            group.members = snapshot.members
        sid = subscriber.sid
        if subscriber.snapshot is not snapshot or subscriber.closed:
            return  # replaced by a later SUBSCRIBE, or gone
        if not self.server.manager.is_connected(sid, NAMESPACE):
            return
        if subscriber.room is not None and subscriber.room != group.room:
            await self.server.leave_room(sid, subscriber.room, namespace=NAMESPACE)
        subscriber.room = group.room
        await self.server.enter_room(sid, group.room, namespace=NAMESPACE)
        # Every client is alone in the room named by its sid. Queued the way changes are, so
        # the changes behind it in the drainer's queue reach the client behind it.
        body = {"total": snapshot.total, "sessions": snapshot.sessions}
        self._send(SESSIONS, body, [sid])

    def _fan_out(self, change: Change) -> None:
        """Move the session in or out of each group's set; one packet per event, to every room."""
        groups = self._by_project.get(change.project_key)
        if not groups:
            return
        sid = change.session_id
        record = change.record
        rooms: dict[str, list[str]] = {STARTED: [], UPDATED: [], "ended": [], "filtered": []}
        for group in groups.values():
            members = group.members
            if members is None:
                continue  # its first snapshot, queued behind this change, reflects it
            if record is not None and change.kind != "ended" and group.matches(record):
                if sid in members:
                    rooms[UPDATED].append(group.room)
                else:
                    members.add(sid)
                    rooms[STARTED].append(group.room)
            elif sid in members:
                members.discard(sid)
                rooms["ended" if change.kind == "ended" else "filtered"].append(group.room)
        for event in (STARTED, UPDATED):
            if rooms[event]:
                self._send(event, record, rooms[event])
        for reason in ("ended", "filtered"):
            if rooms[reason]:
                body = {"sessionID": sid, "projectKey": change.project_key, "reason": reason}
                self._send(ENDED, body, rooms[reason])

    def _send(self, event: str, body: Any, rooms: list[str]) -> None:
        """Send one event to every subscriber in ``rooms`` on this node, encoded once.

        Local only: every node serves its own subscribers from its own replica of the registry,
        so this must never go through the Redis manager (docs/architecture.md, "Cross-node
        fan-out"). It does what ``emit(..., ignore_queue=True)`` does, less the task and the two
        coroutine calls python-socketio spends per recipient. A websocket with nothing queued
        gets the frame, built once, straight into its outgoing buffer (hub/websocket.py); any
        other connection gets the packet through its queue, as python-engineio's send does.
        """
        deliver(self.server, NAMESPACE, [event, body], self._participants(rooms))

    def _participants(self, rooms: list[str]) -> Iterable[str]:
        """The Engine.IO sids of the clients in ``rooms`` on this node, each once.

        What ``manager.get_participants`` gives, read from the manager's room table without its
        copy of every room and its generator. Each room maps sid → Engine.IO sid both ways (a
        bidict); its inverse's keys are the Engine.IO sids. The caller walks them with no
        ``await``, and nothing it calls enters or leaves a room, so the table cannot change under
        it.
        """
        table = self.server.manager.rooms.get(NAMESPACE)
        if not table:
            return ()
        if len(rooms) == 1:
            room = table.get(rooms[0])
            return () if room is None else room.inverse.keys()
        # A subscriber is in one group's room only; still, nobody gets an event twice.
        merged: dict[str, None] = {}
        for name in rooms:
            room = table.get(name)
            if room is not None:
                merged.update(dict.fromkeys(room.inverse.keys()))
        return merged.keys()


def register(app: web.Application, sio: socketio.AsyncServer) -> LiveFeed:
    """Put the ``/live`` namespace on ``sio`` and its drainer in ``app``; called by create_app."""
    feed = LiveFeed(app)
    sio.register_namespace(feed)
    app.cleanup_ctx.append(feed.running)
    return feed
