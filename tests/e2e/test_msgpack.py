"""A node on the Socket.IO msgpack parser (``HUB_SOCKET_SERIALIZER=msgpack``).

msgpack clients work as JSON ones do on a JSON node; a JSON client is refused at once with a
``connect_error`` naming the parser (not left waiting for a CONNECT that never comes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import socketio

from tests.conftest import ClientFactory
from tests.e2e.conftest import NodeFactory
from tests.e2e.harness import HubProcess, Rest, run_cli

pytestmark = pytest.mark.e2e


async def msgpack_node(
    tmp_path: Path, redis_url: str, start_node: NodeFactory
) -> tuple[HubProcess, dict[str, Any], str]:
    env = {
        "HUB_DATABASE_URL": f"sqlite:///{tmp_path / 'hub.db'}",
        "HUB_REDIS_URL": redis_url,
        "HUB_SOCKET_SERIALIZER": "msgpack",
        # Short polls: python-engineio's polling client waits for its last poll to close.
        "HUB_PING_INTERVAL": "1",
        "HUB_PING_TIMEOUT": "2",
    }
    project = run_cli("project", "create", "--name", "msgpack", env=env)
    key = run_cli("key", "create", env=env)
    return await start_node(**env), project, key["key"]


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_msgpack_tracker_updates_and_is_listed(
    tmp_path: Path,
    redis_url: str,
    start_node: NodeFactory,
    sio_connect: ClientFactory,
    rest_session: aiohttp.ClientSession,
    transport: str,
) -> None:
    node, project, key = await msgpack_node(tmp_path, redis_url, start_node)
    pk = project["projectKey"]
    errors: list[Any] = []

    async def on_error(payload: Any) -> None:
        errors.append(payload)

    tracker = await sio_connect(
        node.url,
        query={
            "identity": "session",
            "peerId": f"{pk}-mp1-tab1",
            "sessionInfo": json.dumps({"userID": "ada", "metadata": {"plan": "free"}}),
        },
        transports=[transport],
        serializer="msgpack",
        handlers={"ERROR": on_error},
    )
    ack = await tracker.call(
        "UPDATE_SESSION", {"pageTitle": "Über", "metadata": {"plan": "pro"}}, timeout=5
    )
    assert ack == {"ok": True}
    rest = Rest(rest_session, key)
    record = await rest.session(node.url, pk, "mp1")
    assert record is not None
    assert record["pageTitle"] == "Über" and record["metadata"] == {"plan": "pro"}
    assert record["userID"] == "ada"

    # msgpack carries what JSON cannot (bytes): refused, the record unchanged, still connected.
    bad = await tracker.call("UPDATE_SESSION", {"pageTitle": b"\x00\xff"}, timeout=5)
    assert bad["ok"] is False and bad["error"]["code"] == "invalid_payload", bad
    bad = await tracker.call(
        "SESSION_MESSAGE", {"role": "user", "content": "x", "blob": b"\x01"}, timeout=5
    )
    assert bad["ok"] is False, bad
    assert tracker.connected
    assert len(errors) == 2
    assert await rest.session(node.url, pk, "mp1") == record
    assert await tracker.call(
        "SESSION_MESSAGE", {"role": "user", "content": "hallo"}, timeout=5
    ) == {"ok": True}


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_json_client_is_refused_by_a_msgpack_node(
    tmp_path: Path,
    redis_url: str,
    start_node: NodeFactory,
    sio_connect: ClientFactory,
    rest_session: aiohttp.ClientSession,
    transport: str,
) -> None:
    node, project, key = await msgpack_node(tmp_path, redis_url, start_node)
    pk = project["projectKey"]
    refusals: list[Any] = []
    client = socketio.AsyncClient(reconnection=False)  # the default, JSON, parser

    async def connect_error(data: Any) -> None:
        refusals.append(data)

    client.on("connect_error", connect_error)

    query = urlencode({"identity": "session", "peerId": f"{pk}-json1-tab1"})
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(
            f"{node.url}?{query}",
            transports=[transport],
            socketio_path="/ws-assist/socket",
            wait_timeout=5,
        )
    assert len(refusals) == 1
    assert "msgpack" in refusals[0]["message"]
    assert await Rest(rest_session, key).live_ids(node.url, pk) == set()

    # The node goes on serving msgpack clients.
    tracker = await sio_connect(
        node.url,
        query={"identity": "session", "peerId": f"{pk}-mp2-tab1"},
        serializer="msgpack",
    )
    assert await tracker.call("UPDATE_SESSION", {"userID": "b"}, timeout=5) == {"ok": True}
    assert await Rest(rest_session, key).live_ids(node.url, pk) == {"mp2"}
