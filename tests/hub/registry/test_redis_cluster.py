"""The Redis registry as a cluster: several nodes (registries) on one real Redis.

What one node does, every other node sees at once; a session ends once however many nodes race
to end it; a node closing hands its sessions to the grace, not to the store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis

from hub import constants as c
from hub.errors import InvalidInput, RegistryUnavailable, TabAlreadyConnected
from hub.registry.base import Filter, SessionQuery
from hub.registry.redis import RedisRegistry
from hub.registry.redis_conn import stop_task
from hub.settings import Settings
from tests.hub.registry.conftest import PROJECT_KEY, ChangeLog, RecordingSink, make_record

MAX = 4 * 1024 * 1024


@dataclass
class Node:
    registry: RedisRegistry
    sink: RecordingSink


@dataclass
class Cluster:
    """Nodes on one Redis database; each gets its own sink unless one is given."""

    url: str
    make_settings: Callable[..., Settings]
    nodes: list[RedisRegistry] = field(default_factory=list)
    _client: aioredis.Redis | None = None

    async def node(self, name: str, sink: RecordingSink | None = None, **overrides: Any) -> Node:
        settings = self.make_settings(
            redis_url=self.url, node_id=name, **{"session_grace": 0.3, **overrides}
        )
        sink = sink if sink is not None else RecordingSink()
        registry = RedisRegistry(settings, sink)
        await registry.start()
        self.nodes.append(registry)
        return Node(registry, sink)

    def redis(self) -> aioredis.Redis:
        """A plain client on the cluster's Redis, for looking behind the registry."""
        if self._client is None:
            self._client = aioredis.from_url(self.url, decode_responses=True)
        return self._client

    async def close(self) -> None:
        for registry in self.nodes:
            await registry.close()
        if self._client is not None:
            await self._client.aclose()


async def stop_loops(registry: RedisRegistry) -> None:
    """Stop a node's background loops as a crash would: no goodbye, its state left in Redis."""
    for task in registry._tasks:
        await stop_task(task)


async def kill(registry: RedisRegistry) -> None:
    """A node that dies (kill -9): loops gone, connections dropped, close() does nothing."""
    await stop_loops(registry)
    registry._closed = True
    await registry._redis.aclose()


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> float:
    """Poll ``check`` until it holds; returns the seconds it took.

    Polling, because what is awaited is state in Redis changed by another node's loops.
    """
    start = time.monotonic()
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return time.monotonic() - start


async def test_a_session_joined_on_one_node_is_listed_on_another_at_once(
    cluster: Cluster,
) -> None:
    a, b = (await cluster.node("a")).registry, (await cluster.node("b")).registry
    await stop_loops(b)  # only the read path's catch-up can make b see it
    record = make_record("s1", userOs="Mac OS")

    await a.join_tab(record, "tab-1")

    page = await b.query(PROJECT_KEY, SessionQuery())
    assert (page.total, page.sessions) == (1, [record])
    assert await b.get(PROJECT_KEY, "s1") == record
    assert await b.tabs(PROJECT_KEY, "s1") == ["tab-1"]
    assert await b.autocomplete(PROJECT_KEY, "userOs", "mac", 10) == ["Mac OS"]


async def test_an_update_on_one_node_is_seen_on_the_other_in_order(cluster: Cluster) -> None:
    a, b = (await cluster.node("a")).registry, (await cluster.node("b")).registry
    log = ChangeLog()
    b.listen(log)
    await a.join_tab(make_record("s1", metadata={"plan": "free"}), "tab-1")

    updated = await a.update(PROJECT_KEY, "s1", {"userID": "ann", "metadata": {"team": "x"}})

    assert await b.get(PROJECT_KEY, "s1") == updated
    hits = await b.query(
        PROJECT_KEY, SessionQuery(filters=(Filter("metadata", ("x",), "is", "team"),))
    )
    assert [r["userID"] for r in hits.sessions] == ["ann"]
    changes = await log.wait_for(2)
    assert [(ch.kind, ch.record) for ch in changes] == [
        ("started", make_record("s1", metadata={"plan": "free"})),
        ("updated", updated),
    ]


async def test_tabs_are_shared_by_the_nodes(cluster: Cluster) -> None:
    a, b = (await cluster.node("a")).registry, (await cluster.node("b")).registry
    await a.join_tab(make_record("s1"), "tab-1")

    with pytest.raises(TabAlreadyConnected):
        await b.join_tab(make_record("s1"), "tab-1")
    join = await b.join_tab(make_record("s1", pageTitle="other"), "tab-2")

    assert (join.started, join.reconnected, join.record) == (False, False, make_record("s1"))
    assert await a.tabs(PROJECT_KEY, "s1") == ["tab-1", "tab-2"]
    assert await a.leave_tab(PROJECT_KEY, "s1", "tab-1") is False  # b still holds one
    assert await b.leave_tab(PROJECT_KEY, "s1", "tab-1") is False  # not connected any more
    assert await b.leave_tab(PROJECT_KEY, "s1", "tab-2") is True  # the last one anywhere


async def test_a_tab_back_on_another_node_within_the_grace_continues_the_session(
    cluster: Cluster,
) -> None:
    sink = RecordingSink()
    a = (await cluster.node("a", sink, session_grace=0.5)).registry
    b = (await cluster.node("b", sink, session_grace=0.5)).registry
    await a.join_tab(make_record("s1"), "tab-1")
    await a.update(PROJECT_KEY, "s1", {"pageTitle": "Cart"}, {"cart": 1}, MAX)
    await a.add_message(PROJECT_KEY, "s1", {"role": "user", "content": "one"}, MAX)
    assert await a.leave_tab(PROJECT_KEY, "s1", "tab-1") is True

    join = await b.join_tab(make_record("s1"), "tab-1")

    assert (join.started, join.reconnected) == (False, True)
    assert join.record["pageTitle"] == "Cart"
    await asyncio.sleep(1.0)  # past the grace that would have ended it
    assert sink.calls == 0
    await b.add_message(PROJECT_KEY, "s1", {"role": "user", "content": "two"}, MAX)
    await b.leave_tab(PROJECT_KEY, "s1", "tab-1")
    [ended] = await sink.wait_for(1)
    assert ended.data["variables"] == {"cart": 1}
    assert [m["content"] for m in ended.data["messages"]] == ["one", "two"]


