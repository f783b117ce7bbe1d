"""socket.io-client 4 from npm as an agent and as a subscriber, across a two-node cluster.

The tracker (a Python client) is on node A; the JavaScript agent on node B relays to and from it
through Redis; JavaScript subscribers on both nodes follow the live feed (``/live``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ClientFactory
from tests.e2e.conftest import Cluster, ClusterFactory, ScriptFactory
from tests.e2e.harness import Inbox, Rest, wait_until

pytestmark = pytest.mark.e2e

PATH = "/ws-assist/socket"
GRACE = 2.0
TRACKER_EVENTS = (
    "NEW_AGENT",
    "AGENT_DISCONNECTED",
    "NO_AGENT",
    "AGENTS_CONNECTED",
    "AGENTS_INFO_CONNECTED",
    "control",
)


async def agent_token(http: aiohttp.ClientSession, cluster: Cluster, url: str, sid: str) -> str:
    async with http.post(
        f"{url}/api/v1/{cluster.project_key}/assist/sessions/{sid}/agent-token",
        headers={"Authorization": cluster.api_key},
    ) as r:
        assert r.status == 200, await r.text()
        token: str = (await r.json())["data"]["token"]
    return token


async def test_js_agent_relays_and_js_subscribers_follow_across_nodes(
    tmp_path: Path,
    redis_url: str,
    start_cluster: ClusterFactory,
    sio_connect: ClientFactory,
    node_script: ScriptFactory,
    rest_session: aiohttp.ClientSession,
) -> None:
    cluster = await start_cluster(
        2,
        HUB_DATABASE_URL=f"sqlite:///{tmp_path / 'hub.db'}",
        HUB_REDIS_URL=redis_url,
        HUB_SESSION_GRACE=str(GRACE),
    )
    a, b = cluster.nodes
    pk = cluster.project_key
    rest = Rest(rest_session, cluster.api_key)

    # Subscribers: every session on B; sessions of userID "ada" on A.
    feed = await node_script(
        "subscriber.mjs", b.url, PATH, json.dumps({"apiKey": cluster.api_key, "projectKey": pk})
    )
    ada_only = [{"type": "USERID", "value": ["ada"], "operator": "is"}]
    ada_feed = await node_script(
        "subscriber.mjs",
        a.url,
        PATH,
        json.dumps({"apiKey": cluster.api_key, "projectKey": pk, "filters": ada_only}),
    )
    for sub in (feed, ada_feed):
        await sub.expect("connect")
        assert (await sub.expect("SESSIONS"))["args"] == [{"total": 0, "sessions": []}]

    inbox = Inbox(*TRACKER_EVENTS)
    tracker = await sio_connect(
        a.url,
        query=cluster.query("js1", "tab1", {"userID": "ada", "pageTitle": "Home"}),
        handlers=inbox.handlers(),
    )
    for sub in (feed, ada_feed):
        started = (await sub.expect("SESSION_STARTED"))["args"][0]
        assert started["sessionID"] == "js1" and started["userID"] == "ada"

    # An agent on B with a token minted on B, for a tab on A.
    token = await agent_token(rest_session, cluster, b.url, "js1")
    agent = await node_script(
        "agent.mjs",
        b.url,
        PATH,
        f"{pk}-js1",
        json.dumps({"id": "agent-1", "name": "Grace"}),
        json.dumps({"token": token}),
    )
    agent_sid = (await agent.expect("connect"))["id"]
    assert await inbox.get("NEW_AGENT") == (agent_sid, {"id": "agent-1", "name": "Grace"})

    # Tracker → agent: UPDATE_SESSION (wrapped), a message, any other event.
    ack = await tracker.call("UPDATE_SESSION", {"pageTitle": "Cart"}, timeout=5)
    assert ack == {"ok": True}
    relayed = await agent.expect("UPDATE_SESSION")
    assert relayed["args"] == [
        {"meta": {"tabId": "tab1", "version": 1}, "data": {"pageTitle": "Cart"}}
    ]
    for sub in (feed, ada_feed):
        assert (await sub.expect("SESSION_UPDATED"))["args"][0]["pageTitle"] == "Cart"
    message = {"role": "user", "content": "help", "timestamp": 1700000000000}
    assert await tracker.call("SESSION_MESSAGE", message, timeout=5) == {"ok": True}
    assert (await agent.expect("SESSION_MESSAGE"))["args"] == [message]
    assert await tracker.call("mouse", {"x": 3, "y": 4}, timeout=5) == {"ok": True}
    assert (await agent.expect("mouse"))["args"] == [{"x": 3, "y": 4}]

    # Agent → tracker, addressed to its tab; a tab that is not there is refused.
    control = {"meta": {"tabId": "tab1"}, "cmd": "highlight"}
    await agent.send({"emit": "control", "payload": control, "ack": True})
    assert (await agent.expect("control"))["reply"] == {"ok": True}
    assert await inbox.get("control") == (agent_sid, control)
    await agent.send({"emit": "control", "payload": {"meta": {"tabId": "tab9"}}, "ack": True})
    refused = (await agent.expect("control"))["reply"]
    assert refused["ok"] is False and refused["error"]["code"] == "tab_not_connected"

    # A second agent, on A with the API key; then it leaves (one agent remains: no NO_AGENT).
    second = await node_script(
        "agent.mjs",
        a.url,
        PATH,
        f"{pk}-js1",
        json.dumps({"id": 7}),
        json.dumps({"apiKey": cluster.api_key}),
    )
    second_sid = (await second.expect("connect"))["id"]
    assert await inbox.get("NEW_AGENT") == (second_sid, {"id": 7})
    assert (await agent.expect("NEW_AGENT"))["args"] == [second_sid, {"id": 7}]
    await second.close()
    assert await inbox.get("AGENT_DISCONNECTED") == (second_sid,)
    assert (await agent.expect("AGENT_DISCONNECTED"))["args"] == [second_sid]

    # Bad credentials are refused with a reason: a token of another session, a wrong key.
    for peer, auth in (
        (f"{pk}-other", {"token": token}),
        (f"{pk}-js1", {"apiKey": "not-a-key"}),
        (f"{pk}-js1", {}),
    ):
        intruder = await node_script(
            "agent.mjs", b.url, PATH, peer, json.dumps({"id": "x"}), json.dumps(auth)
        )
        assert (await intruder.expect("connect_error"))["message"]
        await intruder.close()

    # The update that takes the session out of ada_feed's filter: "filtered" there only.
    assert await tracker.call("UPDATE_SESSION", {"userID": "bob"}, timeout=5) == {"ok": True}
    assert (await feed.expect("SESSION_UPDATED"))["args"][0]["userID"] == "bob"
    left = (await ada_feed.expect("SESSION_ENDED"))["args"][0]
    assert left == {"sessionID": "js1", "projectKey": pk, "reason": "filtered"}

    # The tab leaves and comes back on node B within the grace: the agent is told both.
    await tracker.disconnect()
    assert (await agent.expect("SESSION_DISCONNECTED"))["args"] == [f"{pk}-js1"]
    back_inbox = Inbox(*TRACKER_EVENTS)
    back = await sio_connect(
        b.url, query=cluster.query("js1", "tab1"), handlers=back_inbox.handlers()
    )
    assert (await agent.expect("SESSION_RECONNECTED"))["args"] == [f"{pk}-js1"]
    assert await back_inbox.get("AGENTS_CONNECTED") == ([agent_sid],)
    assert await back_inbox.get("AGENTS_INFO_CONNECTED") == ([{"id": "agent-1", "name": "Grace"}],)
    assert await back.call("mouse", {"x": 5}, timeout=5) == {"ok": True}
    assert (await agent.expect("mouse"))["args"] == [{"x": 5}]

    # The end: the agent leaves (NO_AGENT), the tab leaves, the grace passes.
    await agent.close()
    assert await back_inbox.get("AGENT_DISCONNECTED") == (agent_sid,)
    assert await back_inbox.get("NO_AGENT") == ()  # sent with no argument
    await back.disconnect()
    ended = (await feed.expect("SESSION_ENDED", timeout=GRACE + 10))["args"][0]
    assert ended == {"sessionID": "js1", "projectKey": pk, "reason": "ended"}
    kinds = [line.get("event") for line in feed.lines]
    assert kinds == [
        "connect",
        "SESSIONS",
        "SESSION_STARTED",
        "SESSION_UPDATED",
        "SESSION_UPDATED",
        "SESSION_ENDED",
    ], kinds

    async def stored() -> Any:
        return await rest.stored_total(a.url, cluster.project_id, '"sessionID":"js1"')

    assert await wait_until(stored, 10, "the session stored") == 1
    found = await rest.search(b.url, cluster.project_id, '"sessionID":"js1"')
    assert found["results"][0]["data"]["messages"] == [message]
