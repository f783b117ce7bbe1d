"""The node's Socket.IO client manager over Redis: publishes pipelined in order, no idle work.

python-socketio's :class:`socketio.AsyncRedisManager` publishes every cross-node emit with its own
``await redis.publish(...)``: the emit returns one Redis round trip later, and the events of one
tracker, relayed under the tracker's lock (events of a connection are handled in order), leave at
most one per round trip. When the node or Redis is held up for a moment (a CPU shared with other
processes), the events that arrived meanwhile queue behind that lock and then leave one round
trip apart: a 5 ms hold-up became tens of milliseconds for the events behind it (P6,
docs/optimisations.md). Here:

- an emit puts its message in the node's outgoing list and returns; one publisher task sends
  everything listed in one pipelined write (one round trip for all of them), in the order the
  emits were made, so the events of a connection still reach the other nodes in order. What
  python-socketio does with a failed publish is kept: one retry on a new connection, then the
  message is logged as lost. An emit waits only while more than :data:`MAX_OUTGOING` messages are
  listed (Redis does not keep up), so the list cannot grow without bound;
- an emit that no client of this node is in the room of skips the local delivery (the relay's
  events go to agents on other nodes: python-socketio encodes the packet before it finds that);
- every node receives what it published itself, and python-socketio decodes each such message
  before it finds that it is its own: the relay's node decoded a thousand a second for nothing.
  Messages that end with this node's ``host_id`` (python-socketio writes it last in every message
  but a callback's, which names the node it goes back to) are dropped before they are decoded;
- a message for local clients is delivered as the live feed delivers its events
  (:func:`hub.websocket.deliver`):
  encoded once, and put straight into the outgoing buffer of each websocket with nothing queued,
  without a task per recipient, the connection's queue and writer task, and a wait for them all.
  The listener takes the next message in the same turn of the loop, and the frame leaves at the
  end of that turn instead of three or four turns later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import socketio
from redis.exceptions import RedisError

from hub.registry.redis_conn import stop_task
from hub.sio_manager import RoomsBySid
from hub.websocket import deliver

log = logging.getLogger(__name__)

# Messages listed for Redis above which an emit waits for the publisher to catch up.
MAX_OUTGOING = 10_000
# Seconds a stopping node waits for what it listed to be published.
FLUSH_TIMEOUT = 5.0
# Seconds the listener may deliver messages without letting the loop turn: the frames it put in
# the websockets' buffers leave at the next turn (hub/websocket.py), so a backlog of messages read
# from Redis at once is written out every millisecond, not only once all of it is delivered.
MAX_STRETCH = 0.001


class HubRedisManager(RoomsBySid, socketio.AsyncRedisManager):  # type: ignore[misc]
    """python-socketio's Redis manager with ordered, pipelined publishes (see the module)."""

    def __init__(self, url: str, channel: str) -> None:
        super().__init__(url, channel=channel)
        self.connected: bool = False  # python-socketio's: whether self.redis is set up
        self._outgoing: list[str] = []
        self._publisher: asyncio.Task[None] | None = None
        self._caught_up = asyncio.Event()
        self._caught_up.set()
        self._stretch_began: float | None = None  # loop time of the first delivery since a turn

    async def _publish(self, data: Any) -> None:
        """List one message for Redis; the publisher sends it with whatever else is listed."""
        self._outgoing.append(self.json.dumps(data))
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.get_running_loop().create_task(
                self._send_outgoing(), name="socket.io publisher"
            )
        if len(self._outgoing) > MAX_OUTGOING:
            self._caught_up.clear()
            await self._caught_up.wait()

    async def close(self) -> None:
        """At a node's stop: publish what is listed (FLUSH_TIMEOUT at most), stop listening, and
        close the Redis connections (python-socketio's manager leaves them open)."""
        task = self._publisher
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), FLUSH_TIMEOUT)
            except TimeoutError:
                log.warning("%d cross-node emits were not published in time", len(self._outgoing))
        listener: asyncio.Task[None] | None = getattr(self, "thread", None)
        if listener is not None:
            await stop_task(listener)
        if self.pubsub is not None:
            await self.pubsub.aclose()
        if self.redis is not None:
            await self.redis.aclose()

    async def _send_outgoing(self) -> None:
        try:
            while self._outgoing:
                batch, self._outgoing = self._outgoing, []
                await self._send(batch)
                if len(self._outgoing) <= MAX_OUTGOING:
                    self._caught_up.set()
        finally:
            self._caught_up.set()

    async def _send(self, batch: list[str]) -> None:
        """One pipelined write of ``batch``; retried once on a new connection, then logged."""
        for attempt in (1, 2):
            try:
                if not self.connected:
                    self._redis_connect()
                pipe = self.redis.pipeline(transaction=False)
                for message in batch:
                    pipe.publish(self.channel, message)
                await pipe.execute()
                return
            except (RedisError, OSError) as e:
                if attempt == 1:
                    log.error("cannot publish to Redis (%s); retrying", e)
                    self.connected = False
                else:
                    log.error(
                        "cannot publish to Redis (%s); %d cross-node emits lost", e, len(batch)
                    )

    async def _listen(self) -> AsyncIterator[Any]:
        own = self.json.dumps({"host_id": self.host_id})[1:].encode()  # '"host_id": "…"}'
        async for message in super()._listen():
            if isinstance(message, bytes) and message.endswith(own):
                continue  # this node's own message: python-socketio would ignore it decoded
            yield message

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        callback = message.get("callback")
        if callback is not None or message.get("binary"):
            await super()._handle_emit(message)  # rare: python-socketio's own path
            return
        namespace = message.get("namespace") or "/"
        if namespace not in self.rooms:
            return
        skip = message.get("skip_sid")
        skip_sids = skip if isinstance(skip, list) else [skip]
        targets = [
            eio_sid
            for sid, eio_sid in self.get_participants(namespace, message.get("room"))
            if sid not in skip_sids
        ]
        if not targets:
            return
        data = message["data"]
        # As python-socketio unpacks it: one None argument (an emit of None) is no argument.
        args = [] if len(data) == 1 and data[0] is None else list(data)
        deliver(self.server, namespace, [message["event"], *args], targets)
        loop = asyncio.get_running_loop()
        if self._stretch_began is None:
            self._stretch_began = loop.time()
            loop.call_soon(self._turned)
        elif loop.time() - self._stretch_began > MAX_STRETCH:
            await asyncio.sleep(0)  # the buffers are written (and the stretch ends) first

    def _turned(self) -> None:
        self._stretch_began = None