async def test_nodes_racing_to_end_the_same_sessions_store_each_once(cluster: Cluster) -> None:
    sink = RecordingSink()
    nodes = [(await cluster.node(f"n{i}", sink, session_grace=0.05)).registry for i in range(3)]
    for i in range(30):
        await nodes[i % 3].join_tab(make_record(f"s{i}"), "tab")
    for i in range(30):
        await nodes[i % 3].leave_tab(PROJECT_KEY, f"s{i}", "tab")
    # Every node's reaper races for every session, and each calls the end script directly too.
    tags = [c.session_tag(PROJECT_KEY, f"s{i}") for i in range(30)]
    await asyncio.sleep(0.06)
    await asyncio.gather(
        *(
            n._scripts.end(args=[n.node_id, t, f"race{j}x{i}"])
            for j, t in enumerate(tags)
            for i, n in enumerate(nodes)
        )
    )

    stored = await sink.wait_for(30)
    await asyncio.sleep(1.0)  # a double would come within a few reaper and drainer cycles

    assert sorted(e.session_id for e in sink.ended) == sorted(f"s{i}" for i in range(30))
    assert sink.calls == 30
    assert len({e.end_id for e in stored}) == 30
    for node in nodes:
        assert (await node.query(PROJECT_KEY, SessionQuery())).total == 0


async def test_a_closing_node_puts_its_sessions_in_their_grace_for_another_node(
    cluster: Cluster,
) -> None:
    sink = RecordingSink()
    a = (await cluster.node("a", sink, session_grace=0.5)).registry
    b = (await cluster.node("b", sink, session_grace=0.5)).registry
    await a.join_tab(make_record("s1"), "tab-1")
    await a.join_tab(make_record("s2"), "tab-1")
    await a.add_message(PROJECT_KEY, "s2", {"role": "user", "content": "kept"}, MAX)

    await a.close()

    assert sink.calls == 0
    assert (await b.query(PROJECT_KEY, SessionQuery())).total == 2
    assert await b.tabs(PROJECT_KEY, "s1") == []
    join = await b.join_tab(make_record("s2"), "tab-1")  # the tracker reconnects to b
    assert (join.started, join.reconnected) == (False, True)
    [ended] = await sink.wait_for(1)  # s1 was not back within its grace
    assert ended.session_id == "s1"
    await b.leave_tab(PROJECT_KEY, "s2", "tab-1")
    _, last = await sink.wait_for(2)
    assert last.data["messages"] == [{"role": "user", "content": "kept"}]
    assert await cluster.redis().zscore(c.NODES_ZSET, "a") is None


async def test_bad_input_is_refused_and_changes_nothing(cluster: Cluster) -> None:
    a = (await cluster.node("a")).registry
    log = ChangeLog()
    a.listen(log)
    await a.join_tab(make_record("s1"), "tab-1")

    with pytest.raises(InvalidInput):
        await a.update(PROJECT_KEY, "s1", {"sessionID": "s2"})
    with pytest.raises(InvalidInput):
        await a.update(PROJECT_KEY, "s1", {}, {"bad": {1, 2}})
    with pytest.raises(InvalidInput):
        await a.add_message(PROJECT_KEY, "s1", {"content": object()}, MAX)

    assert await a.get(PROJECT_KEY, "s1") == make_record("s1")
    assert log.kinds() == ["started"]
    await a.close()
    with pytest.raises(RegistryUnavailable):
        await a.join_tab(make_record("s2"), "tab-1")


async def test_an_unreachable_redis_is_reported(make_settings: Callable[..., Settings]) -> None:
    from tests.conftest import free_port

    settings = make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    registry = RedisRegistry(settings, RecordingSink())

    with pytest.raises(RegistryUnavailable):
        await registry.check()
    with pytest.raises(RegistryUnavailable):
        await registry.start()
    await registry.close()


async def test_the_end_script_ends_only_a_session_whose_grace_passed_with_no_tab(
    cluster: Cluster,
) -> None:
    a = (await cluster.node("a", session_grace=30.0)).registry
    scripts = a._scripts
    tag = c.session_tag(PROJECT_KEY, "s1")
    await a.join_tab(make_record("s1"), "tab-1")
    await a.leave_tab(PROJECT_KEY, "s1", "tab-1")

    assert await scripts.end(args=["a", tag, "early"]) == 0  # the grace has not passed
    await cluster.redis().zadd(c.GRACE_ZSET, {tag: 1})  # as if it had, but a tab is back:
    await a.join_tab(make_record("s1"), "tab-1")
    await cluster.redis().zadd(c.GRACE_ZSET, {tag: 1})
    assert await scripts.end(args=["a", tag, "tab-back"]) == 0
    assert await cluster.redis().zscore(c.GRACE_ZSET, tag) is None
    await a.leave_tab(PROJECT_KEY, "s1", "tab-1")
    await cluster.redis().zadd(c.GRACE_ZSET, {tag: 1})

    assert await scripts.end(args=["a", tag, "due"]) == 1
    assert await scripts.end(args=["a", tag, "again"]) == 0
    assert await a.get(PROJECT_KEY, "s1") is None
    assert await cluster.redis().exists(*c.session_keys(tag)) == 0
