"""How the live feed's events reach subscribers (hub/websocket.py): in order, none missed.

The feed puts its frames straight into an idle websocket's buffer and everything else through
python-engineio's queue; these tests mix both paths (acks, snapshots, upgrades from polling, a
client that stops reading) and check that every subscriber gets every change once, in order.
"""

from __future__ import annotations

import asyncio
import json
import struct

import aiohttp
import pytest
import socketio

from hub.registry.base import PresenceRegistry
from hub.store.base import NewKey, Project
from hub.typedefs import REGISTRY, SIO
from hub.websocket import DRAIN_ABOVE, HubEngineIO, frame
from tests.conftest import ClientFactory, Hub, HubFactory
from tests.hub.test_livefeed import LIVE, QUICK, WAIT, Feed, add_sessions, resubscribe, subscribe

SOCKET_PATH = "/ws-assist/socket/"


@pytest.mark.parametrize(
    ("message", "header"),
    [
        ("", b"\x81\x00"),
        ("a" * 125, b"\x81\x7d"),
        ("a" * 126, b"\x81\x7e\x00\x7e"),
        ("a" * 65535, b"\x81\x7e\xff\xff"),
        ("a" * 65536, b"\x81\x7f" + struct.pack("!Q", 65536)),
        (b"\x00\x01", b"\x82\x02"),
    ],
)
def test_frame_is_one_unmasked_final_frame(message: str | bytes, header: bytes) -> None:
    payload = message.encode() if isinstance(message, str) else message
    assert frame(message) == header + payload


def test_frame_counts_utf8_bytes() -> None:
    assert frame("é") == b"\x81\x02" + "é".encode()


@pytest.fixture(params=["memory", "redis"])
async def hub(request: pytest.FixtureRequest, make_hub: HubFactory, redis_url: str) -> Hub:
    # The default ping interval: the test client that stops reading must not be timed out.
    return await make_hub(**({"redis_url": redis_url} if request.param == "redis" else {}))


async def updates(registry: PresenceRegistry, project: Project, first: int, count: int) -> None:
    for seq in range(first, first + count):
        await registry.update(project.project_key, "s1", {"metadata": {"seq": str(seq)}})


def seqs(feed: Feed) -> list[int]:
    return [int(d["metadata"]["seq"]) for e, d in feed.events if e == "SESSION_UPDATED"]


