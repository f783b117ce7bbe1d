"""Each node's replica of the shared set of live sessions, kept current from ``lh:changes``.

The replica is a :class:`SessionIndex` plus the id of the last stream entry applied to it. Entries
are applied in stream order, under one lock, and every listener is called from that apply path, so
a snapshot of the index followed by the changes after it never misses or repeats one.

A read first catches up (:meth:`Replica.sync`): one round trip that returns the entries after the
last applied one, the epoch and the stream's first id. Reads that arrive while a catch-up is on
its way share the next one instead of each paying its own. When entries were trimmed away before
this node read them, or the epoch changed (Redis lost its data), the replica resyncs: it notes the
stream's last id and every session's tag in one step, loads the hashes, applies the entries after
the noted id (skipping those a loaded hash already reflects, by its ``ver``), then tells the
listeners the difference from what they knew.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from redis.asyncio import Redis

from hub import constants as c
from hub.errors import RegistryUnavailable
from hub.records import Record
from hub.registry.base import Change, ChangeListener
from hub.registry.index import SessionIndex, copy_record
from hub.registry.redis_scripts import Scripts

log = logging.getLogger(__name__)

StreamId = tuple[int, int]
Entry = tuple[str, Change]  # a stream entry's id and the change it holds

# Entries read per round trip, and sessions loaded per round trip during a resync.
BATCH = 1000
LOAD_BATCH = 1000
YIELD_EVERY = 2000  # records indexed between two yields to the event loop during a resync
# Seconds the follower rests after waking for entries this node had applied already (its own),
# before reading again: while the node writes a lot, every write would wake it and cost a read.
OWN_WAKE_PAUSE = 0.005


def parse_id(text: str) -> StreamId:
    """A stream id as a comparable pair (``"0-0"`` is the start)."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class Replica:
    """The node's index of every live session, and the listeners of changes to it."""

    def __init__(
        self,
        redis: Redis,
        scripts: Scripts,
        on_epoch_change: Callable[[], Awaitable[None]],
        observer: Callable[[Change], None],
        node_id: str,
    ) -> None:
        self.index = SessionIndex()
        self.node_id = node_id
        self.epoch: str | None = None
        self.last_id = "0-0"
        self._redis = redis
        self._scripts = scripts
        self._on_epoch_change = on_epoch_change
        self._observer = observer
        self._listeners: list[ChangeListener] = []
        self._lock = asyncio.Lock()
        self._started = 0  # catch-ups begun
        self._finished = 0  # number of the last catch-up finished

    def listen(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener`` for every change applied from now on; returns its remover."""
        self._listeners.append(listener)

        def stop() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return stop

    def applied(self, stream_id: str) -> bool:
        """True when the entry ``stream_id`` is in the index already."""
        return parse_id(stream_id) <= parse_id(self.last_id)

    async def sync(self) -> None:
        """Apply every change made before this call; share a catch-up begun after it."""
        wanted = self._started + 1
        async with self._lock:
            if self._finished >= wanted:
                return
            self._started += 1
            number = self._started
            await self._catch_up()
            self._finished = number

    async def reach(self, stream_id: str) -> None:
        """Return once the entry ``stream_id`` has been applied (and its listeners called)."""
        if stream_id and not self.applied(stream_id):
            await self.sync()

    async def apply_own(self, entry_id: str, previous_id: str, epoch: str, change: Change) -> None:
        """Apply an entry this node just appended, whose change it knows, like :meth:`reach`.

        When the entry directly follows the last one applied (``previous_id``, in the same
        ``epoch``), it is applied from ``change`` without reading the stream back: a tracker's
        join then costs one round trip, and a burst of joins made through this node none for
        the catch-up. Otherwise it catches up as :meth:`reach` does.
        """
        if self.applied(entry_id):
            return
        async with self._lock:
            if self.applied(entry_id):
                return
            if previous_id == self.last_id and epoch == self.epoch:
                self.last_id = entry_id
                self._apply_change(change)
                return
        await self.reach(entry_id)

    async def reload(self) -> None:
        """Load the whole set again (at start, and when the stream cannot be trusted)."""
        async with self._lock:
            self._started += 1
            number = self._started
            await self._resync()
            self._finished = number

    async def follow(self, block_ms: int = 1000) -> None:
        """Wait for new entries (one blocking read), then catch up; for the background loop.

        An entry this node applied already (its own, by :meth:`apply_own`) while the read was
        on its way needs no catch-up: the next read starts after it, a moment later. Nor does,
        at first, a session this node started and has not applied yet: the read often wakes
        before the join's own reply is handled, and :meth:`apply_own` applies it without
        reading the stream back. The follower looks again after :data:`OWN_WAKE_PAUSE` and
        catches up only if it is still missing (a join whose caller went away). Entries of
        other nodes then reach the listeners up to :data:`OWN_WAKE_PAUSE` later; reads (which
        catch up first) and this node's own changes are not delayed.
        """
        got = await self._redis.xread({c.CHANGES_STREAM: self.last_id}, count=1, block=block_ms)
        entries = [entry for _, stream in got for entry in stream] if isinstance(got, list) else []
        if entries and all(self.applied(e[0]) or self._started_here(e[1]) for e in entries):
            await asyncio.sleep(OWN_WAKE_PAUSE)
            if all(self.applied(e[0]) for e in entries):
                return
        await self.sync()

    def _started_here(self, fields: Any) -> bool:
        """Whether a stream entry's fields are a session started by this node (``apply_own``)."""
        return (
            isinstance(fields, dict)
            and fields.get("k") == "started"
            and fields.get("n") == self.node_id
        )

    # -- internals, called with the lock held ---------------------------------------------

    async def _catch_up(self) -> None:
        while True:
            epoch, first_id, text, count = await self._scripts.catch_up(args=[self.last_id, BATCH])
            if epoch != self.epoch:
                log.warning(
                    "registry epoch changed (%s → %s): Redis lost its data; resyncing",
                    self.epoch,
                    epoch or "none",
                )
                await self._resync()
                return
            if self.last_id != "0-0" and (
                not first_id or parse_id(first_id) > parse_id(self.last_id)
            ):
                log.warning("change stream trimmed past entry %s; resyncing", self.last_id)
                await self._resync()
                return
            entries = _entries(text, count)
            self._apply(entries)
            if len(entries) < BATCH:
                return

    def _apply(self, entries: Iterable[Entry]) -> None:
        for entry_id, change in entries:
            self.last_id = entry_id
            self._apply_change(change)

    def _apply_change(self, change: Change) -> None:
        if change.kind == "ended":
            self.index.remove(change.project_key, change.session_id)
        elif change.record is not None:
            self.index.upsert(change.record)
        self._notify(change)

    def _notify(self, change: Change) -> None:
        self._observer(change)
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception(
                    "registry listener failed on %s %s/%s",
                    change.kind,
                    change.project_key,
                    change.session_id,
                )

    async def _resync(self) -> None:
        for attempt in range(3):
            epoch, head_id, tags = await self._scripts.head()
            if epoch != self.epoch:
                # A missing or new epoch: the node first puts back what it holds, so that the
                # load below already sees it.
                await self._on_epoch_change()
                epoch, head_id, tags = await self._scripts.head()
            if epoch:
                loaded = await self._load(epoch, head_id, tags)
                if loaded is not None:
                    await self._swap(*loaded)
                    return
            log.warning("registry epoch moved during a resync (attempt %d)", attempt + 1)
        raise RegistryUnavailable("the registry's data keeps changing epoch")

    async def _load(
        self, epoch: str, head_id: str, tag_text: str
    ) -> tuple[dict[tuple[str, str], tuple[Record, StreamId]], str, str] | None:
        """Every live session as of now; None when the epoch changed meanwhile."""
        fresh: dict[tuple[str, str], tuple[Record, StreamId]] = {}
        tags = tag_text.split("\n") if tag_text else []
        for start in range(0, len(tags), LOAD_BATCH):
            lines = (await self._scripts.load(args=tags[start : start + LOAD_BATCH])).split("\n")
            for ver, rec in zip(lines[::2], lines[1::2], strict=True):
                if not rec:
                    continue  # ended since the head was noted
                record = json.loads(rec)
                key = (record["projectKey"], record["sessionID"])
                fresh[key] = (record, parse_id(ver or "0-0"))
        last_id = head_id
        while True:
            got_epoch, _, text, count = await self._scripts.catch_up(args=[last_id, BATCH])
            if got_epoch != epoch:
                return None
            entries = _entries(text, count)
            for entry_id, change in entries:
                last_id = entry_id
                _replay(fresh, parse_id(entry_id), change)
            if len(entries) < BATCH:
                return fresh, epoch, last_id

    async def _swap(
        self,
        fresh: dict[tuple[str, str], tuple[Record, StreamId]],
        epoch: str,
        last_id: str,
    ) -> None:
        """Replace the index and tell the listeners what differs."""
        old = {(r["projectKey"], r["sessionID"]): r for r in self.index.records()}
        index = SessionIndex()
        # The records were just decoded and go nowhere else but to the listeners below: the index
        # keeps them as they are, and the listeners (when there are any) get copies.
        shared = not self._listeners
        for n, (record, _) in enumerate(fresh.values(), 1):
            index.upsert_owned(record)
            if n % YIELD_EVERY == 0:
                # Building a large index takes seconds: let the node's sockets breathe. Reads
                # wait for the lock, so none sees the half-built index.
                await asyncio.sleep(0)
        self.index = index
        self.epoch = epoch
        self.last_id = last_id
        for key in old:
            if key not in fresh:
                self._notify(_ended(*key))
        for key, (record, _) in fresh.items():
            before = old.get(key)
            if before is None or before != record:
                kind: Any = "started" if before is None else "updated"
                given = record if shared else copy_record(record)
                self._notify(Change(kind, key[0], key[1], given))
        log.info("registry replica loaded: %d live sessions, at %s", len(index), last_id)


def _entries(text: str, count: int) -> list[Entry]:
    """The entries of a catch-up reply: ``count`` lines, each ``id, k, p, s[, r]`` tab-separated
    (redis_scripts.CATCH_UP)."""
    if not count:
        return []
    lines = text.split("\n")
    if len(lines) != count:
        raise ValueError(f"catch-up reply holds {len(lines)} lines for {count} stream entries")
    entries: list[Entry] = []
    append = entries.append
    for line in lines:
        fields = line.split("\t", 4)
        kind: Any = fields[1]
        if kind == "ended":
            append((fields[0], _ended(fields[2], fields[3])))
        elif len(fields) == 5:
            append((fields[0], Change(kind, fields[2], fields[3], json.loads(fields[4]))))
        else:
            raise ValueError(f"change stream entry {fields[0]} ({kind}) has no record")
    return entries


def _ended(project_key: str, session_id: str) -> Change:
    return Change("ended", project_key, session_id, None, {"reason": "ended"})


def _replay(
    fresh: dict[tuple[str, str], tuple[Record, StreamId]], entry_id: StreamId, change: Change
) -> None:
    """Apply one entry after the head to a loaded set, unless a hash already reflects it."""
    key = (change.project_key, change.session_id)
    known = fresh.get(key)
    if known is not None and known[1] >= entry_id:
        return
    if change.kind == "ended":
        fresh.pop(key, None)
    elif change.record is not None:
        fresh[key] = (change.record, entry_id)
