"""The benchmark's load client (bench/loadgen.py) against a real hub, held to python-socketio's.

Every check does the same thing with ``socketio.AsyncClient`` and with the load client and
compares what each saw: the registered record, refusals, acks, ERROR events, the msgpack
serializer. Then what only the load client must do: answer heartbeats, hold many connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import socketio

from bench.loadgen import (
    ConnectError,
    SioClient,
    client_session,
    close_all,
    connect_all,
    decode_text,
    encode_text,
)
from hub.registry.base import Change, SessionQuery
from hub.typedefs import REGISTRY
from tests.conftest import ClientFactory, Hub, HubFactory

UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
WAIT = 5.0

LoadFactory = Callable[..., SioClient]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with client_session() as session:
        yield session


@pytest.fixture
async def load_client(http: aiohttp.ClientSession) -> AsyncIterator[LoadFactory]:
    """Make load clients on one HTTP session; each is closed at the end of the test."""
    made: list[SioClient] = []

    def make(url: str, **kwargs: Any) -> SioClient:
        kwargs.setdefault("headers", {"User-Agent": UA})
        client = SioClient(http, url, **kwargs)
        made.append(client)
        return client

    yield make
    await close_all(made)


class Seen:
    """Events one client received, awaitable by name."""

    def __init__(self) -> None:
        self.events: dict[str, asyncio.Queue[list[Any]]] = {}

    def __call__(self, event: str, args: list[Any]) -> None:
        self.events.setdefault(event, asyncio.Queue()).put_nowait(args)

    async def next(self, event: str) -> list[Any]:
        return await asyncio.wait_for(self.events.setdefault(event, asyncio.Queue()).get(), WAIT)


def tracker_query(project_key: str, session_id: str) -> dict[str, str]:
    return {"identity": "session", "peerId": f"{project_key}-{session_id}-tab1"}


async def reference(
    sio_connect: ClientFactory, hub: Hub, query: dict[str, str], **kwargs: Any
) -> socketio.AsyncClient:
    return await sio_connect(hub.url, query=query, headers={"User-Agent": UA}, **kwargs)


def test_packets_round_trip() -> None:
    text = encode_text(2, "/live", ["SUBSCRIBE", {"a": "é"}], 12)
    assert text == '42/live,12["SUBSCRIBE",{"a":"é"}]'
    assert decode_text(text[1:]) == (2, "/live", 12, ["SUBSCRIBE", {"a": "é"}])
    assert decode_text("0") == (0, "/", None, None)
    assert decode_text('3/live,7[{"ok":true}]') == (3, "/live", 7, [{"ok": True}])
    assert decode_text('0{"sid":"abc"}') == (0, "/", None, {"sid": "abc"})
    assert decode_text('4/live,{"message":"no"}') == (4, "/live", None, {"message": "no"})


def test_bad_serializer_is_refused(http: aiohttp.ClientSession) -> None:
    with pytest.raises(ValueError, match="serializer"):
        SioClient(http, "http://127.0.0.1:1", serializer="xml")


async def test_registers_the_same_record(
    hub: Hub, sio_connect: ClientFactory, load_client: LoadFactory
) -> None:
    project = await hub.project()
    await reference(sio_connect, hub, tracker_query(project.project_key, "ref"))
    client = load_client(hub.url, query=tracker_query(project.project_key, "load"))
    await client.connect()
    assert client.connected and client.sid
    registry = hub.app[REGISTRY]
    ref = await registry.get(project.project_key, "ref")
    got = await registry.get(project.project_key, "load")
    assert ref is not None and got is not None
    for record in (ref, got):
        del record["sessionID"], record["timestamp"]
    assert got == ref
    assert await registry.tabs(project.project_key, "load") == ["tab1"]


async def test_refusal_carries_the_same_message(
    hub: Hub, sio_connect: ClientFactory, load_client: LoadFactory
) -> None:
    refused: list[Any] = []
    with pytest.raises(socketio.exceptions.ConnectionError):
        await reference(
            sio_connect,
            hub,
            tracker_query("NoSuchProjectKey", "s1"),
            handlers={"connect_error": lambda data: refused.append(data)},
        )
    client = load_client(hub.url, query=tracker_query("NoSuchProjectKey", "s1"))
    with pytest.raises(ConnectError) as caught:
        await client.connect()
    assert refused == [caught.value.data] == [{"message": "unknown project key"}]
    assert str(caught.value) == "unknown project key"
    assert not client.connected


async def test_acks_and_errors_match(
    hub: Hub, sio_connect: ClientFactory, load_client: LoadFactory
) -> None:
    project = await hub.project()
    ref_errors: asyncio.Queue[Any] = asyncio.Queue()

    async def on_error(data: Any) -> None:
        await ref_errors.put(data)

    ref = await reference(
        sio_connect, hub, tracker_query(project.project_key, "ref"), handlers={"ERROR": on_error}
    )
    seen = Seen()
    client = load_client(hub.url, query=tracker_query(project.project_key, "load"), handler=seen)
    await client.connect()
    calls: list[tuple[str, Any]] = [
        ("UPDATE_SESSION", {"pageTitle": "Checkout", "variables": {"cart": 3}}),
        ("UPDATE_SESSION", "not an object"),
        ("SESSION_MESSAGE", {"role": "user", "content": "hi"}),
        ("CUSTOM_EVENT", [1, 2, 3]),
    ]
    for event, payload in calls:
        expected = await ref.call(event, payload, timeout=WAIT)
        got = await client.call(event, payload, timeout=WAIT)
        assert got == expected
        if not expected["ok"]:
            assert await seen.next("ERROR") == [await asyncio.wait_for(ref_errors.get(), WAIT)]
    record = await hub.app[REGISTRY].get(project.project_key, "load")
    assert record is not None and record["pageTitle"] == "Checkout"


async def test_msgpack_serializer_matches(
    make_hub: HubFactory, sio_connect: ClientFactory, load_client: LoadFactory
) -> None:
    hub = await make_hub(socket_serializer="msgpack")
    project = await hub.project()
    ref = await reference(
        sio_connect, hub, tracker_query(project.project_key, "ref"), serializer="msgpack"
    )
    client = load_client(
        hub.url, query=tracker_query(project.project_key, "load"), serializer="msgpack"
    )
    await client.connect()
    for payload in ({"pageTitle": "Cart"}, ["not", "an", "object"]):
        assert await client.call("UPDATE_SESSION", payload) == await ref.call(
            "UPDATE_SESSION", payload, timeout=WAIT
        )
    record = await hub.app[REGISTRY].get(project.project_key, "load")
    assert record is not None and record["pageTitle"] == "Cart"


async def test_answers_heartbeats(make_hub: HubFactory, load_client: LoadFactory) -> None:
    # The server gives up on a client that misses one pong: 0.2 s + 0.3 s, many times over.
    hub = await make_hub(ping_interval=0.2, ping_timeout=0.3)
    project = await hub.project()
    client = load_client(hub.url, query=tracker_query(project.project_key, "beat"))
    await client.connect()
    for _ in range(8):
        client.ping_seen = asyncio.Event()
        await asyncio.wait_for(client.ping_seen.wait(), WAIT)
    assert client.connected and client.pings >= 8
    assert await client.call("UPDATE_SESSION", {"pageTitle": "still here"}) == {"ok": True}


async def test_close_ends_the_session(make_hub: HubFactory, load_client: LoadFactory) -> None:
    hub = await make_hub(session_grace=0.05)
    project = await hub.project()
    ended = asyncio.Event()

    def on_change(change: Change) -> None:
        if change.kind == "ended" and change.session_id == "bye":
            ended.set()

    hub.app[REGISTRY].listen(on_change)
    client = load_client(hub.url, query=tracker_query(project.project_key, "bye"))
    await client.connect()
    await client.close()
    await asyncio.wait_for(ended.wait(), WAIT)
    with pytest.raises(ConnectionError):
        await client.emit("UPDATE_SESSION", {})


async def test_server_disconnect_fails_pending_calls(hub: Hub, load_client: LoadFactory) -> None:
    project = await hub.project()
    first = load_client(hub.url, query=tracker_query(project.project_key, "dup"))
    await first.connect()
    seen = Seen()
    second = load_client(hub.url, query=tracker_query(project.project_key, "dup"), handler=seen)
    await second.connect()  # accepted, then told and sent away (SPEC §4.1)
    assert (await seen.next("SESSION_ALREADY_CONNECTED"))[0]["tabId"] == "tab1"
    assert second._reader is not None
    await asyncio.wait_for(asyncio.shield(second._reader), WAIT)
    assert not second.connected
    with pytest.raises((ConnectError, ConnectionError)):
        await second.call("UPDATE_SESSION", {"pageTitle": "x"}, timeout=WAIT)
    assert first.connected


async def test_unreachable_server_is_a_connect_error(load_client: LoadFactory) -> None:
    from tests.conftest import free_port

    client = load_client(f"http://127.0.0.1:{free_port()}", query={"identity": "session"})
    with pytest.raises(ConnectError):
        await client.connect(timeout=WAIT)
    assert not client.connected


async def test_holds_many_connections(hub: Hub, load_client: LoadFactory) -> None:
    project = await hub.project()
    clients = [
        load_client(hub.url, query=tracker_query(project.project_key, f"s{i}")) for i in range(300)
    ]
    errors = await connect_all(clients, concurrency=100)
    assert errors == [None] * len(clients)
    result = await hub.app[REGISTRY].query(project.project_key, SessionQuery(limit=1000))
    assert result.total == len(clients)
    await close_all(clients)
    assert not any(c.connected for c in clients)


async def test_raw_hook_takes_packets_before_decoding(hub: Hub, load_client: LoadFactory) -> None:
    project = await hub.project()
    taken: list[str] = []

    def raw(packet: str) -> bool:
        if packet.startswith('2["ERROR"'):
            taken.append(packet)
            return True
        return False

    seen = Seen()
    client = load_client(
        hub.url, query=tracker_query(project.project_key, "raw"), handler=seen, raw=raw
    )
    await client.connect()
    answer = await client.call("UPDATE_SESSION", "not an object")
    assert answer["ok"] is False
    assert len(taken) == 1 and '"code":"invalid_payload"' in taken[0]
    assert "ERROR" not in seen.events  # taken by the hook, never decoded for the handler
