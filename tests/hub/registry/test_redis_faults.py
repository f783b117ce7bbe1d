"""The Redis registry under faults: dead nodes, Redis losing its data, a failing store, a trimmed
change stream, a node taken for dead while alive."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from hub import constants as c
from hub.errors import RegistryUnavailable
from hub.registry.base import EndedSession, SessionQuery
from hub.settings import Settings
from tests.conftest import free_port
from tests.hub.registry.conftest import PROJECT_KEY, ChangeLog, RecordingSink, make_record
from tests.hub.registry.test_redis_cluster import Cluster, eventually, kill, stop_loops

MAX = 4 * 1024 * 1024


async def test_a_dead_nodes_sessions_end_within_node_timeout_plus_grace_stored_once(
    cluster: Cluster,
) -> None:
    sink = RecordingSink()
    a = (await cluster.node("a", sink, node_timeout=1.0, session_grace=0.5)).registry
    b = (await cluster.node("b", sink, node_timeout=1.0, session_grace=0.5)).registry
    for i in range(3):
        await a.join_tab(make_record(f"s{i}"), "tab-1")
        await a.update(PROJECT_KEY, f"s{i}", {}, {"n": i}, MAX)
        await a.add_message(PROJECT_KEY, f"s{i}", {"role": "user", "content": f"m{i}"}, MAX)
    await b.join_tab(make_record("s0"), "tab-b")  # s0 also has a tab on the living node

    started = time.monotonic()
    await kill(a)
    stored = await sink.wait_for(2)
    took = time.monotonic() - started

    assert took < 1.0 + 0.5 + 1.5  # node_timeout + grace, plus a heartbeat and reaper period
    assert sorted(e.session_id for e in stored) == ["s1", "s2"]
    assert {e.session_id: e.data["variables"] for e in stored} == {"s1": {"n": 1}, "s2": {"n": 2}}
    assert [e.data["messages"] for e in stored if e.session_id == "s2"] == [
        [{"role": "user", "content": "m2"}]
    ]
    page = await b.query(PROJECT_KEY, SessionQuery())
    assert [r["sessionID"] for r in page.sessions] == ["s0"]  # no ghost of s1, s2
    assert await b.tabs(PROJECT_KEY, "s0") == ["tab-b"]
    await asyncio.sleep(1.0)
    assert sink.calls == 2


async def test_what_a_dead_node_was_storing_is_stored_by_another(cluster: Cluster) -> None:
    stuck = asyncio.Event()

    async def hanging_sink(ended: EndedSession) -> None:
        stuck.set()
        await asyncio.Event().wait()  # the node dies while the store call is on its way

    a = await cluster.node("a", node_timeout=1.0, session_grace=0.05)
    a.registry._outbox._sink = hanging_sink
    await a.registry.join_tab(make_record("s1"), "tab-1")
    await a.registry.leave_tab(PROJECT_KEY, "s1", "tab-1")
    async with asyncio.timeout(5):
        await stuck.wait()
    await kill(a.registry)

    b = await cluster.node("b", node_timeout=1.0)

    [ended] = await b.sink.wait_for(1)
    assert ended.session_id == "s1"
    redis = cluster.redis()
    assert await redis.llen(c.node_processing_key("a")) == 0


async def test_sessions_come_back_when_redis_loses_its_data(cluster: Cluster) -> None:
    sink = RecordingSink()
    a = (await cluster.node("a", sink, session_grace=2.0)).registry
    b = (await cluster.node("b", sink, session_grace=2.0)).registry
    await a.join_tab(make_record("s1", userOs="Linux"), "tab-1")
    await a.update(PROJECT_KEY, "s1", {"userID": "ann"}, {"cart": {"items": 2}}, MAX)
    await a.add_message(PROJECT_KEY, "s1", {"role": "user", "content": "héllo ✓"}, MAX)
    await b.join_tab(make_record("s2"), "tab-1")
    await b.join_tab(make_record("s3"), "tab-1")
    await b.leave_tab(PROJECT_KEY, "s3", "tab-1")  # in its grace, begun by b
    log = ChangeLog()
    b.listen(log)
    before = await b.query(PROJECT_KEY, SessionQuery())

    redis = cluster.redis()
    await redis.flushdb()

    async def all_back() -> bool:
        return bool(await redis.scard(c.SESSIONS_SET) == 3)

    took = await eventually(all_back, within=10)
    assert took < 3.0
    assert await b.query(PROJECT_KEY, SessionQuery()) == before
    assert await a.get(PROJECT_KEY, "s1") == dict(make_record("s1", userOs="Linux"), userID="ann")
    assert await a.tabs(PROJECT_KEY, "s1") == ["tab-1"]
    assert await b.tabs(PROJECT_KEY, "s3") == []
    assert sink.calls == 0
    await a.leave_tab(PROJECT_KEY, "s1", "tab-1")
    stored = await sink.wait_for(2)  # s3 (its grace went on) and s1
    assert sorted(e.session_id for e in stored) == ["s1", "s3"]
    [s1] = [e for e in stored if e.session_id == "s1"]
    assert s1.data["variables"] == {"cart": {"items": 2}}
    assert s1.data["messages"] == [{"role": "user", "content": "héllo ✓"}]
    assert s1.data["sessionInfo"]["userID"] == "ann"


async def test_a_write_right_after_redis_lost_its_data_is_not_lost(cluster: Cluster) -> None:
    a = await cluster.node("a", session_grace=0.2)
    await stop_loops(a.registry)  # no heartbeat: the write itself must notice
    await a.registry.join_tab(make_record("s1"), "tab-1")
    await a.registry.add_message(PROJECT_KEY, "s1", {"role": "user", "content": "one"}, MAX)
    redis = cluster.redis()
    await redis.flushdb()

    await a.registry.add_message(PROJECT_KEY, "s1", {"role": "user", "content": "two"}, MAX)
    record = await a.registry.update(PROJECT_KEY, "s1", {"userID": "bob"})

    assert record["userID"] == "bob"
    assert await redis.lrange(c.session_keys(c.session_tag(PROJECT_KEY, "s1"))[1], 0, -1) == [
        '{"role":"user","content":"one"}',
        '{"role":"user","content":"two"}',
    ]


async def test_a_failing_store_loses_nothing_and_doubles_nothing(cluster: Cluster) -> None:
    sink = RecordingSink(fail_always=True)
    nodes = [(await cluster.node(f"n{i}", sink, session_grace=0.05)).registry for i in range(2)]
    for i in range(6):
        await nodes[i % 2].join_tab(make_record(f"s{i}"), "tab")
        await nodes[i % 2].add_message(PROJECT_KEY, f"s{i}", {"content": f"m{i}"}, MAX)
        await nodes[i % 2].leave_tab(PROJECT_KEY, f"s{i}", "tab")
    await sink.wait_for(0, calls=8)  # the store refuses, again and again

    sink.fail_always = False
    stored = await sink.wait_for(6)
    await asyncio.sleep(1.0)

    assert sorted(e.session_id for e in sink.ended) == [f"s{i}" for i in range(6)]
    assert {e.session_id: e.data["messages"] for e in stored} == {
        f"s{i}": [{"content": f"m{i}"}] for i in range(6)
    }
    redis = cluster.redis()
    assert await redis.llen(c.OUTBOX_LIST) == 0
    for node in nodes:
        assert await redis.llen(c.node_processing_key(node.node_id)) == 0


async def test_a_node_behind_a_trimmed_stream_resyncs(cluster: Cluster) -> None:
    a = (await cluster.node("a", session_grace=0.05)).registry
    b = (await cluster.node("b", session_grace=0.05)).registry
    await a.join_tab(make_record("old"), "tab")
    await a.join_tab(make_record("gone"), "tab")
    await a.join_tab(make_record("changed"), "tab")
    assert (await b.query(PROJECT_KEY, SessionQuery())).total == 3
    log = ChangeLog()
    b.listen(log)
    await stop_loops(b)  # b falls behind

    await a.join_tab(make_record("new"), "tab")
    await a.update(PROJECT_KEY, "changed", {"userID": "x"})
    await a.leave_tab(PROJECT_KEY, "gone", "tab")
    await a.add_message(PROJECT_KEY, "old", {"content": "m"}, MAX)  # so the stream moves on

    async def gone_ended() -> bool:
        return await a.get(PROJECT_KEY, "gone") is None

    await eventually(gone_ended)
    redis = cluster.redis()
    await redis.xtrim(c.CHANGES_STREAM, maxlen=0)
    await a.join_tab(make_record("after"), "tab")

    page = await b.query(PROJECT_KEY, SessionQuery(sort="sessionID", order="ASC"))

    assert [r["sessionID"] for r in page.sessions] == ["after", "changed", "new", "old"]
    assert (await b.get(PROJECT_KEY, "changed") or {})["userID"] == "x"
    assert sorted((ch.kind, ch.session_id) for ch in log.changes) == [
        ("ended", "gone"),
        ("started", "after"),
        ("started", "new"),
        ("updated", "changed"),
    ]
    await a.join_tab(make_record("later"), "tab")  # and b follows the stream again
    assert await b.get(PROJECT_KEY, "later") is not None


async def test_a_node_taken_for_dead_while_alive_puts_its_tabs_back(cluster: Cluster) -> None:
    sink = RecordingSink()
    a = (await cluster.node("a", sink, node_timeout=1.0, session_grace=1.0)).registry
    await cluster.node("b", sink, node_timeout=1.0, session_grace=1.0)
    await a.join_tab(make_record("s1"), "tab-1")
    redis = cluster.redis()
    tag = c.session_tag(PROJECT_KEY, "s1")

    await stop_loops(a)  # a stalls (a long pause of its event loop)...
    await redis.zadd(c.NODES_ZSET, {"a": 1})  # ...long enough to be taken for dead

    async def reaped() -> bool:
        return await redis.zscore(c.GRACE_ZSET, tag) is not None

    await eventually(reaped)
    assert await a.tabs(PROJECT_KEY, "s1") == []
    await a._member.beat()  # a resumes: its first beat finds it was taken for dead

    assert await a.tabs(PROJECT_KEY, "s1") == ["tab-1"]
    assert await redis.zscore(c.GRACE_ZSET, tag) is None
    await asyncio.sleep(1.5)  # past the grace the reaping began
    assert sink.calls == 0
    assert await a.get(PROJECT_KEY, "s1") is not None


async def test_sessions_come_back_after_a_real_redis_restart(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    port = free_port()

    def start_redis() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp_path),
            ],
            stdout=subprocess.DEVNULL,
        )

    server = start_redis()
    cluster = Cluster(f"redis://127.0.0.1:{port}/0", make_settings)
    try:
        await eventually(_answers(cluster), within=10)
        a = (await cluster.node("a", session_grace=5.0)).registry
        await a.join_tab(make_record("s1"), "tab-1")
        await a.add_message(PROJECT_KEY, "s1", {"content": "kept"}, MAX)

        server.kill()
        server.wait()
        with pytest.raises(RegistryUnavailable):
            await a.check()
        server = start_redis()  # empty, and without the registry's scripts

        async def back() -> bool:
            try:
                return await a.tabs(PROJECT_KEY, "s1") == ["tab-1"]
            except RegistryUnavailable:
                return False

        assert await eventually(back, within=15) < 10.0  # SPEC §4.3
        assert await a.get(PROJECT_KEY, "s1") is not None
        fresh = aioredis.from_url(cluster.url, decode_responses=True)  # the old one was cut
        tag = c.session_tag(PROJECT_KEY, "s1")
        assert await fresh.lrange(c.session_keys(tag)[1], 0, -1) == ['{"content":"kept"}']
        await fresh.aclose()
    finally:
        await cluster.close()
        server.kill()
        server.wait()


def _answers(cluster: Cluster) -> Callable[[], Awaitable[bool]]:
    async def ping() -> bool:
        try:
            return bool(await cluster.redis().ping())
        except (RedisError, OSError):
            return False

    return ping


async def test_a_node_back_under_the_same_id_releases_the_tabs_of_its_earlier_life(
    cluster: Cluster,
) -> None:
    first = await cluster.node("a", session_grace=0.2)
    await first.registry.join_tab(make_record("s1"), "tab-1")
    await kill(first.registry)  # crashed, and restarted at once with the same HUB_NODE_ID

    again = await cluster.node("a", session_grace=0.2)

    [ended] = await again.sink.wait_for(1)  # nobody holds its tab any more
    assert ended.session_id == "s1"
    assert await again.registry.get(PROJECT_KEY, "s1") is None
