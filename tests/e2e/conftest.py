"""Fixtures that start real ``livehub serve`` processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.e2e.harness import HubProcess

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
