"""End to end: a real ``livehub serve`` with Redis, driven as a user would."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from tests.conftest import ClientFactory
from tests.e2e.conftest import NodeFactory
from tests.e2e.harness import run_cli

pytestmark = pytest.mark.e2e

MAC_CHROME = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/103.0.0.0 Safari/537.36"
)


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll an async predicate until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def test_tracker_session_listed_searched_and_ended(
    tmp_path: Path, redis_url: str, start_node: NodeFactory, sio_connect: ClientFactory
) -> None:
    env = {
        "HUB_DATABASE_URL": f"sqlite:///{tmp_path / 'hub.db'}",
        "HUB_REDIS_URL": redis_url,
        "HUB_SESSION_GRACE": "1",
    }
    project = run_cli("project", "create", "--name", "blog", env=env)
    key = run_cli("key", "create", "--project", str(project["projectId"]), env=env)
    node = await start_node(**env)
    pk = project["projectKey"]

    info = {
        "pageTitle": "OpenReplay Blog",
        "userUUID": "u-1",
        "trackerVersion": "3.5.11",
        "isSnippet": True,
        "timestamp": 1656437966459,
        "metadata": {"plan": "free"},
    }
    tracker = await sio_connect(
        node.url,
        query={
            "identity": "session",
            "peerId": f"{pk}-6975518573799938",
            "sessionInfo": json.dumps(info),
        },
        headers={"User-Agent": MAC_CHROME},
    )
    auth = {"Authorization": key["key"]}
    base = f"{node.url}/api/v1/{pk}/assist/sessions"
    async with aiohttp.ClientSession() as http:
        async with http.get(base, headers=auth) as r:
            assert r.status == 200
            body = await r.json()
        assert body["data"]["total"] == 1
        record = body["data"]["sessions"][0]
        assert record["sessionID"] == "6975518573799938"
        assert record["userOs"] == "Mac OS"
        assert record["userBrowser"] == "Chrome"
        assert record["userDeviceType"] == "desktop"
        assert record["live"] is True and record["projectId"] == project["projectId"]

        ack = await tracker.call(
            "UPDATE_SESSION",
            {"userID": "dev@openreplay.com", "metadata": {"plan": "trial"}},
            timeout=5,
        )
        assert ack == {"ok": True}
        search = {
            "filters": [
                {"type": "METADATA", "source": "plan", "value": ["trial", "free"]},
                {"type": "USERID", "value": ["openreplay"]},
            ],
            "sort": "timestamp",
            "order": "DESC",
            "limit": 10,
            "page": 1,
        }
        async with http.post(
            base, json=search, headers={"Authorization": "Bearer " + key["key"]}
        ) as r:
            assert r.status == 200
            found = (await r.json())["data"]
        assert found["total"] == 1
        assert found["sessions"][0]["userID"] == "dev@openreplay.com"
        assert found["sessions"][0]["metadata"] == {"plan": "trial"}

        bad = await tracker.call("UPDATE_SESSION", {"active": "yes"}, timeout=5)
        assert bad["ok"] is False
        assert tracker.connected

        await tracker.disconnect()

        async def gone() -> bool:
            async with http.get(f"{base}/6975518573799938", headers=auth) as r:
                return r.status == 404

        await wait_for(gone, timeout=10)

    assert await node.stop() == 0


async def test_unknown_project_key_is_refused(
    tmp_path: Path, start_node: NodeFactory, sio_connect: ClientFactory
) -> None:
    node = await start_node(HUB_DATABASE_URL=f"sqlite:///{tmp_path / 'hub.db'}")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio_connect(node.url, query={"identity": "session", "peerId": "nope-123"})
