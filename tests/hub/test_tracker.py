"""The tracker protocol end to end: real socketio.AsyncClients against a real hub (SPEC §4).

The session is checked through the registry of the app, through the stored data once it ended,
and through the Assist API.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import socketio

from hub.records import RECORD_FIELDS, Record
from hub.registry.base import Change, SessionQuery, TabJoin
from hub.rooms import session_room
from hub.store.base import Project
from hub.tracker import TrackerHooks, TrackerTab, tracker_role
from hub.typedefs import REGISTRY, SIO, STORE
from tests.conftest import ClientFactory, Hub, HubFactory
from tests.hub.conftest import (
    UA_ANDROID_PHONE,
    UA_ANDROID_TABLET,
    UA_IPAD,
    UA_IPHONE,
    UA_MAC_CHROME,
    UA_WINDOWS_FIREFOX,
)

TRANSPORTS = [["websocket"], ["polling"]]
WAIT = 5.0


class Inbox:
    """Events one client received, to be awaited in order."""

    def __init__(self) -> None:
        self._queues: defaultdict[str, asyncio.Queue[Any]] = defaultdict(asyncio.Queue)

    def handlers(self, *events: str) -> dict[str, Callable[..., Coroutine[Any, Any, None]]]:
        return {event: self._handler(event) for event in events}

    def _handler(self, event: str) -> Callable[..., Coroutine[Any, Any, None]]:
        async def handle(*args: Any) -> None:
            await self._queues[event].put(args[0] if len(args) == 1 else list(args))

        return handle

    async def next(self, event: str) -> Any:
        return await asyncio.wait_for(self._queues[event].get(), WAIT)

    def count(self, event: str) -> int:
        return self._queues[event].qsize()


class Watch(TrackerHooks):
    """The tracker hooks, recorded: lets a test await a tab joining or leaving."""

    def __init__(self) -> None:
        self.joined: asyncio.Queue[tuple[TrackerTab, TabJoin]] = asyncio.Queue()
        self.left: asyncio.Queue[tuple[TrackerTab, bool]] = asyncio.Queue()
        self.relayed: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def tab_joined(self, tab: TrackerTab, join: TabJoin) -> None:
        await self.joined.put((tab, join))

    async def tab_left(self, tab: TrackerTab, last: bool) -> None:
        await self.left.put((tab, last))

    async def relay(self, tab: TrackerTab, event: str, payload: Any) -> None:
        await self.relayed.put((event, payload))


def watch(hub: Hub) -> Watch:
    hooks = Watch()
    tracker_role(hub.app[SIO]).hooks = hooks
    return hooks


def ended_sessions(hub: Hub) -> asyncio.Queue[Change]:
    queue: asyncio.Queue[Change] = asyncio.Queue()
    hub.app[REGISTRY].listen(lambda c: queue.put_nowait(c) if c.kind == "ended" else None)
    return queue


async def tracker(
    sio_connect: ClientFactory,
    hub: Hub,
    project: Project,
    session: str = "s1",
    *,
    tab: str | None = "tab1",
    info: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    transports: list[str] | None = None,
    inbox: Inbox | None = None,
) -> socketio.AsyncClient:
    query = {"identity": "session", "peerId": f"{project.project_key}-{session}"}
    if tab is not None:
        query["tabId"] = tab
    if info is not None:
        query["sessionInfo"] = json.dumps(info)
    inbox = inbox or Inbox()
    return await sio_connect(
        hub.url,
        query=query,
        headers=headers,
        transports=transports,
        handlers=inbox.handlers("ERROR", "SESSION_ALREADY_CONNECTED", "disconnect"),
    )


async def refusal(sio_connect: ClientFactory, hub: Hub, query: dict[str, str]) -> Any:
    """Connect with ``query``, expect a refusal, return the connect_error data."""
    inbox = Inbox()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio_connect(hub.url, query=query, handlers=inbox.handlers("connect_error"))
    return await inbox.next("connect_error")


async def record_of(hub: Hub, project: Project, session: str = "s1") -> Record | None:
    return await hub.app[REGISTRY].get(project.project_key, session)


async def end_and_read(
    hub: Hub, project: Project, *clients: socketio.AsyncClient, session: str = "s1"
) -> dict[str, Any]:
    """Disconnect the clients, wait for the session to end, and read what was stored."""
    ended = ended_sessions(hub)
    for client in clients:
        await client.disconnect()
    while True:
        change = await asyncio.wait_for(ended.get(), WAIT)
        if (change.project_key, change.session_id) == (project.project_key, session):
            break
    return await stored(hub, project, session)


async def stored(hub: Hub, project: Project, session: str = "s1") -> dict[str, Any]:
    """The stored data of an ended session, once the registry handed it to the store."""
    # The registry writes ended sessions from a background outbox, with no event to await.
    for _ in range(int(WAIT / 0.02)):
        found = await hub.app[STORE].get_session(project.project_id, session)
        if found is not None:
            data: dict[str, Any] = json.loads(found.data_json)
            return data
        await asyncio.sleep(0.02)
    raise AssertionError(f"session {session} was not stored")


# python-engineio's polling client leaves only when its pending long poll ends, which the server
# holds for ping_interval + ping_timeout: short heartbeats keep the polling tests quick.
QUICK_HEARTBEAT: dict[str, Any] = {"ping_interval": 0.5, "ping_timeout": 1.0}


# Sessions end soon after their last tab, so tests can read what was stored.
QUICK_GRACE = 0.2


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest, redis_url: str) -> dict[str, Any]:
    """The registry under test: in-process, or Redis (a flushed database)."""
    return {"redis_url": redis_url} if request.param == "redis" else {}


@pytest.fixture
async def hub(make_hub: HubFactory, backend: dict[str, Any]) -> Hub:
    return await make_hub(session_grace=QUICK_GRACE, **QUICK_HEARTBEAT, **backend)


@pytest.fixture
async def project(hub: Hub) -> Project:
    return await hub.project()


# -- connect -------------------------------------------------------------------------------------


@pytest.mark.parametrize("transports", TRANSPORTS)
async def test_connect_registers_the_record(
    hub: Hub, project: Project, sio_connect: ClientFactory, transports: list[str]
) -> None:
    info = {
        "pageTitle": "OpenReplay Blog",
        "userID": "u@example.com",
        "userUUID": "8998545b-553c-4f41-a39d-d7cba7fac2d1",
        "revID": "r7",
        "trackerVersion": "3.5.11",
        "isSnippet": True,
        "timestamp": 1656437966459,
        "metadata": {"plan": "trial"},
        "active": False,
        "unknownField": {"ignored": True},
    }
    client = await tracker(
        sio_connect,
        hub,
        project,
        "6975518573799938",
        info=info,
        headers={"User-Agent": UA_MAC_CHROME},
        transports=transports,
    )
    record = await record_of(hub, project, "6975518573799938")
    assert record is not None
    assert list(record) == list(RECORD_FIELDS)
    assert record == {
        "pageTitle": "OpenReplay Blog",
        "sessionID": "6975518573799938",
        "metadata": {"plan": "trial"},
        "userID": "u@example.com",
        "userUUID": "8998545b-553c-4f41-a39d-d7cba7fac2d1",
        "projectKey": project.project_key,
        "revID": "r7",
        "timestamp": 1656437966459,
        "trackerVersion": "3.5.11",
        "isSnippet": True,
        "userOs": "Mac OS",
        "userBrowser": "Chrome",
        "userBrowserVersion": "103.0.0.0",
        "userDevice": None,
        "userDeviceType": "desktop",
        "userCountry": None,
        "userCity": None,
        "userState": None,
        "active": False,
        "live": True,
        "projectId": project.project_id,
    }
    registry = hub.app[REGISTRY]
    assert await registry.tabs(project.project_key, "6975518573799938") == ["tab1"]
    sid = client.get_sid("/")
    rooms = hub.app[SIO].rooms(sid, namespace="/")
    assert session_room(project.project_key, "6975518573799938") in rooms


@pytest.mark.parametrize("transports", TRANSPORTS)
async def test_the_session_info_is_decoded_from_the_query_once(
    hub: Hub, project: Project, sio_connect: ClientFactory, transports: list[str]
) -> None:
    # Percent signs, escapes and plus signs of the sessionInfo are its own: the query string is
    # decoded once (a second decoding turned "%48" into "H" and "a+b" into "a b").
    metadata = {"coupon": "%48", "rate": "100%", "sum": "a+b", "pct": "%25", "amp": "x&y=z"}
    await tracker(
        sio_connect, hub, project, "6975518573799939", info={"metadata": metadata},
        transports=transports,
    )  # fmt: skip
    record = await record_of(hub, project, "6975518573799939")
    assert record is not None and record["metadata"] == metadata


async def test_defaults_and_first_connect_time(
    hub: Hub, project: Project, sio_connect: ClientFactory
) -> None:
    start = int(time.time() * 1000)
    await tracker(sio_connect, hub, project, tab=None)
    end = int(time.time() * 1000)
    record = await record_of(hub, project)
    assert record is not None
    assert start <= record["timestamp"] <= end
    assert (record["pageTitle"], record["userID"], record["metadata"]) == ("", "", {})
    assert (record["isSnippet"], record["active"], record["live"]) == (False, True, True)
    # No tabId anywhere: one is made up.
    [tab] = await hub.app[REGISTRY].tabs(project.project_key, "s1")
    assert tab


async def test_session_id_with_dashes_from_session_info(
    hub: Hub, project: Project, sio_connect: ClientFactory
) -> None:
    await sio_connect(
        hub.url,
        query={
            "identity": "session",
            "peerId": f"{project.project_key}-a-b-c-tab-9",
            "sessionInfo": json.dumps({"sessionID": "a-b-c"}),
        },
    )
    assert await hub.app[REGISTRY].tabs(project.project_key, "a-b-c") == ["tab-9"]


REFUSALS = [
    ({"peerId": "{key}-s1"}, "unknown identity"),
    ({"identity": "browser", "peerId": "{key}-s1"}, "unknown identity"),
    # identity=agent goes to the agent role (hub/agent.py): this one lacks its agentInfo.
    ({"identity": "agent", "peerId": "{key}-s1"}, "agentInfo is required"),
    ({"identity": "session"}, "peerId is required"),
    ({"identity": "session", "peerId": "NoSuchProjectKey0000-s1"}, "unknown project key"),
    ({"identity": "session", "peerId": "bad key!-s1"}, "unknown project key"),
    ({"identity": "session", "peerId": "{key}"}, "sessionID is missing"),
    ({"identity": "session", "peerId": "{key}-s 1"}, "bad sessionID"),
    ({"identity": "session", "peerId": "{key}-" + "s" * 129}, "bad sessionID"),
    ({"identity": "session", "peerId": "{key}-s1", "tabId": "t/1"}, "bad tabId"),
    ({"identity": "session", "peerId": "{key}-s1", "sessionInfo": "{oops"}, "not valid JSON"),
    ({"identity": "session", "peerId": "{key}-s1", "sessionInfo": "[]"}, "must be a JSON object"),
    (
        {
            "identity": "session",
            "peerId": "{key}-s1",
            "sessionInfo": json.dumps({"p": "x" * 17000}),
        },
        "sessionInfo is 17",
    ),
    (
        {"identity": "session", "peerId": "{key}-s1", "sessionInfo": '{"sessionID": "a b"}'},
        "bad sessionID",
    ),
    (
        {"identity": "session", "peerId": "{key}-s1", "sessionInfo": '{"pageTitle": 5}'},
        "sessionInfo.pageTitle must be a string",
    ),
    (
        {"identity": "session", "peerId": "{key}-s1", "sessionInfo": '{"isSnippet": "yes"}'},
        "sessionInfo.isSnippet must be true or false",
    ),
    (
        {"identity": "session", "peerId": "{key}-s1", "sessionInfo": '{"timestamp": -1}'},
        "sessionInfo.timestamp",
    ),
    (
        {"identity": "session", "peerId": "{key}-s1", "sessionInfo": '{"metadata": {"a": 1}}'},
        "sessionInfo.metadata.a must be a string",
    ),
    (
        {
            "identity": "session",
            "peerId": "{key}-s1",
            "sessionInfo": '{"active": null, "active": 1}',
        },
        "sessionInfo.active must be true or false",
    ),
]


@pytest.mark.parametrize(("query", "message"), REFUSALS)
async def test_refusals(
    hub: Hub, project: Project, sio_connect: ClientFactory, query: dict[str, str], message: str
) -> None:
    query = {name: value.replace("{key}", project.project_key) for name, value in query.items()}
    data = await refusal(sio_connect, hub, query)
    assert set(data) == {"message"}
    assert message in data["message"]
    result = await hub.app[REGISTRY].query(project.project_key, SessionQuery())
    assert result.total == 0


async def test_metadata_over_the_limits_is_refused(
    make_hub: HubFactory, sio_connect: ClientFactory
) -> None:
    hub = await make_hub(limits={"metadata_keys": 2})
    project = await hub.project()
    info = json.dumps({"metadata": {"a": "1", "b": "2", "c": "3"}})
    data = await refusal(
        sio_connect,
        hub,
        {"identity": "session", "peerId": f"{project.project_key}-s1", "sessionInfo": info},
    )
    assert "sessionInfo.metadata has 3 keys" in data["message"]


# -- user agent and GeoIP --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "fields"),
    [
        (UA_MAC_CHROME, ("Mac OS", "Chrome", "103.0.0.0", None, "desktop")),
        (UA_WINDOWS_FIREFOX, ("Windows", "Firefox", "115.0", None, "desktop")),
        (UA_IPHONE, ("iOS", "Mobile Safari", "16.5", "iPhone", "mobile")),
        (UA_ANDROID_PHONE, ("Android", "Chrome Mobile", "116.0.0.0", "Pixel 7", "mobile")),
        (UA_IPAD, ("iOS", "Mobile Safari", "16.5", "iPad", "tablet")),
        (UA_ANDROID_TABLET, ("Android", "Chrome", "112.0.0.0", "SM-X700", "tablet")),
    ],
)
async def test_user_agent_fields(
    hub: Hub,
    project: Project,
    sio_connect: ClientFactory,
    header: str,
    fields: tuple[str | None, ...],
) -> None:
    # sessionInfo values lose to what the header tells.
    info = {
        "userOs": "X",
        "userBrowser": "X",
        "userBrowserVersion": "X",
        "userDeviceType": "tablet",
    }
    await tracker(sio_connect, hub, project, info=info, headers={"User-Agent": header})
    record = await record_of(hub, project)
    assert record is not None
    names = ("userOs", "userBrowser", "userBrowserVersion", "userDevice", "userDeviceType")
    expected = dict(zip(names, fields, strict=True))
    if expected["userDevice"] is None:
        expected["userDevice"] = info.get("userDevice")
    assert {name: record[name] for name in names} == expected


async def test_user_agent_fields_fall_back_to_session_info(
    hub: Hub, project: Project, sio_connect: ClientFactory
) -> None:
    info = {
        "userOs": "Android",
        "userBrowser": "WebView",
        "userBrowserVersion": "7.1",
        "userDevice": "Pixel 8",
        "userDeviceType": "mobile",
    }
    await tracker(sio_connect, hub, project, info=info, headers={"User-Agent": "-"})
    record = await record_of(hub, project)
    assert record is not None
    assert {name: record[name] for name in info} == info


async def test_unknown_user_agent_without_session_info_is_a_desktop(
    hub: Hub, project: Project, sio_connect: ClientFactory
) -> None:
    await tracker(sio_connect, hub, project, headers={"User-Agent": "-"})
    record = await record_of(hub, project)
    assert record is not None
    assert record["userOs"] is None and record["userBrowser"] is None
    assert record["userDeviceType"] == "desktop"


LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


@pytest.mark.parametrize(
    ("trusted", "forwarded", "location"),
    [
        # The peer (127.0.0.1) is a trusted proxy: X-Forwarded-For is believed.
        (LOOPBACK, "81.2.69.160", ("GB", "London", "England")),
        (LOOPBACK, "203.0.113.9, 2.125.160.216", ("GB", "Boxford", "West Berkshire")),
        (LOOPBACK, "2.125.160.216, 127.0.0.5", ("GB", "Boxford", "West Berkshire")),
        # Not trusted: the header is ignored and the peer itself is located.
        ((), "81.2.69.160", ("DE", "Berlin", "Land Berlin")),
        (LOOPBACK, "192.0.2.1", (None, None, None)),
    ],
)
async def test_geoip_city_database(
    make_hub: HubFactory,
    sio_connect: ClientFactory,
    geoip_city_db: str,
    trusted: tuple[ipaddress.IPv4Network, ...],
    forwarded: str,
    location: tuple[str | None, ...],
) -> None:
    hub = await make_hub(geoip_db=geoip_city_db, trusted_proxies=trusted)
    project = await hub.project()
    await tracker(sio_connect, hub, project, headers={"X-Forwarded-For": forwarded})
    record = await record_of(hub, project)
    assert record is not None
    assert (record["userCountry"], record["userCity"], record["userState"]) == location


async def test_geoip_country_database(
    make_hub: HubFactory, sio_connect: ClientFactory, geoip_country_db: str
) -> None:
    hub = await make_hub(geoip_db=geoip_country_db, trusted_proxies=LOOPBACK)
    project = await hub.project()
    await tracker(sio_connect, hub, project, headers={"X-Forwarded-For": "81.2.69.160"})
    record = await record_of(hub, project)
    assert record is not None
    assert (record["userCountry"], record["userCity"], record["userState"]) == ("GB", None, None)


# -- tabs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("transports", TRANSPORTS)
async def test_two_tabs_share_one_record(
    hub: Hub, project: Project, sio_connect: ClientFactory, transports: list[str]
) -> None:
    hooks = watch(hub)
    first = await tracker(sio_connect, hub, project, tab="tab1", info={"pageTitle": "One"})
    await tracker(
        sio_connect, hub, project, tab="tab2", info={"pageTitle": "Two"}, transports=transports
    )
    registry = hub.app[REGISTRY]
    assert await registry.tabs(project.project_key, "s1") == ["tab1", "tab2"]
    assert (await registry.query(project.project_key, SessionQuery())).total == 1
    record = await record_of(hub, project)
    assert record is not None and record["pageTitle"] == "One"  # the first tab's record

    await first.disconnect()
    tab, last = await asyncio.wait_for(hooks.left.get(), WAIT)
    assert (tab.tab_id, last) == ("tab1", False)
    assert await registry.tabs(project.project_key, "s1") == ["tab2"]
    assert await record_of(hub, project) is not None


@pytest.mark.parametrize("transports", TRANSPORTS)
async def test_duplicate_tab_is_turned_away(
    hub: Hub, project: Project, sio_connect: ClientFactory, transports: list[str]
) -> None:
    first_inbox, second_inbox = Inbox(), Inbox()
    first = await tracker(sio_connect, hub, project, tab="tab1", inbox=first_inbox)
    second = await tracker(
        sio_connect, hub, project, tab="tab1", inbox=second_inbox, transports=transports
    )
    told = await second_inbox.next("SESSION_ALREADY_CONNECTED")
    assert told["tabId"] == "tab1"
    await second_inbox.next("disconnect")
    assert not second.connected
    # The first tab is untouched: connected, registered, and it still works.
    assert first.connected
    assert await hub.app[REGISTRY].tabs(project.project_key, "s1") == ["tab1"]
    assert await first.call("UPDATE_SESSION", {"pageTitle": "Still here"}, timeout=WAIT) == {
        "ok": True
    }
    record = await record_of(hub, project)
    assert record is not None and record["pageTitle"] == "Still here"
    assert first_inbox.count("SESSION_ALREADY_CONNECTED") == 0


# -- events --------------------------------------------------------------------------------------


@pytest.mark.parametrize("transports", TRANSPORTS)
async def test_update_session_deep_merges(
    hub: Hub, project: Project, sio_connect: ClientFactory, transports: list[str]
) -> None:
    client = await tracker(
        sio_connect,
        hub,
        project,
        info={"metadata": {"plan": "trial", "team": "a"}, "pageTitle": "Home"},
        transports=transports,
    )
    ok = await client.call(
        "UPDATE_SESSION",
        {
            "pageTitle": "Cart",
            "userID": "u1",
            "userUUID": "uu1",
            "revID": "r2",
            "active": False,
            "metadata": {"plan": "pro"},
            "variables": {"cart": {"items": 1}, "currency": "EUR"},
            "live": False,
            "sessionID": "hijack",
        },
        timeout=WAIT,
    )
    assert ok == {"ok": True}
    assert await client.call(
        "UPDATE_SESSION", {"variables": {"cart": {"total": 9.5}}}, timeout=WAIT
    ) == {"ok": True}
    # OpenReplay's tracker sends {"meta", "data"}: the data is what changes.
    assert await client.call(
        "UPDATE_SESSION", {"meta": {"tabId": "tab1"}, "data": {"active": True}}, timeout=WAIT
    ) == {"ok": True}
    record = await record_of(hub, project)
    assert record is not None
    assert record["metadata"] == {"plan": "pro", "team": "a"}
    assert (record["pageTitle"], record["userID"], record["userUUID"], record["revID"]) == (
        "Cart",
        "u1",
        "uu1",
        "r2",
    )
    assert (record["active"], record["live"], record["sessionID"]) == (True, True, "s1")
    data = await end_and_read(hub, project, client)
    assert data["variables"] == {"cart": {"items": 1, "total": 9.5}, "currency": "EUR"}
    assert data["sessionInfo"]["pageTitle"] == "Cart"


async def test_update_session_without_ack(
    hub: Hub, project: Project, sio_connect: ClientFactory
) -> None:
    hooks = watch(hub)
    client = await tracker(sio_connect, hub, project)
    await client.emit("UPDATE_SESSION", {"pageTitle": "No ack"})
    event, payload = await asyncio.wait_for(hooks.relayed.get(), WAIT)
    assert (event, payload) == ("UPDATE_SESSION", {"pageTitle": "No ack"})
    record = await record_of(hub, project)
    assert record is not None and record["pageTitle"] == "No ack"


async def test_session_messages(hub: Hub, project: Project, sio_connect: ClientFactory) -> None:
    client = await tracker(sio_connect, hub, project)
    start = int(time.time() * 1000)
    assert await client.call(
        "SESSION_MESSAGE", {"role": "user", "content": "hello"}, timeout=WAIT
    ) == {"ok": True}
    end = int(time.time() * 1000)
    assert await client.call(
        "SESSION_MESSAGE",
        {"role": "assistant", "content": "hi", "timestamp": 1700000000000, "extra": [1]},
        timeout=WAIT,
    ) == {"ok": True}
    messages = (await end_and_read(hub, project, client))["messages"]
    assert len(messages) == 2
    assert messages[0]["role"] == "user" and messages[0]["content"] == "hello"
    assert start <= messages[0]["timestamp"] <= end
    assert messages[1] == {
        "role": "assistant",
        "content": "hi",
        "timestamp": 1700000000000,
        "extra": [1],
    }


async def test_other_events_are_accepted_and_relayed(
    hub: Hub, project: Project, sio_connect: ClientFactory
) -> None:
    hooks = watch(hub)
    client = await tracker(sio_connect, hub, project)
    before = await record_of(hub, project)
    assert await client.call("videofeed", {"streamId": "x", "enabled": True}, timeout=WAIT) == {
        "ok": True
    }
    # Any JSON value goes for an event that is only relayed.
    assert await client.call("control_granted", "agent-1", timeout=WAIT) == {"ok": True}
    assert await asyncio.wait_for(hooks.relayed.get(), WAIT) == (
        "videofeed",
        {"streamId": "x", "enabled": True},
    )
    assert await asyncio.wait_for(hooks.relayed.get(), WAIT) == ("control_granted", "agent-1")
    assert await record_of(hub, project) == before


BAD_PAYLOADS = [
    ("UPDATE_SESSION", "text", "invalid_payload"),
    ("UPDATE_SESSION", [1, 2], "invalid_payload"),
    ("UPDATE_SESSION", None, "invalid_payload"),
    ("UPDATE_SESSION", {"pageTitle": 5}, "invalid_payload"),
    ("UPDATE_SESSION", {"active": "no"}, "invalid_payload"),
    ("UPDATE_SESSION", {"metadata": {"plan": 1}}, "invalid_payload"),
    ("UPDATE_SESSION", {"metadata": {"k" * 65: "v"}}, "too_large"),
    ("UPDATE_SESSION", {"metadata": {"a": "x" * 1025}}, "too_large"),
    ("UPDATE_SESSION", {"metadata": {f"k{i}": "v" for i in range(64)}}, "too_large"),
    ("UPDATE_SESSION", {"variables": "x"}, "invalid_payload"),
    ("UPDATE_SESSION", {"pageTitle": "x" * 5000}, "too_large"),
    ("UPDATE_SESSION", {"variables": {"blob": "x" * 3800}}, "session_data_too_large"),
    ("SESSION_MESSAGE", {"role": "user"}, "invalid_payload"),
    ("SESSION_MESSAGE", {"role": "user", "content": 3}, "invalid_payload"),
    ("SESSION_MESSAGE", {"role": "u", "content": "c", "timestamp": "now"}, "invalid_payload"),
    ("SESSION_MESSAGE", "hello", "invalid_payload"),
    ("SESSION_MESSAGE", {"role": "user", "content": "x" * 3800}, "session_data_too_large"),
    ("custom", {"blob": "x" * 5000}, "too_large"),
    ("disconnect", {}, "invalid_payload"),
    ("connect", {}, "invalid_payload"),
]


@pytest.mark.parametrize(("event", "payload", "code"), BAD_PAYLOADS)
async def test_bad_payloads(
    make_hub: HubFactory,
    backend: dict[str, Any],
    sio_connect: ClientFactory,
    event: str,
    payload: Any,
    code: str,
) -> None:
    hub = await make_hub(
        limits={"event_bytes": 4096, "session_data_bytes": 4000},
        session_grace=QUICK_GRACE,
        **backend,
    )
    project = await hub.project()
    inbox = Inbox()
    client = await tracker(sio_connect, hub, project, info={"metadata": {"team": "a"}}, inbox=inbox)
    before = await record_of(hub, project)

    answer = await client.call(event, payload, timeout=WAIT)
    error = await inbox.next("ERROR")
    assert error["code"] == code and error["message"]
    assert answer == {"ok": False, "error": error}
    # Without an ack: the ERROR event alone.
    await client.emit(event, payload)
    assert (await inbox.next("ERROR"))["code"] == code

    assert await record_of(hub, project) == before
    assert client.connected
    assert await hub.app[REGISTRY].tabs(project.project_key, "s1") == ["tab1"]
    assert await client.call("UPDATE_SESSION", {"pageTitle": "after"}, timeout=WAIT) == {"ok": True}
    data = await end_and_read(hub, project, client)
    assert data["messages"] == [] and data["variables"] == {}


async def test_rate_limit(make_hub: HubFactory, sio_connect: ClientFactory) -> None:
    # A token every 1000 s: exactly the burst goes through.
    hub = await make_hub(limits={"events_per_second": 0.001, "event_burst": 5})
    project = await hub.project()
    inbox = Inbox()
    client = await tracker(sio_connect, hub, project, inbox=inbox)
    answers = [
        await client.call("UPDATE_SESSION", {"pageTitle": f"p{i}"}, timeout=WAIT) for i in range(8)
    ]
    assert answers[:5] == [{"ok": True}] * 5
    for answer in answers[5:]:
        assert answer["ok"] is False and answer["error"]["code"] == "rate_limited"
    for _ in range(3):
        assert (await inbox.next("ERROR"))["code"] == "rate_limited"
    record = await record_of(hub, project)
    assert record is not None and record["pageTitle"] == "p4"
    assert client.connected


async def test_rate_limit_is_per_connection(
    make_hub: HubFactory, sio_connect: ClientFactory
) -> None:
    hub = await make_hub(limits={"events_per_second": 0.001, "event_burst": 2})
    project = await hub.project()
    first = await tracker(sio_connect, hub, project, tab="tab1")
    second = await tracker(sio_connect, hub, project, tab="tab2")
    for _ in range(2):
        assert await first.call("custom", {}, timeout=WAIT) == {"ok": True}
    assert (await first.call("custom", {}, timeout=WAIT))["ok"] is False
    assert await second.call("custom", {}, timeout=WAIT) == {"ok": True}


# -- liveness ------------------------------------------------------------------------------------


@pytest.mark.parametrize("transports", TRANSPORTS)
async def test_reconnect_within_the_grace_continues_the_session(
    make_hub: HubFactory,
    backend: dict[str, Any],
    sio_connect: ClientFactory,
    transports: list[str],
) -> None:
    hub = await make_hub(session_grace=30.0, **QUICK_HEARTBEAT, **backend)
    project = await hub.project()
    hooks = watch(hub)
    ended = ended_sessions(hub)
    first = await tracker(sio_connect, hub, project, transports=transports)
    _, join = await asyncio.wait_for(hooks.joined.get(), WAIT)
    assert join.started
    started = await record_of(hub, project)
    assert started is not None

    await first.disconnect()
    _, last = await asyncio.wait_for(hooks.left.get(), WAIT)
    assert last
    assert await hub.app[REGISTRY].tabs(project.project_key, "s1") == []
    assert await record_of(hub, project) == started  # still live in its grace

    # A reload: same tab, a sessionInfo timestamp that a new session would take.
    await tracker(sio_connect, hub, project, info={"timestamp": 5}, transports=transports)
    _, join = await asyncio.wait_for(hooks.joined.get(), WAIT)
    assert join.reconnected and not join.started
    record = await record_of(hub, project)
    assert record is not None and record["timestamp"] == started["timestamp"]
    assert ended.empty()


async def test_after_the_grace_the_session_ends(
    make_hub: HubFactory, backend: dict[str, Any], sio_connect: ClientFactory
) -> None:
    hub = await make_hub(session_grace=QUICK_GRACE, **backend)
    project = await hub.project()
    ended = ended_sessions(hub)
    client = await tracker(sio_connect, hub, project)
    assert await client.call("SESSION_MESSAGE", {"role": "u", "content": "bye"}, timeout=WAIT) == {
        "ok": True
    }
    await client.disconnect()
    change = await asyncio.wait_for(ended.get(), WAIT)
    assert (change.project_key, change.session_id) == (project.project_key, "s1")
    assert await record_of(hub, project) is None
    assert (await stored(hub, project))["messages"][0]["content"] == "bye"


async def test_assist_api_shows_what_the_tracker_sent(
    hub: Hub, project: Project, sio_connect: ClientFactory
) -> None:
    key = await hub.key(project.project_id)
    client = await tracker(
        sio_connect,
        hub,
        project,
        "6975518573799938",
        info={"pageTitle": "Home", "metadata": {"plan": "trial"}},
        headers={"User-Agent": UA_IPHONE},
    )
    assert await client.call(
        "UPDATE_SESSION", {"pageTitle": "Cart", "metadata": {"team": "a"}}, timeout=WAIT
    ) == {"ok": True}
    url = f"/api/v1/{project.project_key}/assist/sessions/6975518573799938"
    response = await hub.client.get(url, headers={"Authorization": key.secret})
    assert response.status == 200
    body = await response.json()
    assert body == {"data": await record_of(hub, project, "6975518573799938")}
    record = body["data"]
    assert list(record) == list(RECORD_FIELDS)
    assert (record["pageTitle"], record["metadata"]) == ("Cart", {"plan": "trial", "team": "a"})
    assert (record["userOs"], record["userDeviceType"], record["live"]) == ("iOS", "mobile", True)

    await end_and_read(hub, project, client, session="6975518573799938")
    response = await hub.client.get(url, headers={"Authorization": key.secret})
    assert response.status == 404


@pytest.mark.parametrize("blocked", ["project_by_key", "join_tab"])
async def test_a_client_gone_while_joining_leaves_no_tab(
    hub: Hub, project: Project, monkeypatch: pytest.MonkeyPatch, blocked: str
) -> None:
    sio = hub.app[SIO]
    role = tracker_role(sio)
    waiting, release, handled = asyncio.Event(), asyncio.Event(), asyncio.Event()
    # The handshake waits in the store's project lookup or in the registry's join.
    owner: Any = hub.app[STORE] if blocked == "project_by_key" else hub.app[REGISTRY]
    call = getattr(owner, blocked)
    connect = role.connect

    async def slow_call(*args: Any) -> Any:
        waiting.set()
        await release.wait()
        return await call(*args)

    async def watched_connect(*args: Any) -> None:
        try:
            await connect(*args)
        finally:
            handled.set()

    monkeypatch.setattr(owner, blocked, slow_call)
    monkeypatch.setattr(role, "connect", watched_connect)
    client = socketio.AsyncClient(reconnection=False)
    url = f"{hub.url}?identity=session&peerId={project.project_key}-s1"
    connecting = asyncio.create_task(
        client.connect(url, socketio_path="/ws-assist/socket", transports=["websocket"])
    )
    try:
        await asyncio.wait_for(waiting.wait(), WAIT)
        # The connection goes away while the handshake waits (closed from the server's side, so
        # the handler runs on rather than being cancelled with the request).
        [eio_sid] = list(sio.eio.sockets)
        await sio.eio.disconnect(eio_sid)
        release.set()
        await asyncio.wait_for(handled.wait(), WAIT)
    finally:
        connecting.cancel()
        with contextlib.suppress(asyncio.CancelledError, socketio.exceptions.ConnectionError):
            await connecting
        await client.disconnect()
    assert await hub.app[REGISTRY].tabs(project.project_key, "s1") == []
    assert role.tabs == {}