async def test_websockets_get_every_change_in_order_between_acks_and_snapshots(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    await add_sessions(hub, project, {"s1": 1000})
    registry = hub.app[REGISTRY]
    feeds: list[tuple[socketio.AsyncClient, Feed]] = []
    for transports in (["websocket"], None):  # None: polling, then the upgrade
        feeds.append(await subscribe(sio_connect, hub, key, project, transports=transports))
    for _, feed in feeds:
        assert (await feed.expect("SESSIONS"))["total"] == 1
    total = 0
    for burst in range(10):
        # Changes while acks and new snapshots are on their way, through either path.
        calls = [
            asyncio.ensure_future(resubscribe(client, {"projectKey": project.project_key}))
            for client, _ in feeds
        ]
        await updates(registry, project, total, 40)
        total += 40
        assert await asyncio.gather(*calls) == [{"ok": True}] * len(feeds), burst
    for client, feed in feeds:
        await feed.until(lambda e, d: e == "SESSION_UPDATED" and d["metadata"]["seq"] == "399")
        assert seqs(feed) == list(range(total)), client.transport()
        # A snapshot arrives before the ack that answers its SUBSCRIBE: ten of them.
        assert [e for e, _ in feed.events].count("SESSIONS") == 11
    # The upgraded client ended on the websocket.
    assert feeds[1][0].transport() == "websocket"


async def test_polling_and_websocket_subscribers_get_every_change_in_order(
    make_hub: HubFactory, sio_connect: ClientFactory
) -> None:
    # Short pings, as tests/hub/test_livefeed.py uses for its polling subscribers.
    hub = await make_hub(**QUICK)
    project = await hub.project()
    key = await hub.key(project.project_id)
    await add_sessions(hub, project, {"s1": 1000})
    feeds = [
        await subscribe(sio_connect, hub, key, project, transports=transports)
        for transports in (["polling"], ["websocket"], None)
    ]
    for _, feed in feeds:
        await feed.expect("SESSIONS")
    # Bursts of 10: python-engineio's polling client drops a poll answer of more than 16
    # packets ("Too many packets in payload"), a limit of that client, not of the hub.
    for burst in range(20):
        await updates(hub.app[REGISTRY], project, burst * 10, 10)
        await asyncio.sleep(0.05)
    for _, feed in feeds:
        await feed.until(lambda e, d: e == "SESSION_UPDATED" and d["metadata"]["seq"] == "199")
        assert seqs(feed) == list(range(200))


async def test_a_subscriber_that_stops_reading_gets_everything_in_order_once_it_reads(
    hub: Hub, project: Project, key: NewKey
) -> None:
    await add_sessions(hub, project, {"s1": 1000})
    registry = hub.app[REGISTRY]
    eio = hub.app[SIO].eio
    assert isinstance(eio, HubEngineIO)
    big = "x" * 60_000
    count = 300  # about 18 MB: past what the kernel buffers on loopback
    url = f"{hub.url}{SOCKET_PATH}?EIO=4&transport=websocket"
    auth = {"apiKey": key.secret, "projectKey": project.project_key}
    async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as ws:
        opened = await ws.receive_str(timeout=WAIT)
        assert opened.startswith("0")
        eio_sid = json.loads(opened[1:])["sid"]
        await ws.send_str(f"40{LIVE}," + json.dumps(auth))
        assert (await ws.receive_str(timeout=WAIT)).startswith(f"40{LIVE},")
        assert (await ws.receive_str(timeout=WAIT)).startswith(f'42{LIVE},["SESSIONS"')
        websocket = eio.websocket(eio_sid)
        assert websocket is not None and websocket.idle()

        # Not reading: the transport fills up and the feed falls back to the queue.
        went_to_queue = False
        for seq in range(count):
            await registry.update(
                project.project_key, "s1", {"metadata": {"seq": str(seq)}, "pageTitle": big}
            )
            await asyncio.sleep(0)
            went_to_queue = went_to_queue or not websocket.idle()
        assert went_to_queue, f"the transport never held more than {DRAIN_ABOVE} bytes"

        got: list[int] = []
        while len(got) < count:
            message = await ws.receive(timeout=WAIT)
            assert message.type is aiohttp.WSMsgType.TEXT, message
            if message.data == "2":
                await ws.send_str("3")
                continue
            event, body = json.loads(message.data[len(f"42{LIVE},") :])
            assert event == "SESSION_UPDATED"
            got.append(int(body["metadata"]["seq"]))
        assert got == list(range(count))
        # Back to idle once everything went out: straight to the buffer again.
        await registry.update(project.project_key, "s1", {"metadata": {"seq": "last"}})
        assert '"seq":"last"' in await ws.receive_str(timeout=WAIT)
        assert websocket.idle()


async def test_a_closed_websocket_is_forgotten_and_gets_nothing(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    await add_sessions(hub, project, {"s1": 1000})
    eio = hub.app[SIO].eio
    assert isinstance(eio, HubEngineIO)
    client, feed = await subscribe(sio_connect, hub, key, project, transports=["websocket"])
    await feed.expect("SESSIONS")
    assert len(eio.websockets) == 1
    _, other = await subscribe(sio_connect, hub, key, project, transports=["websocket"])
    await other.expect("SESSIONS")
    await client.disconnect()
    await updates(hub.app[REGISTRY], project, 0, 5)
    await other.until(lambda e, d: e == "SESSION_UPDATED" and d["metadata"]["seq"] == "4")
    assert seqs(other) == [0, 1, 2, 3, 4]
    assert seqs(feed) == []
    assert len(eio.websockets) == 1


async def test_compressed_websockets_keep_the_queue(
    make_hub: HubFactory, sio_connect: ClientFactory
) -> None:
    hub = await make_hub(ws_compression=True)
    project = await hub.project()
    key = await hub.key(project.project_id)
    await add_sessions(hub, project, {"s1": 1000})
    _, feed = await subscribe(sio_connect, hub, key, project, transports=["websocket"])
    await feed.expect("SESSIONS")
    await updates(hub.app[REGISTRY], project, 0, 20)
    await feed.until(lambda e, d: e == "SESSION_UPDATED" and d["metadata"]["seq"] == "19")
    assert seqs(feed) == list(range(20))
    assert hub.app[SIO].eio.websockets == {}


@pytest.fixture
async def project(hub: Hub) -> Project:
    return await hub.project()


@pytest.fixture
async def key(hub: Hub, project: Project) -> NewKey:
    return await hub.key(project.project_id)
