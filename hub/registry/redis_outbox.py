"""Handing ended sessions from the Redis outbox to the store, each exactly once.

The end script pushes an entry on ``lh:outbox``. Every node's drainer moves up to a few hundred
entries at a time onto its own processing list (one script of LMOVEs, so an entry is always in
exactly one list), hands them to the sink together (the store writes them in one transaction) and
only then removes those the sink took. When the sink fails, its entries stay where they are and
are tried again with capped backoff, so a database outage loses nothing. When a node closes, what
it still could not store goes back to the outbox; when a node dies, whoever reaps it moves the
dead node's processing list back to the outbox. The sink is idempotent on ``end_id``, so an entry
handed twice is stored once.
"""

from __future__ import annotations

import asyncio
import json
import logging

from redis.asyncio import Redis

from hub import constants as c
from hub.records import stored_data
from hub.registry.base import EndedSession, EndedSink
from hub.registry.redis_scripts import Scripts

log = logging.getLogger(__name__)

MAX_BACKOFF = 10.0
# What one take moves from the outbox at most: this many entries, or this many bytes of them.
TAKE_COUNT = 256
TAKE_BYTES = 4 * 1024 * 1024
IN_FLIGHT = 2  # batches on their way to the sink at once


def parse_entry(entry: str) -> EndedSession:
    """The ended session an outbox entry holds (JSON built by the end script).

    Like the in-process registry: created is the record's ``timestamp``, updated the last change
    but never before created.
    """
    obj = json.loads(entry)
    record = obj["rec"]
    created = int(record.get("timestamp") or 0)
    return EndedSession(
        end_id=str(obj["end_id"]),
        project_id=int(record.get("projectId") or 0),
        project_key=str(record["projectKey"]),
        session_id=str(record["sessionID"]),
        data=stored_data(record, obj["vars"], obj["msgs"]),
        created_at_ms=created,
        updated_at_ms=max(int(obj["updated"]), created),
    )


class Outbox:
    """One node's drainer of the shared outbox."""

    def __init__(self, redis: Redis, scripts: Scripts, node_id: str, sink: EndedSink) -> None:
        self._redis = redis
        self._scripts = scripts
        self._sink = sink
        self._processing = c.node_processing_key(node_id)
        self._backoff = 0.0

    async def run(self, block_s: int = 1) -> None:
        """Drain forever: what this node had taken before, then the outbox as entries come.

        Up to IN_FLIGHT batches are on their way to the sink at once, so that the next batch is
        taken and read while the store writes the last. Entries the sink refuses stay on this
        node's processing list; once the batches on their way are done, they are tried again
        with capped backoff, before anything new is taken (the store is down: nothing is lost,
        and nothing else gets ahead of them).
        """
        handing: list[asyncio.Task[bool]] = []
        try:
            while True:
                try:
                    await self._step(handing, block_s)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("draining the registry outbox failed; retrying")
                    await self._pause()
        finally:
            # Entries of a batch cut short stay on the processing list: close() hands them.
            for task in handing:
                task.cancel()
            await asyncio.gather(*handing, return_exceptions=True)

    async def _step(self, handing: list[asyncio.Task[bool]], block_s: int) -> None:
        failed = False
        while handing and handing[0].done():
            failed |= not handing.pop(0).result()  # a Redis error raises here: logged, retried
        if failed:
            await asyncio.wait(handing)
            handing.clear()
            await self._pause()
            return
        if not handing:
            entries = await self._taken()  # left over: refused before, or taken before a restart
            if entries:
                if not await self.hand(entries):
                    await self._pause()
                return
            entries = await self._take(block_s)
        elif len(handing) < IN_FLIGHT:
            entries = await self._scripts.take(
                keys=[self._processing], args=[TAKE_COUNT, TAKE_BYTES]
            )
        else:
            entries = []
        if entries:
            handing.append(asyncio.create_task(self.hand(entries), name="outbox batch"))
        elif handing:
            await asyncio.wait(handing[:1])

    async def hand(self, entries: list[str]) -> bool:
        """Give taken entries to the sink together and drop those it took.

        False when the sink failed for any of them: those stay on the processing list. An entry
        that cannot be read goes to the bad list; the others go on.
        """
        handed: list[tuple[str, EndedSession]] = []
        bad: list[str] = []
        for entry in entries:
            try:
                handed.append((entry, parse_entry(entry)))
            except (ValueError, KeyError, TypeError):
                log.error("unreadable outbox entry moved to %s: %.200s", c.OUTBOX_BAD_LIST, entry)
                bad.append(entry)
        if bad:
            pipe = self._redis.pipeline(transaction=True)
            for entry in bad:
                pipe.lpush(c.OUTBOX_BAD_LIST, entry)
                pipe.lrem(self._processing, 1, entry)
            await pipe.execute()
        # Handed all at once: the store writes saves that wait together in one transaction.
        results = await asyncio.gather(
            *(self._sink(ended) for _, ended in handed), return_exceptions=True
        )
        stored: list[str] = []
        failed: list[tuple[EndedSession, BaseException]] = []
        for (entry, ended), result in zip(handed, results, strict=True):
            if isinstance(result, BaseException):
                failed.append((ended, result))
            else:
                stored.append(entry)
        if stored:
            await self._scripts.done(keys=[self._processing], args=stored)
        if failed:
            first, error = failed[0]
            log.error(
                "storing %d of %d ended sessions failed (first: %s/%s, end %s); retrying",
                len(failed),
                len(handed),
                first.project_key,
                first.session_id,
                first.end_id,
                exc_info=error,
            )
            return False
        self._backoff = 0.0
        return True

    async def flush(self, within: float) -> None:
        """At close: hand what this node has taken, retrying for ``within`` seconds.

        What the sink still refuses then goes back to the outbox, for another node (or this one
        after a restart) to store.
        """
        try:
            async with asyncio.timeout(within):
                while entries := await self._taken():
                    if not await self.hand(entries):
                        await self._pause()
        except TimeoutError:
            left: list[str] = await self._redis.lrange(self._processing, 0, -1)  # type: ignore[assignment]
            for entry in left:
                await self._scripts.fail_back(keys=[self._processing], args=[entry])
            log.error("%d ended sessions not stored at close; left in the shared outbox", len(left))

    async def _taken(self) -> list[str]:
        """What this node took and has not stored yet, oldest first (at most one take)."""
        entries: list[str] = await self._redis.lrange(self._processing, 0, -1)  # type: ignore[assignment]
        entries.reverse()
        return entries

    async def _take(self, block_s: int) -> list[str]:
        """Move up to TAKE_COUNT entries (TAKE_BYTES) from the outbox to the processing list.

        When the outbox is empty, wait up to ``block_s`` for one entry, then take what came with it.
        """
        taken: list[str] = await self._scripts.take(
            keys=[self._processing], args=[TAKE_COUNT, TAKE_BYTES]
        )
        if taken:
            return taken
        first: str | None = await self._redis.blmove(  # type: ignore[assignment]
            c.OUTBOX_LIST, self._processing, block_s, "RIGHT", "LEFT"
        )
        if first is None:
            return []
        more: list[str] = await self._scripts.take(
            keys=[self._processing], args=[TAKE_COUNT - 1, TAKE_BYTES - len(first)]
        )
        return [first, *more]

    async def _pause(self) -> None:
        self._backoff = min(MAX_BACKOFF, max(0.1, self._backoff * 2))
        await asyncio.sleep(self._backoff)
