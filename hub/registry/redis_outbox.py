"""Handing ended sessions from the Redis outbox to the store, each exactly once.

The end script pushes an entry on ``lh:outbox``. Every node's drainer moves one entry at a time
onto its own processing list (LMOVE, so an entry is always in exactly one list), hands it to the
sink and only then removes it. When the sink fails, the entry stays where it is and is tried
again with capped backoff, so a database outage loses nothing. When a node closes, what it still
could not store goes back to the outbox; when a node dies, whoever reaps it moves the dead node's
processing list back to the outbox. The sink is idempotent on ``end_id``, so an entry handed
twice is stored once.
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

        An entry the sink refuses stays on this node's processing list and is tried again with
        capped backoff (the store is down: nothing is lost, and nothing else gets ahead of it).
        """
        while True:
            try:
                entry: str | None = await self._redis.lindex(self._processing, -1)  # type: ignore[assignment]
                if entry is None:
                    entry = await self._redis.blmove(  # type: ignore[assignment]
                        c.OUTBOX_LIST, self._processing, block_s, "RIGHT", "LEFT"
                    )
                if entry is not None and not await self.hand(entry):
                    await self._pause()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("draining the registry outbox failed; retrying")
                await self._pause()

    async def hand(self, entry: str) -> bool:
        """Give one taken entry to the sink and drop it; False when the sink failed."""
        try:
            ended = parse_entry(entry)
        except (ValueError, KeyError, TypeError):
            log.error("unreadable outbox entry moved to %s: %.200s", c.OUTBOX_BAD_LIST, entry)
            pipe = self._redis.pipeline(transaction=True)
            pipe.lpush(c.OUTBOX_BAD_LIST, entry)
            pipe.lrem(self._processing, 1, entry)
            await pipe.execute()
            return True
        try:
            await self._sink(ended)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "storing ended session %s/%s (end %s) failed; retrying",
                ended.project_key,
                ended.session_id,
                ended.end_id,
            )
            return False
        await self._redis.lrem(self._processing, 1, entry)
        self._backoff = 0.0
        return True

    async def flush(self, within: float) -> None:
        """At close: hand what this node has taken, retrying for ``within`` seconds.

        What the sink still refuses then goes back to the outbox, for another node (or this one
        after a restart) to store.
        """
        try:
            async with asyncio.timeout(within):
                while True:
                    entry: str | None = await self._redis.lindex(self._processing, -1)  # type: ignore[assignment]
                    if entry is None:
                        return
                    if not await self.hand(entry):
                        await self._pause()
        except TimeoutError:
            left: list[str] = await self._redis.lrange(self._processing, 0, -1)  # type: ignore[assignment]
            for entry in left:
                await self._scripts.fail_back(keys=[self._processing], args=[entry])
            log.error("%d ended sessions not stored at close; left in the shared outbox", len(left))

    async def _pause(self) -> None:
        self._backoff = min(MAX_BACKOFF, max(0.1, self._backoff * 2))
        await asyncio.sleep(self._backoff)
