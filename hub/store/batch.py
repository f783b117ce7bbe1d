"""Group commit: concurrent ``save_session`` calls are written together, one transaction each batch.

A store's insert of ended sessions costs mostly its commit (and, on PostgreSQL, its round trip),
not its rows. So every call waits in a queue, and a writer task takes whatever is queued when it
is free and writes it with the store's batched insert; the calls that arrive meanwhile form the
next batch. A lone call is written at once, alone; a busy node's drainer, which hands many
sessions at once, gets them written a few hundred per transaction. A store whose database writes
transactions in parallel (PostgreSQL: a server process per connection) runs several writers, each
taking a smaller batch, so that the database works on two batches at once.

A batch that fails for a reason other than the database being unavailable (a row the database
refuses: a bug, not an outage) is written again one session at a time, so that only the session at
fault fails and the others are stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from hub.errors import StoreUnavailable
from hub.registry.base import EndedSession

# Sessions one insert statement writes at most (SQLite binds 7 parameters a row and allows 32766).
MAX_BATCH = 500

BatchWrite = Callable[[Sequence[EndedSession]], Awaitable[set[str]]]


class SaveBatcher:
    """Writes concurrent saves together through ``write``.

    ``write`` stores up to :data:`MAX_BATCH` sessions in one transaction, idempotently on
    ``end_id``, and returns the end ids it newly stored. Up to ``writers`` batches of at most
    ``batch`` sessions are written at once; ``write`` must then be safe to run concurrently (two
    batches holding the same end: one stores it, the other finds it stored).
    """

    def __init__(self, write: BatchWrite, *, writers: int = 1, batch: int = MAX_BATCH) -> None:
        if writers < 1 or not 1 <= batch <= MAX_BATCH:
            raise ValueError(f"SaveBatcher: writers={writers}, batch={batch} (1 to {MAX_BATCH})")
        self._write = write
        self._max_writers = writers
        self._batch = batch
        self._queue: list[tuple[EndedSession, asyncio.Future[bool]]] = []
        self._writers: set[asyncio.Task[None]] = set()

    async def save(self, ended: EndedSession) -> bool:
        """Store one session with whatever else is waiting; True when newly stored."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((ended, future))
        # A writer that found the queue empty is done, though perhaps not yet discarded.
        if sum(not writer.done() for writer in self._writers) < self._max_writers:
            # Whichever writer is free first takes this save; a new one starts if one more may run.
            writer = asyncio.create_task(self._write_queued(), name="store batch writer")
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        # A caller that is cancelled stops waiting; its session is still written (idempotently).
        return await future

    async def wait_idle(self) -> None:
        """Wait until every queued save was written or failed (before the store closes)."""
        while running := [writer for writer in self._writers if not writer.done()]:
            await asyncio.wait(running)

    async def _write_queued(self) -> None:
        while self._queue:
            batch = self._queue[: self._batch]
            del self._queue[: self._batch]
            try:
                await self._settle(batch)
            except BaseException:
                # Cancelled (the event loop is going away): nobody will write what waits. Other
                # writers answer the batches they hold.
                for _, future in batch + self._queue:
                    future.cancel()
                self._queue.clear()
                raise

    async def _settle(self, batch: list[tuple[EndedSession, asyncio.Future[bool]]]) -> bool:
        """Write a batch and answer its callers; False when the database was unavailable."""
        sessions = [ended for ended, _ in batch]
        try:
            stored = await self._write(sessions)
        except StoreUnavailable as e:
            for _, future in batch:
                _fail(future, e)
            return False
        except Exception as e:
            if len(batch) == 1:
                _fail(batch[0][1], e)
                return True
            for i, single in enumerate(batch):  # find the session at fault; store the others
                if not await self._settle([single]):
                    error = StoreUnavailable("the database failed while the batch was retried")
                    for _, future in batch[i + 1 :]:
                        _fail(future, error)
                    return False
            return True
        for ended, future in batch:
            new = ended.end_id in stored
            stored.discard(ended.end_id)  # the same end twice in one batch: the first is new
            if not future.done():
                future.set_result(new)
        return True


def _fail(future: asyncio.Future[bool], error: Exception) -> None:
    if not future.done():
        future.set_exception(error)


def chunks(sessions: Sequence[EndedSession]) -> list[Sequence[EndedSession]]:
    """``sessions`` cut into statements of at most :data:`MAX_BATCH`."""
    return [sessions[i : i + MAX_BATCH] for i in range(0, len(sessions), MAX_BATCH)]
