"""Ending many sessions at once on the Redis registry: the reaper ends due sessions in batches
and looks again while a batch comes back full; the drainer takes many outbox entries at a time
and hands them to the sink together. Nothing is lost or doubled when the sink fails for part of a
batch, an unreadable entry goes to the bad list without holding up the others, and a closing node
puts what it could not store back in the outbox."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

import hub.registry.redis as redis_registry
from hub import constants as c
from hub.registry.redis import DUE_BATCH, RedisRegistry
from hub.registry.redis_outbox import TAKE_COUNT, parse_entry
from tests.hub.registry.conftest import PROJECT_KEY, RecordingSink, make_record
from tests.hub.registry.test_redis_cluster import Cluster, stop_loops

MAX = 4 * 1024 * 1024


async def make_due(registry: RedisRegistry, count: int, prefix: str = "s") -> list[str]:
    """Start ``count`` sessions with one message each and take their only tab away (grace 0)."""
    ids = [f"{prefix}{i}" for i in range(count)]
    for sid in ids:
        await registry.join_tab(make_record(sid), "tab")
        await registry.add_message(PROJECT_KEY, sid, {"content": f"m-{sid}"}, MAX)
        await registry.leave_tab(PROJECT_KEY, sid, "tab")
    return ids


async def loader(cluster: Cluster) -> RedisRegistry:
    """A node that only makes sessions due: its loops stopped, so it ends none itself."""
    made = await cluster.node("loader", session_grace=0)
    await stop_loops(made.registry)
    return made.registry


async def lists(redis: aioredis.Redis, node: str) -> tuple[int, int, int]:
    """Lengths of the outbox, the node's processing list and the bad list."""
    return (
        await redis.llen(c.OUTBOX_LIST),
        await redis.llen(c.node_processing_key(node)),
        await redis.llen(c.OUTBOX_BAD_LIST),
    )


