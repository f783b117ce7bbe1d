"""Faults of a real cluster: a node killed, Redis restarted empty, a node stopped with SIGTERM.

Nodes run with short timers (grace 2 s, node timeout 3 s, fast Engine.IO pings) so each fault
plays out in seconds; the deadlines asserted are SPEC §4.3's. The recovery times are printed.
Fault tests that restart Redis use a ``redis-server`` of their own (``own_redis``).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ClientFactory
from tests.e2e.conftest import Cluster, ClusterFactory, NodeFactory
from tests.e2e.harness import FailoverTracker, Inbox, RedisServer, Rest, wait_until

pytestmark = pytest.mark.e2e

GRACE = 2.0
NODE_TIMEOUT = 3.0
SHORT = {
    "HUB_SESSION_GRACE": str(GRACE),
    "HUB_NODE_TIMEOUT": str(NODE_TIMEOUT),
    "HUB_PING_INTERVAL": "1",
    "HUB_PING_TIMEOUT": "2",
}
SPEC_DEAD_NODE_DEADLINE = 30 + GRACE  # SPEC §4.3: a dead node's sessions end within 30 s + grace
SPEC_REREGISTER_DEADLINE = 10.0  # SPEC §4.3: Redis restarted empty, sessions back within 10 s
OUTAGE = 1.5  # seconds Redis stays down in the restart test: longer than a heartbeat


async def cluster_on(
    start_cluster: ClusterFactory, tmp_path: Path, redis_url: str, nodes: int = 2
) -> Cluster:
    """Nodes on one Redis and one shared SQLite file, with the short timers."""
    database = f"sqlite:///{tmp_path / 'hub.db'}"
    return await start_cluster(nodes, HUB_DATABASE_URL=database, HUB_REDIS_URL=redis_url, **SHORT)


async def fill(tracker: Any, name: str, phase: str) -> None:
    """Give a session variables and a message, checking both are accepted."""
    ack = await tracker.call(
        "UPDATE_SESSION", {"userID": name, "variables": {phase: name}}, timeout=5
    )
    assert ack == {"ok": True}, ack
    ack = await tracker.call(
        "SESSION_MESSAGE", {"role": "user", "content": f"{name} {phase}"}, timeout=5
    )
    assert ack == {"ok": True}, ack


def needle(session_id: str) -> str:
    return f'"sessionID":"{session_id}"'


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n[faults] {line}")


async def test_sessions_of_a_killed_node_end_and_are_stored_once(
    tmp_path: Path,
    own_redis: RedisServer,
    start_cluster: ClusterFactory,
    start_node: NodeFactory,
    sio_connect: ClientFactory,
    rest_session: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster = await cluster_on(start_cluster, tmp_path, own_redis.url)
    doomed, survivor = cluster.nodes
    rest = Rest(rest_session, cluster.api_key)
    pk = cluster.project_key
    dead_ids = [f"dead{i}" for i in range(3)]
    for sid in dead_ids:
        tracker = await sio_connect(doomed.url, query=cluster.query(sid))
        await fill(tracker, sid, "before")
    alive = await sio_connect(survivor.url, query=cluster.query("alive"))
    assert await rest.live_ids(survivor.url, pk) == {*dead_ids, "alive"}

    killed = time.monotonic()
    assert await doomed.stop(signal.SIGKILL) == -signal.SIGKILL

    async def unlisted() -> bool:
        return await rest.live_ids(survivor.url, pk) == {"alive"}

    async def all_stored() -> bool:
        totals = [
            await rest.stored_total(survivor.url, cluster.project_id, needle(s)) for s in dead_ids
        ]
        assert max(totals) <= 1, f"stored more than once: {totals}"
        return min(totals) == 1

    await wait_until(unlisted, SPEC_DEAD_NODE_DEADLINE, "the dead node's sessions ended")
    ended = time.monotonic() - killed
    await wait_until(all_stored, SPEC_DEAD_NODE_DEADLINE - ended, "the dead node's sessions stored")
    stored = time.monotonic() - killed
    report(
        capsys,
        f"kill -9 of a node (node timeout {NODE_TIMEOUT:g}s, grace {GRACE:g}s): its sessions "
        f"ended after {ended:.2f}s, all stored after {stored:.2f}s",
    )
    assert stored <= SPEC_DEAD_NODE_DEADLINE

    for sid in dead_ids:
        found = await rest.search(survivor.url, cluster.project_id, needle(sid))
        assert found["pagination"]["total"] == 1
        data = found["results"][0]["data"]
        assert data["variables"] == {"before": sid}
        assert [m["content"] for m in data["messages"]] == [f"{sid} before"]
    # The survivor's own session goes on; a node that joins now sees no ghost either.
    assert await alive.call("UPDATE_SESSION", {"pageTitle": "still live"}, timeout=5) == {
        "ok": True
    }
    newcomer = await start_node(**{**cluster.env, "HUB_NODE_ID": "newcomer"})
    for node in (survivor, newcomer):
        assert await rest.live_ids(node.url, pk) == {"alive"}
        record = await rest.session(node.url, pk, "alive")
        assert record is not None and record["pageTitle"] == "still live"
    assert await rest.stored_total(newcomer.url, cluster.project_id, needle("alive")) == 0


async def test_redis_restarted_empty_sessions_come_back(
    tmp_path: Path,
    own_redis: RedisServer,
    start_cluster: ClusterFactory,
    sio_connect: ClientFactory,
    rest_session: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster = await cluster_on(start_cluster, tmp_path, own_redis.url)
    a, b = cluster.nodes
    rest = Rest(rest_session, cluster.api_key)
    pk = cluster.project_key
    placement = {"rs0": a, "rs1": b, "rs2": a}
    trackers = {}
    for sid, node in placement.items():
        trackers[sid] = await sio_connect(node.url, query=cluster.query(sid))
        await fill(trackers[sid], sid, "before")
    # A tab that closes while Redis is away: its session must still end, not stay a ghost.
    leaving = await sio_connect(a.url, query=cluster.query("rsgone"))
    await fill(leaving, "rsgone", "before")
    before = {sid: await rest.session(b.url, pk, sid) for sid in placement}
    assert all(before.values())

    own_redis.kill()
    async with rest_session.get(f"{a.url}/ready") as r:
        assert r.status == 503
        assert "regist" in (await r.text()).lower()
    # Refused while Redis is away, not taken and lost.
    refused = await trackers["rs0"].call("UPDATE_SESSION", {"pageTitle": "lost?"}, timeout=15)
    assert refused["ok"] is False, refused
    await leaving.disconnect()
    # The outage itself: Redis stays away for a while, as a real restart does (nothing to await).
    await asyncio.sleep(OUTAGE)
    await own_redis.start()
    restarted = time.monotonic()

    async def listed_everywhere() -> bool:
        for node in cluster.nodes:
            # rsgone may be listed still: in its grace, restored by the node that began it.
            if not set(placement) <= await rest.live_ids(node.url, pk):
                return False
        return True

    await wait_until(listed_everywhere, SPEC_REREGISTER_DEADLINE, "sessions registered again")
    took = time.monotonic() - restarted
    report(capsys, f"Redis restarted empty: every node lists every session again after {took:.2f}s")
    for sid in placement:
        for node in cluster.nodes:
            assert await rest.session(node.url, pk, sid) == before[sid]
    async with rest_session.get(f"{a.url}/ready") as r:
        assert r.status == 200

    for sid, tracker in trackers.items():
        assert tracker.connected
        await fill(tracker, sid, "after")
        record = await rest.session((b if placement[sid] is a else a).url, pk, sid)
        assert record is not None and record["userID"] == sid
    await asyncio.gather(*(t.disconnect() for t in trackers.values()))

    async def all_stored() -> bool:
        totals = [await rest.stored_total(a.url, cluster.project_id, needle(s)) for s in placement]
        assert max(totals) <= 1, f"stored more than once: {totals}"
        return min(totals) == 1

    await wait_until(all_stored, GRACE + 10, "the sessions stored after the restart")

    # Its leave is retried with backoff (up to 5 s apart), so its grace may begin last.
    async def gone_stored() -> bool:
        return await rest.stored_total(a.url, cluster.project_id, needle("rsgone")) == 1

    await wait_until(gone_stored, GRACE + 10, "the session whose tab left during the outage stored")
    gone = (await rest.search(b.url, cluster.project_id, needle("rsgone")))["results"][0]["data"]
    assert [m["content"] for m in gone["messages"]] == ["rsgone before"]
    for sid in placement:
        found = await rest.search(b.url, cluster.project_id, needle(sid))
        assert found["pagination"]["total"] == 1
        data = found["results"][0]["data"]
        assert data["variables"] == {"before": sid, "after": sid}
        assert [m["content"] for m in data["messages"]] == [f"{sid} before", f"{sid} after"]
        assert data["sessionInfo"]["pageTitle"] != "lost?"


async def test_sigterm_trackers_move_to_another_node_and_keep_their_session(
    tmp_path: Path,
    redis_url: str,
    start_cluster: ClusterFactory,
    rest_session: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster = await cluster_on(start_cluster, tmp_path, redis_url)
    a, b = cluster.nodes
    rest = Rest(rest_session, cluster.api_key)
    pk = cluster.project_key
    ids = ["move0", "move1"]
    trackers = [
        FailoverTracker([a.url, b.url], cluster.query(sid, info={"pageTitle": sid})) for sid in ids
    ]
    try:
        for sid, tracker in zip(ids, trackers, strict=True):
            await tracker.connect()
            await fill(tracker, sid, "before")
        before = {sid: await rest.session(b.url, pk, sid) for sid in ids}

        stopping = time.monotonic()
        stopped = asyncio.create_task(a.stop(signal.SIGTERM))
        # The node closes its connections first thing: its trackers are on B within the grace.
        await asyncio.wait_for(asyncio.gather(*(t.reconnected.wait() for t in trackers)), GRACE)
        moved = time.monotonic() - stopping
        assert await stopped == 0
        exited = time.monotonic() - stopping
        report(
            capsys,
            f"SIGTERM of a node: its trackers on node B {moved:.2f}s after the signal "
            f"(grace {GRACE:g}s); the node exited 0 after {exited:.2f}s",
        )
        for sid, tracker in zip(ids, trackers, strict=True):
            assert tracker.url == b.url
            assert not [e for e in tracker.events if e[0] == "SESSION_ALREADY_CONNECTED"]
            assert await rest.session(b.url, pk, sid) == before[sid], "the same session"
            await fill(tracker, sid, "after")
        assert await rest.live_ids(b.url, pk) == set(ids)
        for sid in ids:
            assert await rest.stored_total(b.url, cluster.project_id, needle(sid)) == 0
    finally:
        for tracker in trackers:
            await tracker.close()

    async def all_stored() -> bool:
        totals = [await rest.stored_total(b.url, cluster.project_id, needle(s)) for s in ids]
        assert max(totals) <= 1, f"stored more than once: {totals}"
        return min(totals) == 1

    await wait_until(all_stored, GRACE + 10, "the moved sessions stored")
    for sid in ids:
        found = await rest.search(b.url, cluster.project_id, needle(sid))
        assert found["pagination"]["total"] == 1
        data = found["results"][0]["data"]
        assert data["sessionInfo"]["timestamp"] == before[sid]["timestamp"]  # type: ignore[index]
        assert data["variables"] == {"before": sid, "after": sid}
        assert [m["content"] for m in data["messages"]] == [f"{sid} before", f"{sid} after"]


async def test_agents_and_subscribers_work_again_after_redis_restarts_empty(
    tmp_path: Path,
    own_redis: RedisServer,
    start_cluster: ClusterFactory,
    sio_connect: ClientFactory,
    rest_session: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster = await cluster_on(start_cluster, tmp_path, own_redis.url)
    a, b = cluster.nodes
    pk = cluster.project_key
    tab_inbox = Inbox("NEW_AGENT", "control")
    tracker = await sio_connect(
        a.url, query=cluster.query("ag1", info={"userID": "ada"}), handlers=tab_inbox.handlers()
    )
    agent_inbox = Inbox("mouse", "UPDATE_SESSION", "SESSION_DISCONNECTED")
    agent = await sio_connect(
        b.url,
        query={"identity": "agent", "peerId": f"{pk}-ag1", "agentInfo": json.dumps({"id": "a1"})},
        auth={"apiKey": cluster.api_key},
        handlers=agent_inbox.handlers(),
    )
    assert (await tab_inbox.get("NEW_AGENT"))[0] == agent.get_sid("/")
    feed_inbox = Inbox("SESSIONS", "SESSION_STARTED", "SESSION_UPDATED", "SESSION_ENDED")
    await sio_connect(
        b.url,
        namespaces=["/live"],
        auth={"apiKey": cluster.api_key, "projectKey": pk},
        handlers=feed_inbox.handlers(),
    )
    assert (await feed_inbox.get("SESSIONS"))[0]["total"] == 1
    assert await tracker.call("mouse", {"n": -1}, timeout=5) == {"ok": True}
    assert await agent_inbox.get("mouse") == ({"n": -1},)

    own_redis.kill()
    await asyncio.sleep(OUTAGE)  # the outage itself (nothing to await)
    await own_redis.start()
    restarted = time.monotonic()

    # Relays cross Redis pub/sub, which loses what is sent while a node resubscribes: probe.
    async def relayed_to_agent() -> bool:
        await tracker.call("mouse", {"n": 1}, timeout=5)
        try:
            await agent_inbox.get("mouse", timeout=0.2)
        except AssertionError:
            return False
        return True

    await wait_until(relayed_to_agent, 15, "tracker → agent relay after the restart")
    to_agent = time.monotonic() - restarted

    async def relayed_to_tab() -> bool:
        reply = await agent.call("control", {"cmd": "x"}, timeout=5)
        if reply != {"ok": True}:
            return False
        try:
            await tab_inbox.get("control", timeout=0.2)
        except AssertionError:
            return False
        return True

    await wait_until(relayed_to_tab, 15, "agent → tab relay after the restart")
    to_tab = time.monotonic() - restarted
    report(
        capsys,
        f"Redis restarted empty: relays work again after {to_agent:.2f}s (tracker → agent) "
        f"and {to_tab:.2f}s (agent → tab)",
    )

    # The subscriber never saw the live session end, and sees its changes again.
    assert feed_inbox.pending("SESSION_ENDED") == 0
    assert await tracker.call("UPDATE_SESSION", {"pageTitle": "after"}, timeout=5) == {"ok": True}
    while True:
        updated = (await feed_inbox.get("SESSION_UPDATED"))[0]
        if updated["pageTitle"] == "after":
            break
    assert updated["sessionID"] == "ag1" and updated["userID"] == "ada"
    wrapped = (await agent_inbox.get("UPDATE_SESSION"))[0]
    while wrapped["data"] != {"pageTitle": "after"}:
        wrapped = (await agent_inbox.get("UPDATE_SESSION"))[0]
    # A new agent connects after the restart (its token minted now) and the tab is told.
    async with rest_session.post(
        f"{a.url}/api/v1/{pk}/assist/sessions/ag1/agent-token",
        headers={"Authorization": cluster.api_key},
    ) as r:
        assert r.status == 200
        token = (await r.json())["data"]["token"]
    late = await sio_connect(
        a.url,
        query={"identity": "agent", "peerId": f"{pk}-ag1", "agentInfo": json.dumps({"id": "a2"})},
        auth={"token": token},
    )
    assert await tab_inbox.get("NEW_AGENT") == (late.get_sid("/"), {"id": "a2"})

    await tracker.disconnect()
    assert await agent_inbox.get("SESSION_DISCONNECTED") == (f"{pk}-ag1",)
    ended = (await feed_inbox.get("SESSION_ENDED", timeout=GRACE + 10))[0]
    assert ended == {"sessionID": "ag1", "projectKey": pk, "reason": "ended"}
    rest = Rest(rest_session, cluster.api_key)
    assert (
        await wait_until(
            lambda: rest.stored_total(b.url, cluster.project_id, needle("ag1")), 10, "stored"
        )
        == 1
    )
