"""A cluster of real ``livehub serve`` processes on one Redis and one PostgreSQL database.

Every node answers every REST call alike: a tracker on one node is listed the same by all, an
update acknowledged on one node is seen by a REST read on another at once, and an ended session
is stored once and found from every node. The latency of "update on node A, then read on node B"
is measured and printed (no timing assertion).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
import socketio

from tests.conftest import ClientFactory
from tests.e2e.conftest import Cluster, ClusterFactory
from tests.e2e.harness import Rest, summarize_ms, wait_until

pytestmark = pytest.mark.e2e

UPDATES = 300  # measured round trips of update-then-read
# The test sends its updates as fast as acks come back: lift the per-connection rate limit.
FAST = {"HUB_EVENT_RATE": "100000", "HUB_EVENT_BURST": "100000", "HUB_SESSION_GRACE": "1"}

INFO = {
    "pageTitle": "Checkout",
    "userID": "ada@example.com",
    "userUUID": "u-ada",
    "trackerVersion": "16.0.0",
    "timestamp": 1700000000000,
    "metadata": {"plan": "trial"},
}


async def start(
    start_cluster: ClusterFactory, redis_url: str, postgres_url: str, nodes: int = 3
) -> Cluster:
    return await start_cluster(
        nodes, HUB_DATABASE_URL=postgres_url, HUB_REDIS_URL=redis_url, **FAST
    )


async def test_every_node_lists_reads_and_stores_alike(
    start_cluster: ClusterFactory,
    redis_url: str,
    postgres_url: str,
    sio_connect: ClientFactory,
    rest_session: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster = await start(start_cluster, redis_url, postgres_url)
    a, b, c = cluster.nodes
    rest = Rest(rest_session, cluster.api_key)
    pk = cluster.project_key
    tracker = await sio_connect(a.url, query=cluster.query("cl1", info=INFO))

    # Listed, and listed identically, by every node (the list and the single record).
    lists = [await rest.live(node.url, pk) for node in cluster.nodes]
    assert lists[0]["total"] == 1
    assert lists[0]["sessions"][0]["sessionID"] == "cl1"
    assert lists[0]["sessions"][0]["pageTitle"] == "Checkout"
    assert lists[1] == lists[0] and lists[2] == lists[0]
    records = [await rest.session(node.url, pk, "cl1") for node in cluster.nodes]
    assert records[0] == lists[0]["sessions"][0] and records[1] == records[0] == records[2]

    # An update acknowledged on A is in the very next REST read on B and on C: no sleep.
    ack = await tracker.call(
        "UPDATE_SESSION", {"pageTitle": "Paid", "variables": {"cart": 3}}, timeout=5
    )
    assert ack == {"ok": True}
    for node in (b, c):
        record = await rest.session(node.url, pk, "cl1")
        assert record is not None and record["pageTitle"] == "Paid"
    assert await tracker.call(
        "SESSION_MESSAGE", {"role": "user", "content": "hello from A"}, timeout=5
    ) == {"ok": True}

    acked: list[float] = []
    visible: list[float] = []
    for i in range(UPDATES):
        reader = (b, c)[i % 2]
        began = time.perf_counter()
        ack = await tracker.call("UPDATE_SESSION", {"metadata": {"step": str(i)}}, timeout=5)
        done = time.perf_counter()
        assert ack == {"ok": True}
        record = await rest.session(reader.url, pk, "cl1")
        seen = time.perf_counter()
        assert record is not None and record["metadata"] == {"plan": "trial", "step": str(i)}
        acked.append(done - began)
        visible.append(seen - began)
    with capsys.disabled():
        print(f"\n[cluster] UPDATE_SESSION ack on node A: {summarize_ms(acked)}")
        print(f"[cluster] update on A -> visible in REST GET on B/C: {summarize_ms(visible)}")

    # The end: stored once, found from every node, listed by none.
    await tracker.disconnect()

    async def stored() -> bool:
        return await rest.stored_total(c.url, cluster.project_id, '"sessionID":"cl1"') > 0

    await wait_until(stored, 15, "the ended session stored")
    answers = [
        await rest.search(node.url, cluster.project_id, '"sessionID":"cl1"')
        for node in cluster.nodes
    ]
    assert answers[0]["pagination"]["total"] == 1
    assert answers[1] == answers[0] and answers[2] == answers[0]
    data = answers[0]["results"][0]["data"]
    assert data["sessionInfo"]["pageTitle"] == "Paid"
    assert data["sessionInfo"]["metadata"] == {"plan": "trial", "step": str(UPDATES - 1)}
    assert "live" not in data["sessionInfo"] and "active" not in data["sessionInfo"]
    assert data["variables"] == {"cart": 3}
    assert [m["content"] for m in data["messages"]] == ["hello from A"]
    for node in cluster.nodes:
        assert await rest.session(node.url, pk, "cl1") is None
        assert (await rest.live(node.url, pk))["total"] == 0


async def test_tabs_of_one_session_on_several_nodes(
    start_cluster: ClusterFactory,
    redis_url: str,
    postgres_url: str,
    sio_connect: ClientFactory,
    rest_session: aiohttp.ClientSession,
) -> None:
    cluster = await start(start_cluster, redis_url, postgres_url)
    a, b, c = cluster.nodes
    rest = Rest(rest_session, cluster.api_key)
    pk = cluster.project_key

    first = await sio_connect(a.url, query=cluster.query("multi", "tab1", INFO))
    second = await sio_connect(b.url, query=cluster.query("multi", "tab2", INFO))
    for node in cluster.nodes:
        listed = await rest.live(node.url, pk)
        assert listed["total"] == 1, "two tabs of one session are one record"

    # The same tabId again, on a third node: told and sent away; the first tab goes on.
    turned_away = asyncio.Event()
    told: list[Any] = []

    async def already(payload: Any) -> None:
        told.append(payload)
        turned_away.set()

    dup = await sio_connect(
        c.url,
        query=cluster.query("multi", "tab1", INFO),
        handlers={"SESSION_ALREADY_CONNECTED": already},
    )
    await asyncio.wait_for(turned_away.wait(), 5)
    assert told[0]["tabId"] == "tab1"
    await wait_until(lambda: _disconnected(dup), 5, "the duplicate tab disconnected")
    assert first.connected
    assert await first.call("UPDATE_SESSION", {"userID": "from-a"}, timeout=5) == {"ok": True}
    assert await second.call(
        "SESSION_MESSAGE", {"role": "user", "content": "from b"}, timeout=5
    ) == {"ok": True}
    record = await rest.session(c.url, pk, "multi")
    assert record is not None and record["userID"] == "from-a"

    # One tab leaving does not end the session; the last one does, and it is stored once.
    await first.disconnect()
    assert await second.call("UPDATE_SESSION", {"pageTitle": "still here"}, timeout=5) == {
        "ok": True
    }
    assert await rest.session(a.url, pk, "multi") is not None
    await second.disconnect()

    async def stored() -> bool:
        return await rest.stored_total(a.url, cluster.project_id, '"sessionID":"multi"') > 0

    await wait_until(stored, 15, "the session stored after its last tab left")
    found = await rest.search(b.url, cluster.project_id, '"sessionID":"multi"')
    assert found["pagination"]["total"] == 1
    data = found["results"][0]["data"]
    assert data["sessionInfo"]["userID"] == "from-a"
    assert data["sessionInfo"]["pageTitle"] == "still here"
    assert [m["content"] for m in data["messages"]] == ["from b"]


async def test_sessions_ending_together_are_stored_once_each(
    start_cluster: ClusterFactory,
    redis_url: str,
    postgres_url: str,
    sio_connect: ClientFactory,
    rest_session: aiohttp.ClientSession,
) -> None:
    """Every node's reaper races for the same ended graces; each session is stored once."""
    cluster = await start(start_cluster, redis_url, postgres_url)
    rest = Rest(rest_session, cluster.api_key)
    count = 12
    trackers = [
        await sio_connect(
            cluster.nodes[i % 3].url, query=cluster.query(f"race{i:02d}", info={"userID": "r"})
        )
        for i in range(count)
    ]
    for i, tracker in enumerate(trackers):
        assert await tracker.call(
            "SESSION_MESSAGE", {"role": "user", "content": f"m{i:02d}"}, timeout=5
        ) == {"ok": True}
    assert (await rest.live(cluster.nodes[0].url, cluster.project_key))["total"] == count
    await asyncio.gather(*(t.disconnect() for t in trackers))

    async def all_stored() -> bool:
        total = await rest.stored_total(cluster.nodes[1].url, cluster.project_id, "race")
        assert total <= count, f"{total} stored rows for {count} sessions"
        return total == count

    await wait_until(all_stored, 20, "every session stored")
    for i in range(count):
        needle = f'"sessionID":"race{i:02d}"'
        assert await rest.stored_total(cluster.nodes[i % 3].url, cluster.project_id, needle) == 1
    for node in cluster.nodes:
        assert (await rest.live(node.url, cluster.project_key))["total"] == 0


async def _disconnected(client: socketio.AsyncClient) -> bool:
    return not client.connected
