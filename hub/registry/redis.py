"""The presence registry of a cluster: nodes sharing one Redis (docs/registry.md).

Every mutation is one Lua script (:mod:`hub.registry.redis_scripts`) that also appends the change
to the ``lh:changes`` stream; every node keeps a replica of the live sessions fed by that stream
(:mod:`hub.registry.redis_replica`) and answers queries from it after catching up, so a read on
one node sees a write made on another just before. Background loops on every node beat the node's
heartbeat, follow the stream, end the sessions whose grace passed and the tabs of nodes that went
silent, and drain ended sessions into the store (:mod:`hub.registry.redis_outbox`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from redis.exceptions import RedisError

from hub import constants as c
from hub.errors import (
    InvalidInput,
    RegistryUnavailable,
    SessionDataTooLarge,
    SessionNotFound,
    TabAlreadyConnected,
)
from hub.records import Record
from hub.registry.base import (
    Change,
    ChangeListener,
    EndedSink,
    QueryResult,
    SessionQuery,
    TabJoin,
)
from hub.registry.index import copy_record
from hub.registry.merge import copy_json, deep_merge, dumps_compact
from hub.registry.redis_batch import ScriptBatcher
from hub.registry.redis_conn import open_redis, stop_task
from hub.registry.redis_local import LocalSession, Membership, info_size
from hub.registry.redis_outbox import Outbox
from hub.registry.redis_replica import Replica
from hub.registry.redis_scripts import Scripts
from hub.settings import Settings

log = logging.getLogger(__name__)

REAP_INTERVAL = 0.25  # seconds between two looks for ended graces and silent nodes
DUE_BATCH = 200  # sessions ended by one script call (a full batch is followed by another at once)
MAX_BACKOFF = 5.0
UPDATE_ATTEMPTS = 100  # optimistic retries of one update under heavy contention
CLOSE_TIMEOUT = 10.0  # seconds close() keeps handing taken sessions to a failing sink

# A change may not move a session to another key.
_IDENTITY_FIELDS = frozenset({"sessionID", "projectKey", "projectId"})


def _now_ms() -> int:
    return int(time.time() * 1000)


def _json(value: Any, what: str) -> str:
    try:
        return dumps_compact(value)
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"{what} is not JSON: {e}") from e


@contextmanager
def _unavailable(what: str) -> Iterator[None]:
    """Turn a Redis failure into RegistryUnavailable for the callers of the registry."""
    try:
        yield
    except RedisError as e:
        raise RegistryUnavailable(f"Redis failed during {what}: {e}") from e


class RedisRegistry:
    """Live sessions shared by every node of a cluster through one Redis."""

    def __init__(self, settings: Settings, sink: EndedSink) -> None:
        if settings.redis_url is None:
            raise ValueError("RedisRegistry needs settings.redis_url")
        self.node_id = settings.node_id
        self._grace_ms = round(settings.session_grace * 1000)
        self._timeout_ms = round(settings.node_timeout * 1000)
        self._beat_interval = min(1.0, settings.node_timeout / 4)
        self._redis = open_redis(settings.redis_url)
        self._scripts = Scripts(self._redis)
        self._join = ScriptBatcher(self._redis, self._scripts.join)
        self._member = Membership(self._redis, self._scripts, self.node_id)
        self._local = self._member.copies
        self._replica = Replica(
            self._redis, self._scripts, self._member.beat, self._member.observe, self.node_id
        )
        self._outbox = Outbox(self._redis, self._scripts, self.node_id, sink)
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Register the node, load the replica and start the background loops."""
        with _unavailable("start"):
            # Tabs still held under this node id belong to an earlier life of it (a crash and a
            # restart with the same HUB_NODE_ID): nobody holds them now, so their grace begins.
            await self._scripts.reap_node(args=[self.node_id, -1, self._grace_ms])
            await self._member.beat()
            await self._replica.reload()
        loops: dict[str, tuple[Callable[[], Awaitable[None]], float]] = {
            "heartbeat": (self._member.beat, self._beat_interval),
            "stream follower": (self._replica.follow, 0.0),
            "reaper": (self._reap, REAP_INTERVAL),
            "outbox drainer": (self._outbox.run, 0.0),
        }
        for name, (step, interval) in loops.items():
            task = asyncio.create_task(self._every(name, step, interval), name=f"registry {name}")
            self._tasks.append(task)

    async def close(self) -> None:
        """Stop the loops, hand what this node took from the outbox, and leave the cluster.

        This node's tabs are removed and their sessions enter their grace (not ended): trackers
        reconnect to another node within it.
        """
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            await stop_task(task)
        self._tasks.clear()
        try:
            await self._outbox.flush(CLOSE_TIMEOUT)
            await self._scripts.reap_node(args=[self.node_id, -1, self._grace_ms])
        except RedisError:
            log.exception("node %s could not leave the registry cleanly", self.node_id)
        self._local.clear()
        await self._redis.aclose()

    async def check(self) -> None:
        """Raise RegistryUnavailable when Redis does not answer a PING."""
        try:
            await self._redis.ping()
        except (RedisError, OSError) as e:
            raise RegistryUnavailable(f"Redis does not answer: {e}") from e

    def listen(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener`` for every change, in stream order; returns its remover."""
        return self._replica.listen(listener)

    # -- tabs --------------------------------------------------------------------------------

    async def join_tab(self, record: Record, tab_id: str) -> TabJoin:
        """Register a tab; ``record`` starts the session when it is not live."""
        self._require_open()
        pk, sid = str(record["projectKey"]), str(record["sessionID"])
        key = (pk, sid)
        local = self._local.get(key)
        now = _now_ms()
        text = _json(record, "record")
        args: list[str | int] = [
            c.session_tag(pk, sid),
            tab_id,
            self.node_id,
            text,
            pk,
            sid,
            info_size(record),
            now,
            "1" if local is None or not local.tabs else "0",
        ]
        with _unavailable("join_tab"):
            # Joins made together (trackers connecting at once) share one round trip.
            reply = await self._join(args=args)
            if reply[0] == "dup":
                raise TabAlreadyConnected(f"tab {tab_id} of session {sid} is connected already")
            if reply[0] == "started":
                self._local[key] = LocalSession(copy_record(record), {}, [], now, now, [tab_id])
                # The stream holds ``text``: listeners get it decoded, as on every other node.
                change = Change("started", pk, sid, json.loads(text))
                await self._replica.apply_own(reply[1], reply[2], reply[3], change)
                return TabJoin(record=copy_record(record), started=True, reconnected=False)
        stored: Record = json.loads(reply[2])
        local = self._local.get(key)
        if len(reply) > 5:
            copy = LocalSession(stored, json.loads(reply[5]), list(reply[6]), 0, 0)
            copy.created_ms, copy.updated_ms = int(reply[3]), int(reply[4])
            copy.tabs = local.tabs if local is not None else []
            self._local[key] = local = copy
        elif local is None:  # pragma: no cover - the script sends the data when there is none
            local = self._local[key] = LocalSession(stored, {}, [], now, now)
        local.tabs.append(tab_id)
        local.grace_deadline_ms = None
        return TabJoin(record=stored, started=False, reconnected=bool(reply[1]))

    async def leave_tab(self, project_key: str, session_id: str, tab_id: str) -> bool:
        """Unregister a tab; True when it was the session's last one anywhere."""
        if self._closed:
            return False  # close() released every tab of this node already
        key = (project_key, session_id)
        args: list[str | int] = [c.session_tag(project_key, session_id), tab_id, self._grace_ms]
        with _unavailable("leave_tab"):
            result = int(await self._scripts.leave(args=args))
            held = self._local.get(key)
            # Redis does not know a tab this node holds: it lost its data and this node has not
            # beaten since. Restore first, or the copy would be dropped below and the session
            # lost (never ended, never stored).
            if result < 0 and held is not None and tab_id in held.tabs:
                if await self._member.recover(key):
                    result = int(await self._scripts.leave(args=args))
        local = self._local.get(key)
        if local is not None and tab_id in local.tabs:
            local.tabs.remove(tab_id)
        if result > 0:
            if local is not None:
                local.grace_deadline_ms = result
            return True
        if local is not None and not local.tabs and local.grace_deadline_ms is None:
            del self._local[key]
        return False

    async def tabs(self, project_key: str, session_id: str) -> list[str]:
        """The connected tab ids of a session, in join order (read from Redis)."""
        with _unavailable("tabs"):
            tabs: list[str] = await self._redis.lrange(  # type: ignore[assignment]
                c.session_keys(c.session_tag(project_key, session_id))[2], 0, -1
            )
        return tabs

    # -- data --------------------------------------------------------------------------------

    async def update(
        self,
        project_key: str,
        session_id: str,
        changes: dict[str, Any],
        variables: dict[str, Any] | None = None,
        max_data_bytes: int | None = None,
    ) -> Record:
        """Deep-merge ``changes`` into the record and ``variables`` into the session's data.

        Merged in Python on a snapshot and written by a script only if the session's data
        revision is still the snapshot's; a concurrent change makes it try again.
        """
        self._require_open()
        moved = _IDENTITY_FIELDS.intersection(changes)
        if moved:
            raise InvalidInput(f"{min(moved)} cannot be changed", min(moved))
        _json(changes, "changes")
        if variables is not None:
            _json(variables, "variables")
        tag = c.session_tag(project_key, session_id)
        hash_key = c.session_keys(tag)[0]
        recovered = False
        with _unavailable("update"):
            for _ in range(UPDATE_ATTEMPTS):
                fields: list[str | None] = await self._redis.hmget(  # type: ignore[assignment]
                    hash_key, "rec", "vars", "dv"
                )
                rec_json, vars_json, revision = fields
                if rec_json is None:
                    if not recovered and await self._member.recover((project_key, session_id)):
                        recovered = True
                        continue
                    raise SessionNotFound(f"no live session {session_id}")
                record = deep_merge(json.loads(rec_json), changes)
                merged_vars = json.loads(vars_json or "{}")
                if variables:
                    merged_vars = deep_merge(merged_vars, variables)
                    vars_json = dumps_compact(merged_vars)
                limit = -1 if max_data_bytes is None else max_data_bytes
                reply = await self._scripts.update(
                    args=[
                        tag,
                        revision or "",
                        dumps_compact(record),
                        vars_json or "{}",
                        info_size(record),
                        limit,
                        _now_ms(),
                        self.node_id,
                        "1",
                    ]
                )
                if reply[0] == "conflict" or reply[0] == "missing":
                    continue
                if reply[0] == "too_large":
                    raise SessionDataTooLarge(
                        f"session data would be {reply[1]} bytes, over {max_data_bytes}"
                    )
                local = self._local.get((project_key, session_id))
                if local is not None:
                    local.record, local.variables = copy_json(record), merged_vars
                    local.updated_ms = _now_ms()
                await self._replica.reach(reply[1])
                return record
        raise RegistryUnavailable(f"session {session_id} kept changing; update not applied")

    async def add_message(
        self, project_key: str, session_id: str, message: dict[str, Any], max_data_bytes: int
    ) -> None:
        """Append a message to the session's data; SessionDataTooLarge over the limit."""
        self._require_open()
        text = _json(message, "message")
        tag = c.session_tag(project_key, session_id)
        with _unavailable("add_message"):
            reply = await self._scripts.add_message(args=[tag, text, max_data_bytes, _now_ms()])
            if reply[0] == "missing" and await self._member.recover((project_key, session_id)):
                reply = await self._scripts.add_message(args=[tag, text, max_data_bytes, _now_ms()])
        if reply[0] == "missing":
            raise SessionNotFound(f"no live session {session_id}")
        if reply[0] == "too_large":
            raise SessionDataTooLarge(
                f"session data would be {reply[1]} bytes, over {max_data_bytes}"
            )
        local = self._local.get((project_key, session_id))
        if local is not None:
            local.messages.append(text)
            local.updated_ms = _now_ms()

    # -- reads (from the replica, after catching up) ------------------------------------------

    async def get(self, project_key: str, session_id: str) -> Record | None:
        """The record of a live session, or None."""
        with _unavailable("get"):
            await self._replica.sync()
        return self._replica.index.get(project_key, session_id)

    async def query(self, project_key: str, query: SessionQuery) -> QueryResult:
        """One page of the live sessions of a project that match the query."""
        with _unavailable("query"):
            await self._replica.sync()
        return self._replica.index.query(project_key, query)

    async def autocomplete(self, project_key: str, field: str, q: str, limit: int) -> list[str]:
        """Distinct values of a field among the live sessions of a project, containing q."""
        with _unavailable("autocomplete"):
            await self._replica.sync()
        return self._replica.index.autocomplete(project_key, field, q, limit)

    def live_count(self) -> int:
        """Live sessions of the cluster as this node's replica holds them (no Redis call)."""
        return len(self._replica.index)

    # -- background work ---------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._closed:
            raise RegistryUnavailable("the registry is closed")

    async def _every(self, name: str, step: Callable[[], Awaitable[None]], pause: float) -> None:
        backoff = 0.0
        while not self._closed:
            try:
                await step()
                backoff = 0.0
                if pause:
                    await asyncio.sleep(pause)
            except asyncio.CancelledError:
                raise
            except Exception:
                backoff = min(MAX_BACKOFF, max(0.1, backoff * 2))
                log.exception(
                    "registry %s failed on node %s; retrying in %.1fs", name, self.node_id, backoff
                )
                await asyncio.sleep(backoff)

    async def _reap(self) -> None:
        """End the sessions whose grace passed and the tabs of silent nodes.

        Due sessions are ended DUE_BATCH at a time, one script call each batch; while a batch
        comes back full there are more, so it looks again at once.
        """
        while True:
            dead, due = await self._scripts.due(args=[self._timeout_ms, DUE_BATCH])
            for node in dead:
                await self._reap_node(node)
            if due:
                args: list[str] = [self.node_id]
                for tag in due:
                    args += (tag, uuid.uuid4().hex)
                await self._scripts.end(args=args)
            if len(due) < DUE_BATCH or self._closed:
                return

    async def _reap_node(self, node: str) -> None:
        if node == self.node_id:
            await self._member.beat()  # this node stalled; it is alive again
            return
        graced = int(await self._scripts.reap_node(args=[node, self._timeout_ms, self._grace_ms]))
        if graced >= 0:
            log.warning(
                "node %s was silent for over %.0fs: its tabs are gone, %d sessions in grace",
                node,
                self._timeout_ms / 1000,
                graced,
            )
