"""The replica's catch-up: stream entries come back from the script as one text, a line each.

Other nodes' changes reach a replica only through that text (a node's own joins skip it, see
``Replica.apply_own``), so these tests write from one node and read from another.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from hub import constants as c
from hub.registry import redis_replica
from hub.registry.base import Change, SessionQuery
from hub.registry.redis_replica import Replica, _entries
from hub.registry.redis_scripts import Scripts
from tests.hub.registry.conftest import PROJECT_KEY, ChangeLog, make_record
from tests.hub.registry.test_redis_cluster import Cluster, eventually, stop_loops


def test_entries_are_read_from_their_lines() -> None:
    text = "\n".join(
        [
            "5-0\tstarted\tpk\ts1\t" + '{"a":"x\\ty\\nz","b":[1]}',
            "5-1\tended\tpk\ts1",
            "6-0\tupdated\tpk\ts:2.x\t{}",
        ]
    )

    entries = _entries(text, 3)

    assert entries == [
        ("5-0", Change("started", "pk", "s1", {"a": "x\ty\nz", "b": [1]})),
        ("5-1", Change("ended", "pk", "s1", None, {"reason": "ended"})),
        ("6-0", Change("updated", "pk", "s:2.x", {})),
    ]
    assert _entries("", 0) == []


def test_a_reply_whose_lines_do_not_match_its_count_is_refused() -> None:
    with pytest.raises(ValueError, match="2 lines for 3 stream entries"):
        _entries("1-0\tended\tpk\ts1\n1-1\tended\tpk\ts2", 3)
    with pytest.raises(ValueError, match="has no record"):
        _entries("1-0\tstarted\tpk\ts1", 1)


async def test_records_with_awkward_text_reach_another_node_unchanged(cluster: Cluster) -> None:
    a, b = (await cluster.node("a")).registry, (await cluster.node("b")).registry
    seen = ChangeLog()
    b.listen(seen)
    awkward = 'tab\there, newline\nthere, \u2028 line separator, quote " and \\ — ünïcødé 🎉'
    records = [
        make_record("s1", userID=awkward, metadata={"k\tey": awkward}),
        make_record("s:2.x_-", userCountry="DE"),
    ]
    for record in records:
        await a.join_tab(record, "tab")
    await a.update(PROJECT_KEY, "s1", {"userCity": awkward})

    assert await b.get(PROJECT_KEY, "s1") == {**records[0], "userCity": awkward}
    assert await b.get(PROJECT_KEY, "s:2.x_-") == records[1]
    assert [(ch.kind, ch.session_id) for ch in seen.changes] == [
        ("started", "s1"),
        ("started", "s:2.x_-"),
        ("updated", "s1"),
    ]

    await a.leave_tab(PROJECT_KEY, "s1", "tab")

    async def ended_on_b() -> bool:
        return await b.get(PROJECT_KEY, "s1") is None

    await eventually(ended_on_b)
    assert seen.changes[-1] == Change("ended", PROJECT_KEY, "s1", None, {"reason": "ended"})


async def test_a_long_stream_is_caught_up_in_several_reads(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_replica, "BATCH", 3)
    a, b = (await cluster.node("a")).registry, (await cluster.node("b")).registry
    await stop_loops(b)  # b reads only when asked, so one read catches up the whole burst
    for i in range(10):
        await a.join_tab(make_record(f"s{i}", timestamp=1000 + i), "tab")
    for i in range(0, 10, 2):
        await a.leave_tab(PROJECT_KEY, f"s{i}", "tab")

    async def odd_left_on_a() -> bool:
        return a.live_count() == 5

    await eventually(odd_left_on_a)

    page = await b.query(PROJECT_KEY, SessionQuery(limit=50))
    assert sorted(r["sessionID"] for r in page.sessions) == [f"s{i}" for i in range(1, 10, 2)]
    assert b._replica.last_id == a._replica.last_id


async def test_an_entry_without_its_fields_fails_the_catch_up_clearly(
    cluster: Cluster, redis_url: str
) -> None:
    client = cluster.redis()
    await client.xadd(c.CHANGES_STREAM, {"k": "ended", "p": PROJECT_KEY})
    scripts = Scripts(client)

    with pytest.raises(Exception, match="lacks k, p or s"):
        await scripts.catch_up(args=["0-0", 10])


async def _catch_ups_counted(replica: Replica, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the replica's catch-up script calls from now on."""
    calls: list[int] = []
    catch_up = replica._scripts.catch_up

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await catch_up(*args, **kwargs)

    monkeypatch.setattr(replica._scripts, "catch_up", counted)
    return calls


async def _started_by(node_id: str, cluster: Cluster, session_id: str) -> tuple[str, Change]:
    """A "started" entry appended as a join on ``node_id`` appends it (its reply not handled)."""
    record = make_record(session_id)
    fields: dict[Any, Any] = {"k": "started", "p": PROJECT_KEY, "s": session_id, "n": node_id}
    fields["r"] = json.dumps(record)
    entry_id = await cluster.redis().xadd(c.CHANGES_STREAM, fields)
    return str(entry_id), Change("started", PROJECT_KEY, session_id, record)


async def test_a_session_started_here_is_applied_by_its_join_not_read_back(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = (await cluster.node("a")).registry
    await stop_loops(a)  # the follower is driven by hand
    replica = a._replica
    monkeypatch.setattr(redis_replica, "OWN_WAKE_PAUSE", 1.0)
    calls = await _catch_ups_counted(replica, monkeypatch)
    woken = asyncio.Event()
    started_here = replica._started_here

    def seen(fields: Any) -> bool:
        woken.set()
        return started_here(fields)

    monkeypatch.setattr(replica, "_started_here", seen)
    previous, epoch = replica.last_id, replica.epoch
    assert epoch is not None
    entry_id, change = await _started_by(a.node_id, cluster, "s1")

    # The read wakes for the entry before the join's reply is handled: it waits, and the join
    # applies its own entry meanwhile.
    following = asyncio.create_task(replica.follow(block_ms=100))
    async with asyncio.timeout(10):
        await woken.wait()
    await replica.apply_own(entry_id, previous, epoch, change)
    await following

    assert calls == []
    assert replica.last_id == entry_id
    assert await a.get(PROJECT_KEY, "s1") == change.record


async def test_a_session_started_here_whose_join_went_away_is_still_read(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = (await cluster.node("a")).registry
    await stop_loops(a)
    replica = a._replica
    calls = await _catch_ups_counted(replica, monkeypatch)
    entry_id, change = await _started_by(a.node_id, cluster, "s1")

    await replica.follow(block_ms=100)  # nobody applies it: after the pause, it is read

    assert calls == [1]
    assert replica.last_id == entry_id
    assert await a.get(PROJECT_KEY, "s1") == change.record
