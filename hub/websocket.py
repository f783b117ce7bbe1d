"""The Engine.IO websocket transport of a node: uncompressed, batched, and open to the live feed.

python-engineio gives every connection a queue and a writer task that sends each packet with its
own ``await``; aiohttp then writes each frame with its own system call. At the live feed's
fan-out (a thousand subscribers, a hundred changes a second) that per-packet path was most of the
node's CPU. Here:

- every frame a websocket sends is put in its outgoing buffer, and one loop callback writes the
  buffers of all the websockets that have something, one ``transport.write`` each: the frames a
  connection gets in one turn of the loop leave in one system call;
- the live feed puts its frames straight into that buffer (:meth:`HubWebSocket.push`), built once
  for every subscriber, instead of through the connection's queue and writer, but only while the
  connection is :meth:`HubWebSocket.idle`: nothing queued or on its way to the buffer, so a pushed
  frame never overtakes a packet sent before it. Otherwise it goes through the queue as before.

Polling connections never get here: they keep python-engineio's own path. Compression
(``HUB_WS_COMPRESSION``) keeps python-engineio's websocket, since a deflated stream is not
framed by hand. docs/architecture.md ("Live feed delivery") has the reasoning.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import engineio
from aiohttp import web
from engineio.async_drivers import aiohttp as eio_aiohttp

# Above this many bytes waiting in the transport (a client that does not read), a send waits for
# it to drain, as aiohttp's own send does; the live feed then uses the queue.
DRAIN_ABOVE = 256 * 1024

_TEXT, _BINARY = 0x1, 0x2
_FIN = 0x80


def frame(message: str | bytes) -> bytes:
    """One unmasked, unfragmented websocket frame (RFC 6455 §5.2): what a server sends."""
    if isinstance(message, str):
        payload, opcode = message.encode(), _TEXT
    else:
        payload, opcode = bytes(message), _BINARY
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", _FIN | opcode, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", _FIN | opcode, 126, size)
    else:
        header = struct.pack("!BBQ", _FIN | opcode, 127, size)
    return header + payload


class SocketQueue(asyncio.Queue[Any]):
    """A connection's packet queue that knows how many packets it has not handed over yet.

    python-engineio's ``poll`` calls ``task_done`` for every packet it takes (``close`` waits on
    ``join``); until then the packet is queued or on its way to the writer.
    """

    def __init__(self) -> None:
        super().__init__()
        self.unsent = 0

    def put_nowait(self, item: Any) -> None:
        super().put_nowait(item)
        self.unsent += 1

    def task_done(self) -> None:
        super().task_done()
        self.unsent -= 1


class HubEngineIO(engineio.AsyncServer):  # type: ignore[misc]
    """The node's Engine.IO server: counting queues, and each connection's hub websocket."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.websockets: dict[str, HubWebSocket] = {}  # Engine.IO sid → its websocket
        self._dirty: list[HubWebSocket] = []
        self._flush_scheduled = False

    def create_queue(self, *args: Any, **kwargs: Any) -> asyncio.Queue[Any]:
        return SocketQueue() if not args and not kwargs else asyncio.Queue(*args, **kwargs)

    def use_hub_websocket(self) -> None:
        """Serve websockets with :class:`HubWebSocket` (uncompressed)."""
        self._async = dict(self._async, websocket=HubWebSocket)  # type: ignore[has-type]

    def websocket(self, eio_sid: str) -> HubWebSocket | None:
        return self.websockets.get(eio_sid)

    def mark(self, ws: HubWebSocket) -> None:
        """Write ``ws``'s buffer at the loop's next turn, with every other buffer that has data."""
        self._dirty.append(ws)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for ws in dirty:
            ws.flush()


class HubWebSocket(eio_aiohttp.WebSocket):  # type: ignore[misc]
    """python-engineio's aiohttp websocket without per-message deflate, written in batches.

    Compression costs about 90 KB per connection (docs/benchmarks.md); the events of a live
    session are small, so it is off unless HUB_WS_COMPRESSION is set.
    """

    def __init__(self, handler: Any, server: HubEngineIO) -> None:
        super().__init__(handler, server)
        # The Engine.IO socket whose websocket handler this runs.
        self.socket: Any = getattr(handler, "__self__", None)
        self._out: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._draining = False  # a send waits for the transport to drain
        self._closed = False

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        request: web.Request = environ["aiohttp.request"]
        self._sock = web.WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, compress=False
        )
        await self._sock.prepare(request)
        self._transport = request.transport
        self.environ = environ
        sid = getattr(self.socket, "sid", None)
        registered = sid is not None and self.server.websockets.setdefault(sid, self) is self
        try:
            await self.handler(self)
        finally:
            self.flush()
            self._closed = True
            if registered and self.server.websockets.get(sid) is self:
                del self.server.websockets[sid]
        return self._sock

    def idle(self) -> bool:
        """Whether a frame pushed now follows every packet sent to this connection before it."""
        socket, transport = self.socket, self._transport
        return (
            not self._closed
            and transport is not None
            and transport.get_write_buffer_size() <= DRAIN_ABOVE
            and not self._draining
            and socket.upgraded
            and not socket.upgrading
            and not socket.closed
            and socket.queue.unsent == 0
            and not self._sock.closed
        )

    def push(self, data: bytes) -> None:
        """Buffer one ready frame (see :func:`frame`); only while :meth:`idle`."""
        if not self._out:
            self.server.mark(self)
        self._out.append(data)

    async def send(self, message: str | bytes) -> None:
        """Called by python-engineio's writer for each packet, in order."""
        if self._closed or self._sock.closed:
            raise ConnectionResetError("the websocket is closed")
        transport = self._transport
        if transport is not None and transport.get_write_buffer_size() > DRAIN_ABOVE:
            # A client that does not keep up: write what is buffered, then let aiohttp's own
            # send wait for the transport to drain, so the writer (and the queue) wait too.
            self.flush()
            self._draining = True
            try:
                if isinstance(message, str):
                    await self._sock.send_str(message)
                else:
                    await self._sock.send_bytes(message)
            finally:
                self._draining = False
            return
        self.push(frame(message))

    def flush(self) -> None:
        """Write the buffered frames in one system call; dropped if the connection is gone."""
        if not self._out:
            return
        data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out.clear()
        transport = self._transport
        if transport is not None and not transport.is_closing() and not self._sock.closed:
            transport.write(data)

    async def close(self) -> None:
        self.flush()
        self._closed = True
        await self._sock.close()
