"""The in-process presence registry: one node, no Redis (the default).

Every state change happens synchronously on the event loop (no ``await`` between reading and
writing state), so each call is atomic. Ended sessions go to an outbox drained by one background
task into the sink, many at once, retried with capped backoff until the sink takes them: nothing
is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hub.errors import (
    InvalidInput,
    RegistryUnavailable,
    SessionDataTooLarge,
    SessionNotFound,
    TabAlreadyConnected,
)
from hub.records import Record, stored_data
from hub.registry.base import (
    Change,
    ChangeListener,
    EndedSession,
    EndedSink,
    QueryResult,
    SessionQuery,
    TabJoin,
)
from hub.registry.index import SessionIndex
from hub.registry.merge import DataSize, copy_json, deep_merge, dumps_compact
from hub.settings import Settings

log = logging.getLogger(__name__)

DRAIN_BATCH = 256  # ended sessions handed to the sink at once at most

# A change may not move a session to another key of the index.
_IDENTITY_FIELDS = frozenset({"sessionID", "projectKey", "projectId"})


@dataclass(slots=True)
class _Live:
    """A live session: its tabs and the data it will be stored with (its record is indexed)."""

    tabs: list[str]
    variables: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    size: DataSize = field(default_factory=DataSize)
    updated_at_ms: int = 0
    grace: asyncio.TimerHandle | None = None


class MemoryRegistry:
    """Live sessions of one node, kept in process (``HUB_REDIS_URL`` unset).

    ``clock`` gives the wall time in seconds (``updatedAt`` of ended sessions); the grace itself
    runs on the event loop's timer. ``close_timeout`` bounds how long :meth:`close` keeps
    retrying the sink; ``retry_cap`` is the longest pause between two attempts.
    """

    def __init__(
        self,
        settings: Settings,
        sink: EndedSink,
        *,
        clock: Callable[[], float] = time.time,
        close_timeout: float = 10.0,
        retry_first: float = 0.05,
        retry_cap: float = 5.0,
    ) -> None:
        self._settings = settings
        self._sink = sink
        self._clock = clock
        self._close_timeout = close_timeout
        self._retry_first = retry_first
        self._retry_cap = retry_cap
        self._index = SessionIndex()
        self._live: dict[tuple[str, str], _Live] = {}
        self._listeners: list[ChangeListener] = []
        self._outbox: deque[EndedSession] = deque()
        self._outbox_changed = asyncio.Event()
        self._outbox_empty = asyncio.Event()
        self._outbox_empty.set()
        self._drainer: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the task that hands ended sessions to the sink."""
        self._ensure_drainer()

    async def close(self) -> None:
        """End every live session now and hand it to the sink, retrying for ``close_timeout``.

        Nothing of an in-process registry outlives the process, so the sessions still live are
        ended here (their tabs are gone by now: the app closes sockets first). What the sink has
        not taken when the deadline passes is logged at ERROR level, with its data.
        """
        if self._closed:
            return
        self._closed = True
        for key in list(self._live):
            self._end(key)
        self._ensure_drainer(closing=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._outbox_empty.wait(), self._close_timeout)
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
            self._drainer = None
        for ended in self._outbox:
            log.error(
                "ended session NOT stored (the store did not take it before shutdown): "
                "project %s session %s end %s created %d updated %d data %s",
                ended.project_key,
                ended.session_id,
                ended.end_id,
                ended.created_at_ms,
                ended.updated_at_ms,
                dumps_compact(ended.data),
            )
        self._outbox.clear()

    async def check(self) -> None:
        """An in-process registry always answers."""

    # -- tabs --------------------------------------------------------------------------------

    async def join_tab(self, record: Record, tab_id: str) -> TabJoin:
        """Register a tab; a session with no tab (in its grace) continues, else one starts."""
        if self._closed:
            raise RegistryUnavailable("the registry is closed")
        key = (str(record["projectKey"]), str(record["sessionID"]))
        live = self._live.get(key)
        if live is not None:
            if tab_id in live.tabs:
                raise TabAlreadyConnected(f"tab {tab_id} is already connected")
            reconnected = not live.tabs
            if live.grace is not None:
                live.grace.cancel()
                live.grace = None
            live.tabs.append(tab_id)
            current = self._record(key)
            return TabJoin(record=copy_json(current), started=False, reconnected=reconnected)
        size = DataSize.of(record)
        self._live[key] = _Live(tabs=[tab_id], size=size, updated_at_ms=self._now_ms())
        self._index.upsert(record)
        self._emit(Change("started", key[0], key[1], copy_json(record)))
        return TabJoin(record=copy_json(record), started=True, reconnected=False)

    async def leave_tab(self, project_key: str, session_id: str, tab_id: str) -> bool:
        """Unregister a tab; when it was the last one the grace begins and True is returned."""
        key = (project_key, session_id)
        live = self._live.get(key)
        if live is None or tab_id not in live.tabs:
            return False
        live.tabs.remove(tab_id)
        if live.tabs:
            return False
        if not self._closed:
            loop = asyncio.get_running_loop()
            live.grace = loop.call_later(self._settings.session_grace, self._grace_passed, key)
        return True

    # -- data --------------------------------------------------------------------------------

    async def update(
        self,
        project_key: str,
        session_id: str,
        changes: dict[str, Any],
        variables: dict[str, Any] | None = None,
        max_data_bytes: int | None = None,
    ) -> Record:
        """Deep-merge ``changes`` into the record and ``variables`` into the session's variables.

        Every successful call is one ``updated`` change. Over ``max_data_bytes`` (compact JSON of
        the stored data) it raises SessionDataTooLarge and nothing changes.
        """
        live = self._require(project_key, session_id)
        moved = _IDENTITY_FIELDS.intersection(changes)
        if moved:
            raise InvalidInput(f"{min(moved)} cannot be changed", min(moved))
        current = self._record((project_key, session_id))
        record = deep_merge(current, changes) if changes else current
        new_vars = deep_merge(live.variables, variables) if variables else live.variables
        try:
            size = live.size.after(
                record if changes else None,
                new_vars if variables else None,
                list(variables) if variables else (),
            )
        except (TypeError, ValueError) as e:
            raise InvalidInput(f"not JSON: {e}") from e
        if max_data_bytes is not None and size.total > max_data_bytes:
            raise SessionDataTooLarge(
                f"the session's data would be {size.total} bytes, over {max_data_bytes}"
            )
        live.variables, live.size = new_vars, size
        live.updated_at_ms = self._now_ms()
        if changes:
            self._index.upsert(record)
        self._emit(Change("updated", project_key, session_id, copy_json(record)))
        result: Record = copy_json(record)
        return result

    async def add_message(
        self, project_key: str, session_id: str, message: dict[str, Any], max_data_bytes: int
    ) -> None:
        """Append ``message`` to the session's messages; no change is emitted (not in the record).

        Over ``max_data_bytes`` it raises SessionDataTooLarge and nothing changes.
        """
        live = self._require(project_key, session_id)
        message = copy_json(message)
        try:
            size = live.size.with_message(message)
        except (TypeError, ValueError) as e:
            raise InvalidInput(f"message is not JSON: {e}") from e
        if size.total > max_data_bytes:
            raise SessionDataTooLarge(
                f"the session's data would be {size.total} bytes, over {max_data_bytes}"
            )
        live.messages.append(message)
        live.size = size
        live.updated_at_ms = self._now_ms()

    # -- reads -------------------------------------------------------------------------------

    async def get(self, project_key: str, session_id: str) -> Record | None:
        """A copy of the record of a live session, or None."""
        return self._index.get(project_key, session_id)

    async def tabs(self, project_key: str, session_id: str) -> list[str]:
        """The connected tab ids of a session, in the order they joined ([] if not live)."""
        live = self._live.get((project_key, session_id))
        return list(live.tabs) if live is not None else []

    async def query(self, project_key: str, query: SessionQuery) -> QueryResult:
        """One page of matching live sessions (see :meth:`SessionIndex.query`)."""
        return self._index.query(project_key, query)

    async def autocomplete(self, project_key: str, field: str, q: str, limit: int) -> list[str]:
        """Distinct values containing q (see :meth:`SessionIndex.autocomplete`)."""
        return self._index.autocomplete(project_key, field, q, limit)

    def live_count(self) -> int:
        """Live sessions, of every project (the ``livehub_live_sessions`` gauge)."""
        return len(self._index)

    def listen(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener`` synchronously for every change, in order; returns its stopper."""
        self._listeners.append(listener)

        def stop() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return stop

    # -- internals ---------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _record(self, key: tuple[str, str]) -> Record:
        """The indexed record of a live session (not a copy: read only)."""
        record = self._index.peek(*key)
        assert record is not None, "a live session is always indexed"
        return record

    def _require(self, project_key: str, session_id: str) -> _Live:
        live = self._live.get((project_key, session_id))
        if live is None:
            raise SessionNotFound(f"no live session {session_id}")
        return live

    def _emit(self, change: Change) -> None:
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("a registry listener failed on %s %s", change.kind, change.session_id)

    def _grace_passed(self, key: tuple[str, str]) -> None:
        live = self._live.get(key)
        if live is not None and not live.tabs:
            live.grace = None
            self._end(key)
            self._ensure_drainer()

    def _end(self, key: tuple[str, str]) -> None:
        """Remove a live session and put what the store must keep in the outbox."""
        live = self._live.pop(key)
        if live.grace is not None:
            live.grace.cancel()
        record = self._index.remove(*key) or {}
        created = int(record.get("timestamp") or 0)
        self._outbox.append(
            EndedSession(
                end_id=uuid.uuid4().hex,
                project_id=int(record.get("projectId") or 0),
                project_key=key[0],
                session_id=key[1],
                data=stored_data(record, live.variables, live.messages),
                created_at_ms=created,
                # A session whose start (the tracker's clock) is ahead of ours was still updated
                # no earlier than it began.
                updated_at_ms=max(live.updated_at_ms, created),
            )
        )
        self._outbox_empty.clear()
        self._outbox_changed.set()
        self._emit(Change("ended", key[0], key[1], None, {"reason": "ended"}))

    def _ensure_drainer(self, *, closing: bool = False) -> None:
        if (self._closed and not closing) or self._drainer is not None:
            return
        self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Hand ended sessions to the sink, up to DRAIN_BATCH at once (the store writes them
        together); those it refuses stay first in the outbox and are retried with backoff."""
        delay = self._retry_first
        while True:
            if not self._outbox:
                self._outbox_empty.set()
                self._outbox_changed.clear()
                await self._outbox_changed.wait()
                continue
            batch = list(itertools.islice(self._outbox, DRAIN_BATCH))
            results = await asyncio.gather(
                *(self._sink(ended) for ended in batch), return_exceptions=True
            )
            # Only this task takes from the left, so the batch is still the outbox's head: what
            # the sink took leaves it; what it refused goes back first, in order.
            for _ in batch:
                self._outbox.popleft()
            failed = [
                (e, r) for e, r in zip(batch, results, strict=True) if isinstance(r, BaseException)
            ]
            if not failed:
                delay = self._retry_first
                continue
            self._outbox.extendleft(reversed([ended for ended, _ in failed]))
            first, error = failed[0]
            log.error(
                "storing %d of %d ended sessions failed (first: session %s of project %s);"
                " retrying in %.2f s",
                len(failed),
                len(batch),
                first.session_id,
                first.project_key,
                delay,
                exc_info=error,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_cap)
