"""socket.io-client 4 from npm, run with Node.js, connects as a tracker to a real hub."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ROOT
from tests.e2e.conftest import NodeFactory
from tests.e2e.harness import run_cli

pytestmark = pytest.mark.e2e

JS = ROOT / "tests" / "js"


async def read_step(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=15)
    assert line, "the JavaScript tracker exited early"
    step: dict[str, Any] = json.loads(line)
    return step


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_socket_io_client_tracker_is_listed(
    tmp_path: Path, redis_url: str, start_node: NodeFactory, transport: str
) -> None:
    node_bin = shutil.which("node")
    assert node_bin, "Node.js is needed for this test (scripts/test.sh installs the client)"
    assert (JS / "node_modules" / "socket.io-client").is_dir(), "run scripts/test.sh first"
    env = {"HUB_DATABASE_URL": f"sqlite:///{tmp_path / 'hub.db'}", "HUB_REDIS_URL": redis_url}
    project = run_cli("project", "create", "--name", "js", env=env)
    key = run_cli("key", "create", env=env)
    node = await start_node(**env)
    pk = project["projectKey"]

    proc = await asyncio.create_subprocess_exec(
        node_bin,
        str(JS / "tracker.mjs"),
        node.url,
        "/ws-assist/socket",
        f"{pk}-jssession1-tab1",
        json.dumps({"userID": "ada", "trackerVersion": "16.0.0"}),
        transport,
        cwd=JS,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert (await read_step(proc))["step"] == "connected"
        assert (await read_step(proc)) == {"step": "update_ack", "ack": {"ok": True}}
        bad = await read_step(proc)
        assert bad["step"] in ("ERROR", "bad_ack")
        async with aiohttp.ClientSession() as http:
            url = f"{node.url}/api/v1/{pk}/assist/sessions"
            async with http.get(url, headers={"Authorization": key["key"]}) as r:
                assert r.status == 200
                data = (await r.json())["data"]
        assert data["total"] == 1
        session = data["sessions"][0]
        assert session["sessionID"] == "jssession1"
        assert session["userID"] == "ada"
        assert session["pageTitle"] == "Checkout"
        assert session["metadata"] == {"plan": "trial"}
        assert session["userBrowser"] == "Chrome"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), timeout=10)