async def test_sessions_due_together_are_ended_in_one_look_and_stored_once(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = 2 * DUE_BATCH + 50  # more than one end batch and more than one take
    assert count > TAKE_COUNT
    ids = await make_due(await loader(cluster), count)
    monkeypatch.setattr(redis_registry, "REAP_INTERVAL", 3600.0)  # no look but the first

    # The first look, at start, ends them all: a full batch is followed by another at once.
    node = await cluster.node("a", session_grace=0)

    stored = await node.sink.wait_for(count)
    assert await cluster.redis().zcard(c.GRACE_ZSET) == 0
    assert sorted(e.session_id for e in stored) == sorted(ids)
    assert {e.session_id: e.data["messages"] for e in stored} == {
        sid: [{"content": f"m-{sid}"}] for sid in ids
    }
    assert len({e.end_id for e in stored}) == count
    assert node.sink.most_at_once > 1  # handed to the sink together
    assert node.sink.calls == count
    assert await lists(cluster.redis(), "a") == (0, 0, 0)


async def test_a_sink_failing_for_part_of_a_batch_loses_nothing_and_doubles_nothing(
    cluster: Cluster,
) -> None:
    node = await cluster.node("a", session_grace=0)
    await stop_loops(node.registry)  # this test drives the reaper and the drainer by hand
    outbox = node.registry._outbox
    redis = cluster.redis()
    ids = await make_due(node.registry, 10)
    await node.registry._reap()
    node.sink.refuse_once = {"s3", "s7"}

    taken = await outbox._take(block_s=1)
    assert len(taken) == 10
    assert await outbox.hand(taken) is False

    # The refused entries stay on the processing list, the others are gone from it.
    held = [json.loads(e)["rec"]["sessionID"] for e in await outbox._taken()]
    assert sorted(held) == ["s3", "s7"]
    assert await lists(redis, "a") == (0, 2, 0)
    assert sorted(e.session_id for e in node.sink.ended) == sorted(set(ids) - {"s3", "s7"})

    assert await outbox.hand(await outbox._taken()) is True

    assert sorted(e.session_id for e in node.sink.ended) == sorted(ids)
    assert node.sink.calls == 12
    assert await lists(redis, "a") == (0, 0, 0)


async def test_refusals_while_batches_are_on_their_way_lose_nothing_and_double_nothing(
    cluster: Cluster,
) -> None:
    count = 3 * TAKE_COUNT  # several batches, two on their way at once
    ids = await make_due(await loader(cluster), count)
    sink = RecordingSink(refuse_once={"s1", f"s{TAKE_COUNT + 5}", f"s{count - 1}"})

    node = await cluster.node("a", sink, session_grace=0)
    stored = await sink.wait_for(count)

    assert sorted(e.session_id for e in stored) == sorted(ids)
    assert len({e.end_id for e in stored}) == count
    await asyncio.sleep(0.3)
    assert sink.calls == count + 3
    assert await lists(cluster.redis(), node.registry.node_id) == (0, 0, 0)


async def test_unreadable_entries_go_to_the_bad_list_and_the_others_are_stored(
    cluster: Cluster,
) -> None:
    node = await cluster.node("a", session_grace=0)
    await stop_loops(node.registry)
    redis = cluster.redis()
    await make_due(node.registry, 2)
    await node.registry._reap()
    good = await redis.lrange(c.OUTBOX_LIST, 0, -1)
    bad = ["not json", '{"end_id": "e1"}', "[]"]
    await redis.delete(c.OUTBOX_LIST)
    await redis.lpush(c.OUTBOX_LIST, good[0], *bad, good[1])  # taken from the right

    outbox = node.registry._outbox
    assert await outbox.hand(await outbox._take(block_s=1)) is True

    assert sorted(e.session_id for e in node.sink.ended) == ["s0", "s1"]
    assert sorted(await redis.lrange(c.OUTBOX_BAD_LIST, 0, -1)) == sorted(bad)
    assert await lists(redis, "a") == (0, 0, 3)


async def test_the_drainer_goes_on_after_unreadable_entries(cluster: Cluster) -> None:
    redis = cluster.redis()
    await redis.lpush(c.OUTBOX_LIST, "not json", "{}")
    node = await cluster.node("a", session_grace=0)
    ids = await make_due(node.registry, 5)

    stored = await node.sink.wait_for(5)

    assert sorted(e.session_id for e in stored) == sorted(ids)
    assert await redis.llen(c.OUTBOX_BAD_LIST) == 2


async def test_a_closing_node_puts_what_it_could_not_store_back_for_another(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_registry, "CLOSE_TIMEOUT", 0.3)
    ids = await make_due(await loader(cluster), 30)
    failing = RecordingSink(fail_always=True)
    a = await cluster.node("a", failing, session_grace=0)
    await failing.wait_for(0, calls=30)  # the drainer took them all and the store refused them
    assert failing.most_at_once > 1

    await a.registry.close()

    redis = cluster.redis()
    assert await lists(redis, "a") == (30, 0, 0)
    b = await cluster.node("b")
    stored = await b.sink.wait_for(30)
    assert sorted(e.session_id for e in stored) == sorted(ids)
    await asyncio.sleep(0.5)
    assert b.sink.calls == 30
    assert await lists(redis, "b") == (0, 0, 0)


async def test_what_a_dead_node_had_taken_is_moved_back_and_stored_by_another(
    cluster: Cluster,
) -> None:
    a = await cluster.node("a", node_timeout=1.0, session_grace=0)
    await stop_loops(a.registry)  # a takes a batch, then dies before storing any of it
    ids = await make_due(a.registry, 20)
    await a.registry._reap()
    taken = await a.registry._outbox._take(block_s=1)
    await a.registry._redis.aclose()
    a.registry._closed = True
    assert await lists(cluster.redis(), "a") == (0, 20, 0)

    b = await cluster.node("b", node_timeout=1.0)
    stored = await b.sink.wait_for(20)

    assert sorted(e.session_id for e in stored) == sorted(ids)
    assert sorted(e.end_id for e in stored) == sorted(parse_entry(e).end_id for e in taken)
    assert await lists(cluster.redis(), "a") == (0, 0, 0)
