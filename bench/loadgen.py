"""A light Socket.IO 5 / Engine.IO 4 client over aiohttp websockets, for load generation.

python-socketio's ``AsyncClient`` costs a few tasks, an Engine.IO client object and a queue per
connection, and is slow to open by the thousand. This client does only what a load test needs:
the websocket transport (no polling, no upgrade), one namespace per connection, events with and
without acks, the server's pings answered, the JSON or the msgpack serializer. One reader task
per connection; ten thousand connections fit in one process (each holds one file descriptor).

``tests/test_loadgen.py`` holds it to python-socketio's client against a real hub.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlencode

import aiohttp
import msgpack  # type: ignore[import-untyped]

# Engine.IO packet types (text frames) and Socket.IO packet types (inside MESSAGE).
_EIO_OPEN, _EIO_CLOSE, _EIO_PING, _EIO_PONG, _EIO_MESSAGE = "0", "1", "2", "3", "4"
CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR = 0, 1, 2, 3, 4

EventHandler = Callable[[str, list[Any]], None]
# Sees each text MESSAGE frame's Socket.IO packet before it is decoded; True means "taken, skip
# it". A subscriber receiving thousands of events a second reads what it needs without json.
RawHandler = Callable[[str], bool]


class ConnectError(Exception):
    """The server refused the connection (``connect_error``) or it failed on the way."""

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.data = data


def encode_text(kind: int, namespace: str, data: Any = None, ack_id: int | None = None) -> str:
    """A Socket.IO packet in the default (JSON) encoding, as an Engine.IO MESSAGE."""
    out = _EIO_MESSAGE + str(kind)
    if namespace != "/":
        out += namespace + ","
    if ack_id is not None:
        out += str(ack_id)
    if data is not None:
        out += json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return out


def decode_text(packet: str) -> tuple[int, str, int | None, Any]:
    """Type, namespace, ack id and data of a Socket.IO packet (without the Engine.IO ``4``)."""
    kind = int(packet[0])
    rest = packet[1:]
    namespace = "/"
    if rest.startswith("/"):
        end = rest.find(",")
        namespace, rest = (rest, "") if end < 0 else (rest[:end], rest[end + 1 :])
    digits = 0
    while digits < len(rest) and rest[digits].isdigit():
        digits += 1
    ack_id = int(rest[:digits]) if digits else None
    body = rest[digits:]
    return kind, namespace, ack_id, json.loads(body) if body else None


def encode_msgpack(kind: int, namespace: str, data: Any = None, ack_id: int | None = None) -> bytes:
    """A Socket.IO packet in the msgpack encoding (a binary Engine.IO message)."""
    packet: dict[str, Any] = {"type": kind, "data": data, "nsp": namespace}
    if ack_id is not None:
        packet["id"] = ack_id
    return msgpack.packb(packet)  # type: ignore[no-any-return]


def decode_msgpack(frame: bytes) -> tuple[int, str, int | None, Any]:
    packet = msgpack.unpackb(frame)
    return int(packet["type"]), str(packet.get("nsp") or "/"), packet.get("id"), packet.get("data")


class SioClient:
    """One Socket.IO connection to one namespace, over a websocket.

    ``handler(event, args)`` is called for every event the server sends, synchronously in the
    reader task (keep it short); ``raw`` may take text packets before they are decoded.
    ``serializer`` is ``"json"`` or ``"msgpack"`` (the server's
    ``HUB_SOCKET_SERIALIZER``).
    """

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        *,
        path: str = "/ws-assist/socket",
        query: dict[str, str] | None = None,
        namespace: str = "/",
        auth: Any = None,
        serializer: str = "json",
        handler: EventHandler | None = None,
        headers: dict[str, str] | None = None,
        raw: RawHandler | None = None,
    ) -> None:
        if serializer not in ("json", "msgpack"):
            raise ValueError(f"serializer must be json or msgpack, got {serializer!r}")
        params = {**(query or {}), "EIO": "4", "transport": "websocket"}
        base = url.replace("http://", "ws://", 1).replace("https://", "wss://", 1).rstrip("/")
        self.target = f"{base}{path.rstrip('/')}/?{urlencode(params)}"
        self.namespace = namespace
        self.auth = auth
        self.handler = handler
        self.raw = raw
        self.sid: str | None = None
        self.pings = 0
        self.connected = False
        self.closed_reason: str | None = None
        self._http = http
        self._headers = headers
        self._msgpack = serializer == "msgpack"
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._acks: dict[int, asyncio.Future[list[Any]]] = {}
        self._ids = itertools.count()
        self._ready: asyncio.Future[None] | None = None
        self.ping_seen: asyncio.Event | None = None

    async def connect(self, timeout: float = 10.0) -> None:
        """Open the websocket and join the namespace; ConnectError when refused."""
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                self._ws = await self._http.ws_connect(
                    self.target, headers=self._headers, autoping=False, max_msg_size=0
                )
                self._reader = loop.create_task(self._read())
                await self._ready
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            await self.close()
            raise ConnectError(f"{type(e).__name__}: {e}") from e
        except ConnectError:
            await self.close()
            raise

    async def emit(self, event: str, *args: Any) -> None:
        """Send an event without an ack."""
        await self._send(EVENT, [event, *args])

    async def call(self, event: str, *args: Any, timeout: float = 10.0) -> Any:
        """Send an event with an ack and return the ack's first argument."""
        ack_id = next(self._ids)
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._acks[ack_id] = future
        try:
            await self._send(EVENT, [event, *args], ack_id)
            async with asyncio.timeout(timeout):
                answer = await future
        finally:
            self._acks.pop(ack_id, None)
        return answer[0] if answer else None

    async def close(self) -> None:
        """Leave the namespace and close the websocket (idempotent)."""
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            if self.connected:
                try:
                    await self._send_on(ws, DISCONNECT, None)
                except (ConnectionError, RuntimeError, aiohttp.ClientError):
                    pass
            await ws.close()
        self.connected = False
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                # Re-raise when it is this task that is being cancelled, not only the reader.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
            self._reader = None

    async def _send(self, kind: int, data: Any, ack_id: int | None = None) -> None:
        if self._ws is None:
            raise ConnectionError("not connected")
        await self._send_on(self._ws, kind, data, ack_id)

    async def _send_on(
        self, ws: aiohttp.ClientWebSocketResponse, kind: int, data: Any, ack_id: int | None = None
    ) -> None:
        if self._msgpack:
            await ws.send_bytes(encode_msgpack(kind, self.namespace, data, ack_id))
        else:
            await ws.send_str(encode_text(kind, self.namespace, data, ack_id))

    async def _read(self) -> None:
        ws = self._ws
        assert ws is not None
        reason = "transport closed"
        try:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    text: str = msg.data
                    kind = text[:1]
                    if kind == _EIO_PING:
                        self.pings += 1
                        await ws.send_str(_EIO_PONG)
                        if self.ping_seen is not None:
                            self.ping_seen.set()
                    elif kind == _EIO_MESSAGE:
                        if self.raw is None or not self.raw(text[1:]):
                            await self._packet(*decode_text(text[1:]))
                    elif kind == _EIO_OPEN:
                        await self._opened(json.loads(text[1:]))
                    elif kind == _EIO_CLOSE:
                        reason = "server closed"
                        break
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    await self._packet(*decode_msgpack(msg.data))
                else:
                    break
        finally:
            self.connected = False
            self.closed_reason = self.closed_reason or reason
            self._fail(ConnectError(self.closed_reason))

    async def _opened(self, handshake: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._send_on(self._ws, CONNECT, self.auth)

    async def _packet(self, kind: int, namespace: str, ack_id: int | None, data: Any) -> None:
        if namespace != self.namespace:
            return
        if kind == EVENT and isinstance(data, list) and data:
            if self.handler is not None:
                self.handler(str(data[0]), data[1:])
        elif kind == ACK and ack_id is not None:
            future = self._acks.get(ack_id)
            if future is not None and not future.done():
                future.set_result(data if isinstance(data, list) else [data])
        elif kind == CONNECT:
            self.sid = data.get("sid") if isinstance(data, dict) else None
            self.connected = True
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
        elif kind == CONNECT_ERROR:
            message = data.get("message", "") if isinstance(data, dict) else str(data)
            self.closed_reason = f"connect_error: {message}"
            if self._ready is not None and not self._ready.done():
                self._ready.set_exception(ConnectError(str(message), data))
        elif kind == DISCONNECT:
            self.connected = False
            self.closed_reason = "server disconnected"
            if self._ws is not None:
                await self._ws.close()

    def _fail(self, error: ConnectError) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
        for future in self._acks.values():
            if not future.done():
                future.set_exception(error)


def client_session() -> aiohttp.ClientSession:
    """An HTTP session for many websockets: no connection cap, no per-host cap."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True))


async def connect_all(
    clients: Iterable[SioClient], concurrency: int = 200, timeout: float = 30.0
) -> list[BaseException | None]:
    """Connect clients with at most ``concurrency`` handshakes in flight; one error (or None) each.

    A refused or failed connect is reported, not retried: the caller counts them.
    """
    gate = asyncio.Semaphore(concurrency)

    async def one(client: SioClient) -> BaseException | None:
        async with gate:
            try:
                await client.connect(timeout)
            except ConnectError as e:
                return e
        return None

    return await asyncio.gather(*(one(c) for c in clients))


async def close_all(clients: Iterable[SioClient], concurrency: int = 500) -> None:
    """Close clients, a bounded number at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(client: SioClient) -> None:
        async with gate:
            await client.close()

    await asyncio.gather(*(one(c) for c in clients))
