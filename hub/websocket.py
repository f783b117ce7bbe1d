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
import time
from collections.abc import Iterable
from typing import Any

import engineio
from aiohttp import web
from engineio import packet
from engineio.async_drivers import aiohttp as eio_aiohttp
from engineio.async_socket import AsyncSocket
from socketio import packet as sio_packet

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


# The request headers an environ carries (WSGI names): those python-engineio reads (CORS, the
# upgrade, a polling body) and those the connect handlers read (hub/tracker.py: the client's
# address and browser). The whole request stays reachable as ``environ["aiohttp.request"]``.
ENVIRON_HEADERS = {
    "Host": "HTTP_HOST",
    "Origin": "HTTP_ORIGIN",
    "Upgrade": "HTTP_UPGRADE",
    "Connection": "HTTP_CONNECTION",
    "User-Agent": "HTTP_USER_AGENT",
    "X-Forwarded-For": "HTTP_X_FORWARDED_FOR",
    "X-Forwarded-Proto": "HTTP_X_FORWARDED_PROTO",
    "X-Forwarded-Host": "HTTP_X_FORWARDED_HOST",
    "Content-Length": "CONTENT_LENGTH",
    "Accept-Encoding": "HTTP_ACCEPT_ENCODING",
    "Access-Control-Request-Headers": "HTTP_ACCESS_CONTROL_REQUEST_HEADERS",
}


def translate_request(request: web.Request) -> dict[str, Any]:
    """The WSGI-style environ of a request, with what is read of it only.

    python-socketio keeps a connection's environ for its whole life; python-engineio's own
    translation copies every header under a new name and adds fields nothing reads (about 1.3 KB
    a connection). A header sent more than once is joined with commas, as WSGI does.
    """
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        # Still percent-encoded, as WSGI has it: aiohttp's query_string is decoded already, and
        # the handlers' parse_qs decodes it (a second decoding turned "%48" into "H").
        "QUERY_STRING": request.rel_url.raw_query_string,
        "wsgi.input": request.content,
        "aiohttp.request": request,
    }
    headers = request.headers
    for name, key in ENVIRON_HEADERS.items():
        if name in headers:
            values = headers.getall(name)
            environ[key] = values[0] if len(values) == 1 else ",".join(values)
    environ["wsgi.url_scheme"] = environ.get("HTTP_X_FORWARDED_PROTO", "http")
    return environ


class SocketQueue:
    """A connection's packet queue: unbounded, FIFO, with ``task_done``/``join``, as python-engineio
    uses ``asyncio.Queue``, and small, since every connection holds one for its whole life.

    ``asyncio.Queue`` holds three deques and an ``asyncio.Event`` with a fourth: about 3 KB per
    connection (docs/optimisations.md, P1), though a connection's queue is nearly always empty
    with its one writer waiting. Lists (56 bytes empty) do here, and the ``join`` future exists
    only while someone joins. :meth:`get` hands out a future, not a coroutine: python-engineio
    waits through ``asyncio.wait_for``, which runs a coroutine in a task of its own (another
    0.5 KB held while the writer waits) but awaits a future as it is. A packet put while a getter
    waits is handed to that getter's future directly, so the order stays first in, first out.

    It also knows how many packets it has not handed over yet (:attr:`unsent`): python-engineio's
    ``poll`` calls ``task_done`` for every packet it takes (``close`` waits on ``join``); until
    then the packet is queued or on its way to the writer.
    """

    __slots__ = ("_getters", "_items", "_joiners", "unsent")

    def __init__(self) -> None:
        self._items: list[Any] = []  # only while no getter waits
        self._getters: list[asyncio.Future[Any]] = []
        self._joiners: list[asyncio.Future[None]] | None = None
        self.unsent = 0

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return False

    def put_nowait(self, item: Any) -> None:
        self.unsent += 1
        getters = self._getters
        while getters:
            getter = getters.pop(0)
            if not getter.done():  # not cancelled (a timeout of its wait_for)
                getter.set_result(item)
                return
        self._items.append(item)

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.pop(0)

    def get(self) -> asyncio.Future[Any]:
        """A future of the next packet: done already when one is queued."""
        getter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._items:
            getter.set_result(self._items.pop(0))
        else:
            if self._getters:  # drop the getters whose wait was given up
                self._getters = [g for g in self._getters if not g.done()]
            self._getters.append(getter)
        return getter

    def task_done(self) -> None:
        if self.unsent <= 0:
            raise ValueError("task_done() called too many times")
        self.unsent -= 1
        if self.unsent == 0 and self._joiners is not None:
            joiners, self._joiners = self._joiners, None
            for joiner in joiners:
                if not joiner.done():
                    joiner.set_result(None)

    async def join(self) -> None:
        if self.unsent > 0:
            joiner = asyncio.get_running_loop().create_future()
            if self._joiners is None:
                self._joiners = []
            self._joiners.append(joiner)
            await joiner


