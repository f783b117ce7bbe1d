"""Calls of one Lua script made at the same time, sent to Redis in one round trip.

When hundreds of trackers connect at once, each join is a script call of its own. Sent one by one,
every call pays a round trip: a socket write, a wake-up on the reply, and redis-py's work around
one command, which costs the node more CPU than the script costs Redis. A :class:`ScriptBatcher`
sends the first call at once; calls that arrive while a round trip is under way, or within
:data:`SPACING` of its start, wait and go together in the next one, as one pipeline (not a
transaction: each script stays its own atomic step, run in the order the calls were made). A lone
call goes out within one turn of the event loop, so nothing waits when nothing else is going on.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

MOST_PER_ROUND_TRIP = 500  # calls sent in one pipeline at most (the rest go in the next)
# While calls keep coming, round trips start at least this far apart (seconds), so that a steady
# stream of calls (a thousand joins a second) goes in a few calls per round trip, not one by one.
# A call that finds no round trip in the last SPACING goes at once.
SPACING = 0.002

Arg = str | int
_Call = tuple[Sequence[str], Sequence[Arg], "asyncio.Future[Any]"]


class ScriptBatcher:
    """Runs calls of ``script`` as the script would, sending those that arrive together at once."""

    def __init__(
        self,
        redis: Redis,
        script: AsyncScript,
        most: int = MOST_PER_ROUND_TRIP,
        spacing: float = SPACING,
    ) -> None:
        self._redis = redis
        self._script = script
        self._most = most
        self._spacing = spacing
        self._last_sent = float("-inf")  # loop time of the last round trip's start
        self._queue: deque[_Call] = deque()
        self._sender: asyncio.Task[None] | None = None

    async def __call__(self, keys: Sequence[str] = (), args: Sequence[Arg] = ()) -> Any:
        """The script's reply; its error (a RedisError) when it or the round trip failed."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((keys, args, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send(), name="redis script batch")
        return await future

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            wait = self._last_sent + self._spacing - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # more calls join this round trip meanwhile
            self._last_sent = loop.time()
            batch: list[_Call] = []
            while self._queue and len(batch) < self._most:
                call = self._queue.popleft()
                if not call[2].cancelled():  # a caller that gave up before it was sent
                    batch.append(call)
            if not batch:
                continue
            try:
                replies = await self._run(batch)
            except asyncio.CancelledError:
                _fail(batch, asyncio.CancelledError())
                _fail(list(self._queue), asyncio.CancelledError())
                self._queue.clear()
                raise
            except Exception as e:
                _fail(batch, e)
                continue
            for (_, _, future), reply in zip(batch, replies, strict=True):
                if future.done():
                    continue
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    async def _run(self, batch: list[_Call]) -> list[Any]:
        script = self._script
        if len(batch) == 1:
            keys, args, _ = batch[0]
            try:
                return [await script(keys=keys, args=args)]
            except NoScriptError as e:  # pragma: no cover - AsyncScript reloads by itself
                return [e]
        replies = await self._pipeline(batch)
        forgotten = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if forgotten:
            # Redis restarted and forgot the script: load it again and resend those calls.
            script.sha = await self._redis.script_load(script.script)
            again = await self._pipeline([batch[i] for i in forgotten])
            for i, reply in zip(forgotten, again, strict=True):
                replies[i] = reply
        return replies

    async def _pipeline(self, batch: list[_Call]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        sha = self._script.sha
        # The command itself: redis-py's ``evalsha`` checks its arguments for deprecated names
        # on every call, a good part of its cost per queued call.
        queue = pipe.execute_command
        for keys, args, _ in batch:
            queue("EVALSHA", sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


def _fail(batch: list[_Call], error: BaseException) -> None:
    for _, _, future in batch:
        if not future.done():
            if isinstance(error, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(error)
