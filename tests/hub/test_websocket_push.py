"""When the live feed may put a frame straight into a websocket's buffer (hub/websocket.py).

:meth:`HubWebSocket.offer` is :meth:`~HubWebSocket.idle` and :meth:`~HubWebSocket.push` in one
call, with the websocket's slow-changing state kept in one flag: these tests change each part of
that state and check that a frame is taken only while it cannot overtake a packet sent before it.
tests/hub/test_livefeed_delivery.py checks the same end to end.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from bidict import bidict

from hub.livefeed import NAMESPACE, LiveFeed
from hub.websocket import DRAIN_ABOVE, HubEngineIO, HubWebSocket, SocketQueue


class Transport:
    """A transport whose unsent bytes the test sets."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.buffered = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing


class Socket:
    """The parts of python-engineio's socket a hub websocket reads."""

    def __init__(self) -> None:
        self.upgraded = True
        self.upgrading = False
        self.closed = False
        self.queue = SocketQueue()

    async def _websocket_handler(self, ws: Any) -> None:
        pass


def websocket(server: HubEngineIO) -> tuple[HubWebSocket, Socket, Transport]:
    socket, transport = Socket(), Transport()
    ws = HubWebSocket(socket._websocket_handler, server)
    ws._transport = transport  # type: ignore[assignment]
    ws._sock = SimpleNamespace(closed=False)  # type: ignore[assignment]  # what __call__ opens
    return ws, socket, transport


async def turn() -> None:
    await asyncio.sleep(0)  # the flush of the buffers runs at the loop's next turn


async def test_an_idle_websocket_takes_frames_and_writes_them_in_one_call() -> None:
    ws, _, transport = websocket(HubEngineIO(async_mode="aiohttp"))
    assert ws.idle()
    assert ws.offer(b"a") and ws.offer(b"b")
    assert transport.written == []
    await turn()
    assert transport.written == [b"ab"]


async def test_a_frame_waits_behind_a_queued_packet_and_during_an_upgrade() -> None:
    ws, socket, transport = websocket(HubEngineIO(async_mode="aiohttp"))
    assert ws.offer(b"a")
    socket.queue.put_nowait("packet")  # sent before: the frame must not overtake it
    assert not ws.idle() and not ws.offer(b"b")
    socket.queue.get_nowait()
    socket.queue.task_done()
    assert ws.idle() and ws.offer(b"c")
    await turn()
    assert transport.written == [b"ac"]

    ws, socket, transport = websocket(HubEngineIO(async_mode="aiohttp"))
    socket.upgraded, socket.upgrading = False, True
    assert not ws.idle() and not ws.offer(b"a")
    socket.upgraded, socket.upgrading = True, False
    assert ws.offer(b"b")
    await turn()
    assert transport.written == [b"b"]


async def test_a_client_that_does_not_read_gets_the_queue_until_its_transport_drained() -> None:
    ws, _, transport = websocket(HubEngineIO(async_mode="aiohttp"))
    assert ws.offer(b"a")
    transport.buffered = DRAIN_ABOVE + 1  # what the write leaves unsent
    await turn()
    assert not ws.idle() and not ws.offer(b"b")
    transport.buffered = DRAIN_ABOVE
    assert ws.idle() and ws.offer(b"c")
    await turn()
    assert transport.written == [b"a", b"c"]


async def test_a_closed_connection_takes_nothing() -> None:
    server = HubEngineIO(async_mode="aiohttp")
    ws, socket, transport = websocket(server)
    assert ws.offer(b"a")
    socket.closed = True
    assert not ws.idle() and not ws.offer(b"b")
    await turn()
    assert transport.written == [b"a"]

    ws, _, transport = websocket(server)
    assert ws.idle()
    ws.ended()
    assert not ws.idle() and not ws.offer(b"c")
    await turn()
    assert transport.written == []

    # Closed by aiohttp (the client's close frame): not idle; a frame offered anyway is dropped.
    ws, _, transport = websocket(server)
    ws._sock.closed = True  # type: ignore[misc]
    assert not ws.idle()
    assert ws.offer(b"d")
    await turn()
    assert transport.written == []


def test_the_participants_of_rooms_are_each_engineio_sid_once() -> None:
    feed = LiveFeed.__new__(LiveFeed)  # the room table only, no app
    manager = SimpleNamespace(rooms={})
    feed.server = SimpleNamespace(manager=manager)
    assert list(feed._participants(["live:1"])) == []
    manager.rooms[NAMESPACE] = {
        "live:1": bidict({"s1": "e1", "s2": "e2"}),
        "live:2": bidict({"s2": "e2", "s3": "e3"}),
        "s1": bidict({"s1": "e1"}),
    }
    assert list(feed._participants(["live:1"])) == ["e1", "e2"]
    assert list(feed._participants(["s1"])) == ["e1"]
    assert list(feed._participants(["live:1", "live:2", "live:9"])) == ["e1", "e2", "e3"]
    assert list(feed._participants(["live:9"])) == []