class HubEngineIO(engineio.AsyncServer):  # type: ignore[misc]
    """The node's Engine.IO server: counting queues, and each connection's hub websocket."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        drivers: dict[str, Any] = self._async  # type: ignore[has-type]
        self._async = dict(drivers, translate_request=translate_request)
        self.websockets: dict[str, HubWebSocket] = {}  # Engine.IO sid → its websocket
        self._dirty: list[HubWebSocket] = []
        self._flush_scheduled = False
        # Websockets opened by a request still in python-engineio's hands (id of the request).
        self._opened: dict[int, HubWebSocket] = {}

    async def handle_request(self, request: web.Request) -> web.StreamResponse:
        """python-engineio's request handling; a hub websocket's life runs after it returned.

        python-engineio runs a websocket inside its request handling, five calls deep, each
        keeping the request's environ, its parsed query and their own frame alive for as long as
        the connection lasts (about 2 KB; docs/optimisations.md, P1). :class:`HubWebSocket` only
        opens the websocket there and returns; its life runs here, where nothing else is kept.
        """
        try:
            response = await super().handle_request(request)
        finally:
            ws = self._opened.pop(id(request), None)
        if ws is not None:
            # The connection's life: python-engineio's websocket handler, until it ends (here,
            # not in a method of the websocket: one frame fewer kept for as long).
            socket = ws.socket
            sid: str | None = getattr(socket, "sid", None)
            registered = sid is not None and self.websockets.setdefault(sid, ws) is ws
            try:
                await ws.handler(ws)
            finally:
                ws.ended()
                if registered and sid is not None and self.websockets.get(sid) is ws:
                    del self.websockets[sid]
            # What python-engineio does when a websocket it ran has ended.
            if sid is not None and socket.closed and self.sockets.get(sid) is socket:
                del self.sockets[sid]
        return response  # type: ignore[no-any-return]

    def start_background_task(self, target: Any, *args: Any, **kwargs: Any) -> Any:
        """python-engineio's, but a socket's next ping waits on a timer, not in a task.

        After each PONG python-engineio starts a task that sleeps for the ping interval, then
        sends PING: a task, its frame and its sleep held by every connection nearly all the
        time (about 0.8 KB). A timer does the wait; the PING is sent as that task would.
        """
        if getattr(target, "__func__", None) is AsyncSocket._send_ping and not args and not kwargs:
            loop = asyncio.get_running_loop()
            return loop.call_later(self.ping_interval, self._ping, target.__self__)
        return super().start_background_task(target, *args, **kwargs)

    def _ping(self, socket: AsyncSocket) -> None:
        """What ``AsyncSocket._send_ping`` does once its sleep is over."""
        if not socket.closing and not socket.closed:
            socket.last_ping = time.time()
            super().start_background_task(socket.send, packet.Packet(packet.PING))

    def create_queue(self, *args: Any, **kwargs: Any) -> SocketQueue | asyncio.Queue[Any]:
        return SocketQueue() if not args and not kwargs else asyncio.Queue(*args, **kwargs)

    def use_hub_websocket(self) -> None:
        """Serve websockets with :class:`HubWebSocket` (uncompressed)."""
        self._async = dict(self._async, websocket=HubWebSocket)

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
        # What :meth:`idle` asks of this websocket's own state, in one flag kept where it changes:
        # open, not draining, upgraded, and at most DRAIN_ABOVE bytes left in the transport when
        # it was last written. False also means "not known yet": :meth:`_recheck` looks again.
        self._ready = False

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        """Open the websocket; :meth:`HubEngineIO.handle_request` then runs the connection."""
        request: web.Request = environ["aiohttp.request"]
        self._sock = web.WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, compress=False
        )
        await self._sock.prepare(request)
        self._transport = request.transport
        self.server._opened[id(request)] = self
        return self._sock

    def idle(self) -> bool:
        """Whether a frame pushed now follows every packet sent to this connection before it."""
        if not self._ready and not self._recheck():
            return False
        socket = self.socket
        return not socket.closed and socket.queue.unsent == 0 and not self._sock.closed

    def _recheck(self) -> bool:
        """Look at the slow-changing state again: the live feed asks for every frame it sends.

        Once upgraded, a socket stays upgraded and never upgrades again; a websocket closed stays
        closed; only :meth:`flush` fills the transport past DRAIN_ABOVE (a draining send holds
        ``_draining``), so the transport's buffer is looked at here until it has drained.
        """
        socket, transport = self.socket, self._transport
        self._ready = (
            not self._closed
            and not self._draining
            and transport is not None
            and socket.upgraded
            and not socket.upgrading
            and transport.get_write_buffer_size() <= DRAIN_ABOVE
        )
        return self._ready

    def push(self, data: bytes) -> None:
        """Buffer one ready frame (see :func:`frame`); only while :meth:`idle`."""
        if not self._out:
            self.server.mark(self)
        self._out.append(data)

    def offer(self, data: bytes) -> bool:
        """:meth:`push` ``data`` if :meth:`idle`, in one call; whether it was pushed.

        The live feed calls it for each of its subscribers, so it is :meth:`idle` and :meth:`push`
        written out. A websocket aiohttp has closed still takes the frame: :meth:`flush` drops it,
        as the writer would have dropped a queued packet.
        """
        if not self._ready and not self._recheck():
            return False
        socket = self.socket
        if socket.closed or socket.queue.unsent:
            return False
        out = self._out
        if not out:
            self.server.mark(self)
        out.append(data)
        return True

    async def send(self, message: str | bytes) -> None:
        """Called by python-engineio's writer for each packet, in order."""
        if self._closed or self._sock.closed:
            raise ConnectionResetError("the websocket is closed")
        transport = self._transport
        if transport is not None and transport.get_write_buffer_size() > DRAIN_ABOVE:
            # A client that does not keep up: write what is buffered, then let aiohttp's own
            # send wait for the transport to drain, so the writer (and the queue) wait too.
            self.flush()
            self._draining, self._ready = True, False
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
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        transport = self._transport
        if transport is not None and not transport.is_closing() and not self._sock.closed:
            transport.write(data)
            if self._ready and transport.get_write_buffer_size() > DRAIN_ABOVE:
                self._ready = False  # a client that does not keep up: the queue until it drains

    def ended(self) -> None:
        """The connection's handler returned: what is buffered goes, nothing more is pushed."""
        self.flush()
        self._closed, self._ready = True, False

    async def close(self) -> None:
        self.flush()
        self._closed, self._ready = True, False
        await self._sock.close()


