"""Fixtures that start real ``livehub serve`` processes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.harness import HubProcess, NodeScript, RedisServer, run_cli

NodeFactory = Callable[..., Awaitable[HubProcess]]


@pytest.fixture
async def start_node(tmp_path: Path) -> AsyncIterator[NodeFactory]:
    """Start ``livehub serve`` processes; each is stopped at the end of the test."""
    nodes: list[HubProcess] = []

    async def start(**env: str) -> HubProcess:
        node = HubProcess(env=env, log_path=tmp_path / f"node{len(nodes)}.log")
        nodes.append(node)
        await node.start()
        return node

    yield start
    for node in nodes:
        if node.proc is not None and node.proc.poll() is None:
            await node.stop()


@dataclass
class Cluster:
    """Nodes sharing one Redis and one database, with a project and an organization key."""

    env: dict[str, str]
    project_id: int
    project_key: str
    api_key: str
    nodes: list[HubProcess]

    def query(
        self, session_id: str, tab_id: str = "tab1", info: dict[str, Any] | None = None
    ) -> dict[str, str]:
        """The handshake query of a tracker tab of this cluster's project."""
        query = {"identity": "session", "peerId": f"{self.project_key}-{session_id}-{tab_id}"}
        if info is not None:
            query["sessionInfo"] = json.dumps(info)
        return query


ClusterFactory = Callable[..., Awaitable[Cluster]]


@pytest.fixture
async def start_cluster(start_node: NodeFactory) -> ClusterFactory:
    """``await start_cluster(n, **env)``: a project, a key and ``n`` nodes started together.

    ``env`` must name the shared ``HUB_DATABASE_URL`` and ``HUB_REDIS_URL``; each node gets its
    own ``HUB_NODE_ID`` (node0, node1, …).
    """

    async def start_all(count: int, **env: str) -> Cluster:
        assert "HUB_DATABASE_URL" in env and "HUB_REDIS_URL" in env
        project = run_cli("project", "create", "--name", "cluster", env=env)
        key = run_cli("key", "create", "--name", "e2e", env=env)
        cluster = Cluster(env, project["projectId"], project["projectKey"], key["key"], [])
        nodes = await asyncio.gather(
            *(start_node(**{**env, "HUB_NODE_ID": f"node{i}"}) for i in range(count))
        )
        cluster.nodes.extend(nodes)
        return cluster

    return start_all


@pytest.fixture
async def rest_session() -> AsyncIterator[aiohttp.ClientSession]:
    """One HTTP client session for the test's REST calls."""
    async with aiohttp.ClientSession() as http:
        yield http


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A ``redis-server`` of this test's own on a free port, to kill and restart."""
    server = RedisServer(tmp_path / "redis")
    await server.start()
    yield server
    server.kill()


ScriptFactory = Callable[..., Awaitable[NodeScript]]


@pytest.fixture
async def node_script() -> AsyncIterator[ScriptFactory]:
    """``await node_script("agent.mjs", *args)``: a tests/js script, closed at the end."""
    scripts: list[NodeScript] = []

    async def start(script: str, *args: str) -> NodeScript:
        started = await NodeScript.start(script, *args)
        scripts.append(started)
        return started

    yield start
    for script in scripts:
        await script.close()
