"""Joins in bulk on the Redis registry: many trackers connecting at once, on one node or several.

Joins made together share round trips (:mod:`hub.registry.redis_batch`) and a node applies its
own "started" entries without reading them back (``Replica.apply_own``); whatever the
interleaving, every node ends with every session, and every listener sees each start once, in
stream order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from hub import constants as c
from hub.errors import TabAlreadyConnected
from hub.registry.base import SessionQuery
from hub.registry.redis import RedisRegistry
from hub.registry.redis_batch import ScriptBatcher
from tests.hub.registry.conftest import PROJECT_KEY, ChangeLog, make_record
from tests.hub.registry.test_redis_cluster import Cluster, stop_loops

BURST = 300  # more joins at once than a client has connections (100)


async def stream_order(cluster: Cluster) -> list[str]:
    """Session ids of the "started" entries of the change stream, in stream order."""
    entries: list[tuple[str, dict[str, str]]] = await cluster.redis().xrange(c.CHANGES_STREAM)  # type: ignore[assignment]
    return [fields["s"] for _, fields in entries if fields["k"] == "started"]


async def test_a_burst_of_joins_on_one_node_is_listed_once_everywhere(cluster: Cluster) -> None:
    a, b = (await cluster.node("a")).registry, (await cluster.node("b")).registry
    seen_a, seen_b = ChangeLog(), ChangeLog()
    a.listen(seen_a)
    b.listen(seen_b)
    records = [make_record(f"s{i}", userOs="Mac OS", timestamp=1000 + i) for i in range(BURST)]

    joins = await asyncio.gather(*(a.join_tab(r, "tab") for r in records))

    assert all(j.started and not j.reconnected for j in joins)
    assert [j.record for j in joins] == records
    # The joining node's listeners saw every start by the time its join returned.
    order = await stream_order(cluster)
    assert sorted(order) == sorted(r["sessionID"] for r in records)
    assert [ch.session_id for ch in seen_a.changes] == order
    assert all(ch.kind == "started" for ch in seen_a.changes)
    assert [ch.record for ch in seen_a.changes] == [
        next(r for r in records if r["sessionID"] == sid) for sid in order
    ]
    for node in (a, b):
        page = await node.query(PROJECT_KEY, SessionQuery(limit=BURST))
        assert page.total == BURST
        assert page.sessions == sorted(records, key=lambda r: -r["timestamp"])
    await seen_b.wait_for(BURST)
    assert [ch.session_id for ch in seen_b.changes] == order
    # A second tab of each joins the live session; a tab id already connected is refused.
    again = await asyncio.gather(*(a.join_tab(r, "tab-2") for r in records[:50]))
    assert not any(j.started for j in again)
    with pytest.raises(TabAlreadyConnected):
        await a.join_tab(records[0], "tab")
    assert len(seen_a.changes) == BURST


async def test_joins_on_two_nodes_at_once_interleave_and_nothing_is_lost_or_doubled(
    cluster: Cluster,
) -> None:
    a, b = (await cluster.node("a")).registry, (await cluster.node("b")).registry
    logs = [ChangeLog(), ChangeLog()]
    a.listen(logs[0])
    b.listen(logs[1])
    on_a = [make_record(f"a{i}", timestamp=i) for i in range(150)]
    on_b = [make_record(f"b{i}", timestamp=i) for i in range(150)]

    await asyncio.gather(
        *(a.join_tab(r, "tab") for r in on_a), *(b.join_tab(r, "tab") for r in on_b)
    )

    order = await stream_order(cluster)
    assert len(order) == 300
    for node, log in zip((a, b), logs, strict=True):
        assert (await node.query(PROJECT_KEY, SessionQuery(limit=1))).total == 300
        await log.wait_for(300)
        assert [ch.session_id for ch in log.changes] == order


async def test_an_own_join_after_another_nodes_change_catches_up_first(
    cluster: Cluster,
) -> None:
    a, b = (await cluster.node("a")).registry, (await cluster.node("b")).registry
    await stop_loops(a)  # a's follower cannot bring b's entry in: its own join must
    log = ChangeLog()
    a.listen(log)
    await b.join_tab(make_record("from-b"), "tab")

    await a.join_tab(make_record("from-a"), "tab")

    assert [(ch.kind, ch.session_id) for ch in log.changes] == [
        ("started", "from-b"),
        ("started", "from-a"),
    ]


# -- the batcher itself --------------------------------------------------------------------


ECHO = "if ARGV[1] == 'fail' then return redis.error_reply('refused') end return ARGV[1]"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    made = aioredis.from_url(redis_url, decode_responses=True)
    yield made
    await made.aclose()


async def test_calls_made_together_each_get_their_own_reply_or_error(
    client: aioredis.Redis,
) -> None:
    batcher = ScriptBatcher(client, client.register_script(ECHO))
    words = [f"w{i}" for i in range(200)]
    words[7] = words[150] = "fail"

    replies = await asyncio.gather(*(batcher(args=[w]) for w in words), return_exceptions=True)

    for word, reply in zip(words, replies, strict=True):
        if word == "fail":
            assert isinstance(reply, ResponseError)
            assert "refused" in str(reply)
        else:
            assert reply == word


async def test_a_script_redis_forgot_is_loaded_again(client: aioredis.Redis) -> None:
    batcher = ScriptBatcher(client, client.register_script(ECHO))
    assert await batcher(args=["warm"]) == "warm"
    await client.script_flush()

    replies = await asyncio.gather(*(batcher(args=[str(i)]) for i in range(20)))

    assert replies == [str(i) for i in range(20)]


async def test_a_call_given_up_before_it_was_sent_is_not_run(client: aioredis.Redis) -> None:
    counting = client.register_script("return redis.call('INCR', ARGV[1])")
    batcher = ScriptBatcher(client, counting, spacing=0.2)
    await batcher(args=["n"])  # the next round trip may start 0.2 s from now at the earliest
    kept = asyncio.create_task(batcher(args=["n"]))
    dropped = asyncio.create_task(batcher(args=["n"]))
    await asyncio.sleep(0.01)
    dropped.cancel()

    assert await kept == 2
    with pytest.raises(asyncio.CancelledError):
        await dropped
    assert await client.get("n") == "2"


async def test_the_registry_survives_a_registry_client_with_every_connection_busy(
    cluster: Cluster,
) -> None:
    """More commands at once than the client's connections wait for one instead of failing."""
    a: RedisRegistry = (await cluster.node("a")).registry
    await asyncio.gather(*(a.join_tab(make_record(f"s{i}"), "tab") for i in range(BURST)))

    tabs = await asyncio.gather(*(a.tabs(PROJECT_KEY, f"s{i}") for i in range(BURST)))
    lasts = await asyncio.gather(*(a.leave_tab(PROJECT_KEY, f"s{i}", "tab") for i in range(BURST)))

    assert tabs == [["tab"]] * BURST
    assert all(lasts)