def deliver(sio: Any, namespace: str, data: list[Any], eio_sids: Iterable[str]) -> None:
    """Send one Socket.IO event (``data``: its name, then its arguments) in ``namespace`` to each
    connection in ``eio_sids``, encoded once.

    A websocket with nothing queued gets the frame, built once, straight into its outgoing buffer
    (written at the end of this turn of the loop); any other connection gets the packets through
    its queue and writer, as python-engineio's ``send`` does.
    The live feed (hub/livefeed.py) and the Redis manager's cross-node emits (hub/pubsub.py) both
    deliver this way: no task, queue or encoding per recipient.
    """
    encoded = sio.packet_class(sio_packet.EVENT, namespace=namespace, data=data).encode()
    parts = encoded if isinstance(encoded, list) else [encoded]
    packets = [packet.Packet(packet.MESSAGE, part) for part in parts]
    # Binary attachments travel as several frames: those keep the queue.
    wire = frame(packets[0].encode()) if len(packets) == 1 else None
    eio = sio.eio
    sockets = eio.sockets
    websockets = getattr(eio, "websockets", {})
    for eio_sid in eio_sids:
        ws = websockets.get(eio_sid)
        if wire is not None and ws is not None and ws.offer(wire):
            continue
        socket = sockets.get(eio_sid)
        if socket is None or socket.closed:
            continue
        for item in packets:
            socket.queue.put_nowait(item)  # what engineio's socket.send does
