"""The node's Socket.IO Redis manager (hub/pubsub.py): ordered, pipelined publishes.

Two real nodes share one Redis; a client on B must get what A emits, in order, whatever path the
frame takes on B (the websocket's buffer or the connection's queue, for a polling client).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import socketio

from hub import pubsub
from hub.constants import SOCKETIO_CHANNEL
from hub.pubsub import HubRedisManager
from hub.rooms import agents_room
from hub.typedefs import SIO
from tests.conftest import ClientFactory, Hub, HubFactory, free_port

WAIT = 5.0
SESSION = "s1"


@pytest.fixture
async def nodes(make_hub: HubFactory, redis_url: str) -> tuple[Hub, Hub]:
    a = await make_hub(redis_url=redis_url)
    b = await make_hub(redis_url=redis_url)
    return a, b


async def watcher(
    sio_connect: ClientFactory, hub: Hub, project_key: str, secret: str, transport: str
) -> tuple[socketio.AsyncClient, list[tuple[str, tuple[Any, ...]]], asyncio.Event]:
    """An agent on ``hub``: what it receives (but its room announcements) and a wake-up."""
    received: list[tuple[str, tuple[Any, ...]]] = []
    arrived = asyncio.Event()

    async def record(event: str, *args: Any) -> None:
        if event not in ("SESSION_DISCONNECTED", "NEW_AGENT"):
            received.append((event, args))
            arrived.set()

    client = await sio_connect(
        hub.url,
        query={
            "identity": "agent",
            "peerId": f"{project_key}-{SESSION}",
            "agentInfo": '{"id": "a1"}',
        },
        auth={"apiKey": secret},
        handlers={"*": record},
        transports=[transport],
    )
    return client, received, arrived


async def until(received: list[Any], arrived: asyncio.Event, count: int) -> None:
    async with asyncio.timeout(WAIT):
        while len(received) < count:
            arrived.clear()
            await arrived.wait()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_emits_of_one_turn_cross_in_one_round_trip_and_in_order(
    nodes: tuple[Hub, Hub], sio_connect: ClientFactory, transport: str
) -> None:
    a, b = nodes
    project = await a.project()
    key = await a.key(project.project_id)
    _client, received, arrived = await watcher(
        sio_connect, b, project.project_key, key.secret, transport
    )
    manager = a.app[SIO].manager
    assert isinstance(manager, HubRedisManager)
    batches: list[int] = []
    send = manager._send

    async def counted(batch: list[str]) -> None:
        batches.append(len(batch))
        await send(batch)

    manager._send = counted  # type: ignore[method-assign]
    room = agents_room(project.project_key, SESSION)
    # python-engineio's client refuses a polling response of more than 16 packets, and a poll
    # takes everything queued: a polling watcher gets no more than that at once.
    count = 300 if transport == "websocket" else 16
    async with asyncio.timeout(WAIT):
        # Each emit returns without waiting for Redis: all of them are listed in this turn.
        for i in range(count):
            await a.app[SIO].emit("SEQ", {"i": i}, room=room)
    await until(received, arrived, count)
    assert batches == [count]
    # Several arguments, and an emit of None (no argument), as python-socketio unpacks them.
    await a.app[SIO].emit("PAIR", ("x", 1), room=room)
    await a.app[SIO].emit("NONE", None, room=room)
    await until(received, arrived, count + 2)
    assert received == [("SEQ", ({"i": i},)) for i in range(count)] + [
        ("PAIR", ("x", 1)),
        ("NONE", ()),
    ]


async def test_local_and_remote_clients_both_get_an_emit_once_and_skip_sid_holds(
    nodes: tuple[Hub, Hub], sio_connect: ClientFactory
) -> None:
    a, b = nodes
    project = await a.project()
    key = await a.key(project.project_id)
    here, on_a, arrived_a = await watcher(
        sio_connect, a, project.project_key, key.secret, "websocket"
    )
    _there, on_b, arrived_b = await watcher(
        sio_connect, b, project.project_key, key.secret, "websocket"
    )
    room = agents_room(project.project_key, SESSION)
    await a.app[SIO].emit("SKIPPED", 1, room=room, skip_sid=here.get_sid("/"))
    await a.app[SIO].emit("BOTH", 2, room=room)
    await until(on_a, arrived_a, 1)
    await until(on_b, arrived_b, 2)
    assert on_a == [("BOTH", (2,))]
    assert on_b == [("SKIPPED", (1,)), ("BOTH", (2,))]


async def test_a_publish_redis_refuses_is_retried_then_logged_as_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = HubRedisManager(f"redis://127.0.0.1:{free_port()}/0", channel=SOCKETIO_CHANNEL)
    with caplog.at_level(logging.ERROR, logger="hub.pubsub"):
        await manager._publish({"method": "emit", "event": "E", "data": [1]})
        assert manager._publisher is not None
        await asyncio.wait_for(manager._publisher, WAIT)
    messages = [r.getMessage() for r in caplog.records]
    assert any("retrying" in m for m in messages)
    assert any("1 cross-node emits lost" in m for m in messages)
    assert manager._outgoing == []


async def test_an_emit_waits_while_too_many_messages_are_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pubsub, "MAX_OUTGOING", 3)
    manager = HubRedisManager(f"redis://127.0.0.1:{free_port()}/0", channel=SOCKETIO_CHANNEL)
    release = asyncio.Event()
    sent: list[list[str]] = []

    async def slow(batch: list[str]) -> None:
        await release.wait()
        sent.append(batch)

    manager._send = slow  # type: ignore[method-assign]
    await manager._publish({"n": 0})
    await asyncio.sleep(0)  # the publisher takes it and waits for Redis
    for i in range(1, 4):
        await manager._publish({"n": i})  # within the cap: returns at once
    fourth = asyncio.create_task(manager._publish({"n": 4}))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not fourth.done()
    release.set()
    await asyncio.wait_for(fourth, WAIT)
    assert [[manager.json.loads(m)["n"] for m in batch] for batch in sent] == [[0], [1, 2, 3, 4]]


async def test_a_nodes_own_messages_are_dropped_before_they_are_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manager = HubRedisManager(f"redis://127.0.0.1:{free_port()}/0", channel=SOCKETIO_CHANNEL)
    dumps = manager.json.dumps
    own_emit = {"method": "emit", "event": "E", "data": [1], "host_id": manager.host_id}
    others_emit = {**own_emit, "host_id": "another node"}
    # A callback carries the host_id of the node it goes back to: this one, not last.
    callback = {"method": "callback", "host_id": manager.host_id, "sid": "s", "id": 1, "args": []}
    own_disconnect = {"method": "disconnect", "sid": "s", "host_id": manager.host_id}
    wire = [dumps(m).encode() for m in (own_emit, others_emit, callback, own_disconnect)]

    async def from_redis(self: Any) -> Any:
        for message in wire:
            yield message

    monkeypatch.setattr(socketio.AsyncRedisManager, "_listen", from_redis)
    passed = [message async for message in manager._listen()]
    assert passed == [wire[1], wire[2]]
