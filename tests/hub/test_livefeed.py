"""The live feed (SPEC §4.5): real socketio.AsyncClients on ``/live`` against real hubs.

Sessions come from real trackers on ``/`` (and, where a test needs many, straight from the
app's registry). Every test runs on the in-process registry and on Redis.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import socketio

from hub.records import Record, blank_record
from hub.registry.base import SessionQuery
from hub.store.base import NewKey, Project
from hub.typedefs import REGISTRY, SIO, STORE
from tests.conftest import ClientFactory, Hub, HubFactory

LIVE = "/live"
WAIT = 10.0
GRACE = 0.2  # sessions end this soon after their last tab
QUICK: dict[str, Any] = {"session_grace": GRACE, "ping_interval": 0.5, "ping_timeout": 1.0}
FEED_EVENTS = ("SESSIONS", "SESSION_STARTED", "SESSION_UPDATED", "SESSION_ENDED", "ERROR")


class Feed:
    """Every event one subscriber got, in the order it got them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def handlers(self) -> dict[str, Callable[..., Coroutine[Any, Any, None]]]:
        return {event: self._handler(event) for event in (*FEED_EVENTS, "connect_error")}

    def _handler(self, event: str) -> Callable[..., Coroutine[Any, Any, None]]:
        async def handle(data: Any = None) -> None:
            self.events.append((event, data))
            await self._queue.put((event, data))

        return handle

    async def next(self) -> tuple[str, Any]:
        return await asyncio.wait_for(self._queue.get(), WAIT)

    async def expect(self, event: str) -> Any:
        got, data = await self.next()
        assert got == event, (got, data)
        return data

    async def until(self, done: Callable[[str, Any], bool]) -> list[tuple[str, Any]]:
        """Events up to and including the first one ``done`` accepts."""
        seen = []
        while True:
            event, data = await self.next()
            seen.append((event, data))
            if done(event, data):
                return seen

    def pending(self) -> int:
        return self._queue.qsize()


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest, redis_url: str) -> dict[str, Any]:
    return {"redis_url": redis_url} if request.param == "redis" else {}


@pytest.fixture
async def hub(make_hub: HubFactory, backend: dict[str, Any]) -> Hub:
    return await make_hub(**QUICK, **backend)


@pytest.fixture
async def project(hub: Hub) -> Project:
    return await hub.project()


@pytest.fixture
async def key(hub: Hub, project: Project) -> NewKey:
    return await hub.key(project.project_id)


async def subscribe(
    sio_connect: ClientFactory,
    hub: Hub,
    key: NewKey,
    project: Project,
    filters: list[dict[str, Any]] | None = None,
    transports: list[str] | None = None,
) -> tuple[socketio.AsyncClient, Feed]:
    feed = Feed()
    auth: dict[str, Any] = {"apiKey": key.secret, "projectKey": project.project_key}
    if filters is not None:
        auth["filters"] = filters
    client = await sio_connect(
        hub.url, auth=auth, namespaces=[LIVE], handlers=feed.handlers(), transports=transports
    )
    return client, feed


async def tracker(
    sio_connect: ClientFactory, hub: Hub, project: Project, session: str, **info: Any
) -> socketio.AsyncClient:
    query = {"identity": "session", "peerId": f"{project.project_key}-{session}", "tabId": "t1"}
    if info:
        query["sessionInfo"] = json.dumps(info)
    return await sio_connect(hub.url, query=query)


async def update(client: socketio.AsyncClient, **changes: Any) -> None:
    assert await client.call("UPDATE_SESSION", changes, timeout=WAIT) == {"ok": True}


async def resubscribe(client: socketio.AsyncClient, payload: Any) -> Any:
    return await client.call("SUBSCRIBE", payload, namespace=LIVE, timeout=WAIT)


async def record(hub: Hub, project: Project, session: str) -> Record | None:
    return await hub.app[REGISTRY].get(project.project_key, session)


def ids(sessions: list[Record]) -> list[str]:
    return [r["sessionID"] for r in sessions]


async def add_sessions(hub: Hub, project: Project, timestamps: dict[str, int]) -> None:
    """Sessions straight into the registry (as a tracker's join would put them)."""
    registry = hub.app[REGISTRY]
    for session_id, timestamp in timestamps.items():
        record = blank_record(project.project_key, project.project_id, session_id, timestamp)
        await registry.join_tab(record, "t1")


# -- the snapshot ----------------------------------------------------------------------------


async def test_snapshot_lists_matching_sessions_newest_first(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    await tracker(sio_connect, hub, project, "old", timestamp=1000, userID="ann@shop.com")
    await tracker(sio_connect, hub, project, "new", timestamp=3000, userID="bob@shop.com")
    await tracker(sio_connect, hub, project, "tie_a", timestamp=2000, userID="cy@shop.com")
    await tracker(sio_connect, hub, project, "tie_b", timestamp=2000, userID="dee@shop.com")
    await tracker(sio_connect, hub, project, "other", timestamp=4000, userID="eve@else.org")
    filters = [{"type": "USERID", "value": ["SHOP.COM"]}]

    _, feed = await subscribe(sio_connect, hub, key, project, filters)

    snapshot = await feed.expect("SESSIONS")
    assert snapshot["total"] == 4
    assert ids(snapshot["sessions"]) == ["new", "tie_b", "tie_a", "old"]
    # The same records as the Assist API lists.
    response = await hub.client.post(
        f"/api/v1/{project.project_key}/assist/sessions",
        json={"filters": filters},
        headers={"Authorization": key.secret},
    )
    assert snapshot["sessions"] == (await response.json())["data"]["sessions"]


async def test_snapshot_without_filters_lists_every_session_of_the_project(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    other = await hub.project("other")
    await add_sessions(hub, project, {"a": 1, "b": 2})
    await add_sessions(hub, other, {"c": 3})
    _, feed = await subscribe(sio_connect, hub, key, project)
    snapshot = await feed.expect("SESSIONS")
    assert (snapshot["total"], ids(snapshot["sessions"])) == (2, ["b", "a"])


async def test_snapshot_holds_at_most_1000_sessions_and_counts_all(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    await add_sessions(hub, project, {f"s{n:04d}": 10_000 + n for n in range(1003)})
    _, feed = await subscribe(sio_connect, hub, key, project)
    snapshot = await feed.expect("SESSIONS")
    assert snapshot["total"] == 1003
    assert ids(snapshot["sessions"]) == [f"s{n:04d}" for n in range(1002, 2, -1)]
    # The sessions past the first 1000 are in the set too: their changes come.
    await hub.app[REGISTRY].update(project.project_key, "s0000", {"pageTitle": "late"})
    assert (await feed.expect("SESSION_UPDATED"))["pageTitle"] == "late"
    # A second subscriber of the same filters joins the set the first one made.
    _, second = await subscribe(sio_connect, hub, key, project)
    assert (await second.expect("SESSIONS"))["total"] == 1003
    await hub.app[REGISTRY].update(project.project_key, "s0001", {"pageTitle": "later"})
    for one in (feed, second):
        assert (await one.expect("SESSION_UPDATED"))["sessionID"] == "s0001"


# -- changes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("transports", [["websocket"], ["polling"]])
async def test_started_updated_ended_in_order(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory, transports: list[str]
) -> None:
    _, feed = await subscribe(sio_connect, hub, key, project, transports=transports)
    assert await feed.expect("SESSIONS") == {"total": 0, "sessions": []}

    client = await tracker(sio_connect, hub, project, "s1", timestamp=5000, userID="ann")
    started = await feed.expect("SESSION_STARTED")
    assert started == await record(hub, project, "s1")
    assert (started["sessionID"], started["userID"], started["live"]) == ("s1", "ann", True)

    await update(client, pageTitle="Checkout", metadata={"plan": "pro"})
    await update(client, active=False)
    first = await feed.expect("SESSION_UPDATED")
    assert (first["pageTitle"], first["metadata"], first["active"]) == (
        "Checkout",
        {"plan": "pro"},
        True,
    )
    second = await feed.expect("SESSION_UPDATED")
    assert second == await record(hub, project, "s1")
    assert second["active"] is False

    await client.disconnect()
    ended = await feed.expect("SESSION_ENDED")
    assert ended == {"sessionID": "s1", "projectKey": project.project_key, "reason": "ended"}


async def test_sessions_of_other_projects_and_filters_are_not_sent(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    other = await hub.project("other")
    filters = [{"type": "METADATA", "source": "plan", "value": ["pro"], "operator": "is"}]
    _, feed = await subscribe(sio_connect, hub, key, project, filters)
    await feed.expect("SESSIONS")
    await tracker(sio_connect, hub, other, "elsewhere", metadata={"plan": "pro"})
    await tracker(sio_connect, hub, project, "free", metadata={"plan": "free"})
    await tracker(sio_connect, hub, project, "pro", metadata={"plan": "PRO"})
    # Events come in order: the first one is the session that matches.
    assert (await feed.expect("SESSION_STARTED"))["sessionID"] == "pro"
    assert feed.pending() == 0


async def test_an_update_moves_a_session_out_of_and_into_the_set(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    filters = [{"type": "PAGETITLE", "value": ["checkout"]}]
    client = await tracker(sio_connect, hub, project, "s1", pageTitle="Home")
    _, feed = await subscribe(sio_connect, hub, key, project, filters)
    assert (await feed.expect("SESSIONS"))["total"] == 0

    await update(client, pageTitle="Checkout step 1")
    assert (await feed.expect("SESSION_STARTED"))["pageTitle"] == "Checkout step 1"
    await update(client, pageTitle="Checkout step 2")
    assert (await feed.expect("SESSION_UPDATED"))["pageTitle"] == "Checkout step 2"
    await update(client, pageTitle="Thanks")
    assert await feed.expect("SESSION_ENDED") == {
        "sessionID": "s1",
        "projectKey": project.project_key,
        "reason": "filtered",
    }
    await update(client, pageTitle="Home again")  # out of the set: nothing to tell
    await update(client, pageTitle="checkout again")
    assert (await feed.expect("SESSION_STARTED"))["pageTitle"] == "checkout again"
    await client.disconnect()
    assert (await feed.expect("SESSION_ENDED"))["reason"] == "ended"
    assert feed.pending() == 0


async def test_subscribers_of_the_same_filters_each_get_every_change(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    one = [{"type": "USEROS", "value": ["mac"]}, {"type": "USERID", "value": ["a", "b"]}]
    # The same filters written another way: one group, one room.
    same = [{"type": "userid", "value": ["B", "A"]}, {"type": "UserOs", "value": ["MAC"]}]
    first, feed1 = await subscribe(sio_connect, hub, key, project, one)
    _, feed2 = await subscribe(sio_connect, hub, key, project, same)
    for feed in (feed1, feed2):
        await feed.expect("SESSIONS")
    await first.disconnect()  # the other subscriber of the group goes on
    await tracker(sio_connect, hub, project, "s1", userOs="Mac OS", userID="ab")
    assert (await feed2.expect("SESSION_STARTED"))["sessionID"] == "s1"
    assert feed1.events == [("SESSIONS", {"total": 0, "sessions": []})]


async def test_a_node_forgets_the_groups_nobody_subscribes_to(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    feed = hub.app[SIO].namespace_handlers[LIVE]
    clients = []
    for filters in ([], [{"type": "USEROS", "value": ["mac"]}], []):
        client, events = await subscribe(sio_connect, hub, key, project, filters)
        await events.expect("SESSIONS")
        clients.append(client)
    assert len(feed._groups) == 2
    await resubscribe(clients[1], {"filters": []})  # its old group has nobody left
    assert len(feed._groups) == 1
    for client in clients:
        await client.disconnect()
    # The server learns of a client's disconnect a little later, with no event to await here.
    async with asyncio.timeout(WAIT):
        while feed._subscribers:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert feed._groups == {}
    assert feed._by_project == {}


# -- SUBSCRIBE -----------------------------------------------------------------------------------


async def test_subscribe_replaces_the_subscription(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    mac = await tracker(sio_connect, hub, project, "mac", userOs="Mac OS", timestamp=2)
    win = await tracker(sio_connect, hub, project, "win", userOs="Windows", timestamp=1)
    client, feed = await subscribe(
        sio_connect, hub, key, project, [{"type": "USEROS", "value": ["mac"]}]
    )
    assert ids((await feed.expect("SESSIONS"))["sessions"]) == ["mac"]

    ack = await resubscribe(client, {"filters": [{"type": "USEROS", "value": ["windows"]}]})
    assert ack == {"ok": True}
    # The ack comes once the new snapshot is out.
    assert feed.events[-1] == (
        "SESSIONS",
        {"total": 1, "sessions": [await record(hub, project, "win")]},
    )
    await feed.expect("SESSIONS")

    await update(mac, pageTitle="no longer watched")
    await update(win, pageTitle="watched")
    assert (await feed.expect("SESSION_UPDATED"))["sessionID"] == "win"

    # Another project the key covers, no filters.
    other = await hub.project("other")
    org_key = await hub.key(None)
    org_client, org_feed = await subscribe(sio_connect, hub, org_key, project)
    await org_feed.expect("SESSIONS")
    await add_sessions(hub, other, {"x": 1})
    assert await resubscribe(org_client, {"projectKey": other.project_key}) == {"ok": True}
    assert ids((await org_feed.expect("SESSIONS"))["sessions"]) == ["x"]
    await update(win, pageTitle="not this project")
    await hub.app[REGISTRY].update(other.project_key, "x", {"pageTitle": "this one"})
    assert (await org_feed.expect("SESSION_UPDATED"))["sessionID"] == "x"


BAD_SUBSCRIBES = [
    ("not an object", "invalid_payload", "SUBSCRIBE takes an object"),
    ({"filters": [{"type": "NOPE"}]}, "invalid_payload", "filters[0].type unknown filter type"),
    ({"filters": {"type": "USEROS"}}, "invalid_payload", "filters must be a list"),
    (
        {"filters": [{"type": "METADATA", "value": ["x"]}]},
        "invalid_payload",
        "filters[0].source is required",
    ),
    ({"projectKey": "unknownProject123"}, "not_found", "unknown project key"),
    ({"projectKey": 5}, "invalid_payload", "projectKey must be a string"),
    ({"projectKey": "{other}"}, "forbidden", "does not cover this project"),
]


@pytest.mark.parametrize(("payload", "code", "message"), BAD_SUBSCRIBES)
async def test_a_bad_subscribe_is_refused_and_the_subscription_stays(
    hub: Hub,
    project: Project,
    key: NewKey,
    sio_connect: ClientFactory,
    payload: Any,
    code: str,
    message: str,
) -> None:
    other = await hub.project("other")
    if isinstance(payload, dict) and payload.get("projectKey") == "{other}":
        payload = {"projectKey": other.project_key}
    client, feed = await subscribe(sio_connect, hub, key, project)
    await feed.expect("SESSIONS")

    ack = await resubscribe(client, payload)

    assert ack["ok"] is False
    assert ack["error"]["code"] == code
    assert message in ack["error"]["message"]
    error = await feed.expect("ERROR")
    assert error == ack["error"]
    await tracker(sio_connect, hub, project, "s1")
    assert (await feed.expect("SESSION_STARTED"))["sessionID"] == "s1"


async def test_subscribe_after_the_key_was_revoked_is_refused(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    client, feed = await subscribe(sio_connect, hub, key, project)
    await feed.expect("SESSIONS")
    await hub.app[STORE].revoke_key(key.key_id)
    ack = await resubscribe(client, {"filters": []})
    assert ack["error"]["code"] == "unauthorized"
    assert (await feed.expect("ERROR"))["code"] == "unauthorized"


async def test_an_unknown_event_gets_an_error(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    client, feed = await subscribe(sio_connect, hub, key, project)
    await feed.expect("SESSIONS")
    ack = await client.call("UPDATE_SESSION", {"pageTitle": "x"}, namespace=LIVE, timeout=WAIT)
    assert ack["error"]["code"] == "unknown_event"
    assert (await feed.expect("ERROR"))["code"] == "unknown_event"


# -- refusals ------------------------------------------------------------------------------------

REFUSALS = [
    (None, "invalid or missing API key"),
    ({"projectKey": "{key}"}, "invalid or missing API key"),
    ({"apiKey": "lh_nope_nope", "projectKey": "{key}"}, "invalid or missing API key"),
    ({"apiKey": 12, "projectKey": "{key}"}, "invalid or missing API key"),
    ({"apiKey": "{revoked}", "projectKey": "{key}"}, "invalid or missing API key"),
    ({"apiKey": "{secret}"}, "projectKey is required"),
    ({"apiKey": "{secret}", "projectKey": "unknownProject123"}, "unknown project key"),
    ({"apiKey": "{secret}", "projectKey": "not a key!"}, "unknown project key"),
    ({"apiKey": "{other}", "projectKey": "{key}"}, "this API key does not cover this project"),
    (
        {"apiKey": "{secret}", "projectKey": "{key}", "filters": [{"type": "USERNAME"}]},
        "filters[0].type unknown filter type 'USERNAME'",
    ),
    (
        {
            "apiKey": "{secret}",
            "projectKey": "{key}",
            "filters": [{"type": "USEROS", "value": "x"}],
        },
        "filters[0].value must be a list of strings",
    ),
    (
        {"apiKey": "{secret}", "projectKey": "{key}", "filters": "USEROS"},
        "filters must be a list of filter objects",
    ),
]


@pytest.mark.parametrize(("auth", "message"), REFUSALS)
async def test_refusals(
    hub: Hub,
    project: Project,
    key: NewKey,
    sio_connect: ClientFactory,
    auth: dict[str, Any] | None,
    message: str,
) -> None:
    other = await hub.project("other")
    other_key = await hub.key(other.project_id)
    revoked = await hub.key(project.project_id)
    await hub.app[STORE].revoke_key(revoked.key_id)
    names = {
        "{key}": project.project_key,
        "{secret}": key.secret,
        "{other}": other_key.secret,
        "{revoked}": revoked.secret,
    }
    if auth is not None:
        auth = {k: names.get(v, v) if isinstance(v, str) else v for k, v in auth.items()}
    feed = Feed()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio_connect(hub.url, auth=auth, namespaces=[LIVE], handlers=feed.handlers())
    data = await feed.expect("connect_error")
    assert set(data) == {"message"}
    assert message in data["message"]


# -- nothing missed, nothing repeated --------------------------------------------------------


async def test_no_change_is_missed_or_repeated_while_subscribing_mid_stream(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    writers = [
        await tracker(sio_connect, hub, project, f"w{n}", metadata={"n": "0"}) for n in range(3)
    ]
    stop = asyncio.Event()
    written: dict[str, int] = {}

    async def write(client: socketio.AsyncClient, session: str) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            await update(client, metadata={"n": str(n)})
            written[session] = n

    tasks = [asyncio.create_task(write(c, f"w{n}")) for n, c in enumerate(writers)]
    try:
        feeds = []
        for n in range(6):  # subscribers arriving one after another while updates stream in
            await asyncio.sleep(0.02)
            client, feed = await subscribe(sio_connect, hub, key, project)
            feeds.append(feed)
            if n % 2:  # and some of them subscribing again mid-stream
                assert await resubscribe(client, {"filters": []}) == {"ok": True}
        await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert all(n > 5 for n in written.values()), written
    # A last change: whatever a subscriber got twice would arrive before it.
    await tracker(sio_connect, hub, project, "marker", metadata={"n": "0"})
    final = {s: str(n) for s, n in written.items()} | {"marker": "0"}

    for feed in feeds:
        seen: dict[str, str] = {}
        await feed.until(revisions(seen))
        assert seen == final


def revisions(seen: dict[str, str]) -> Callable[[str, Any], bool]:
    """Rebuild, in ``seen``, the sessions' ``metadata.n`` from a feed, up to the marker."""

    def replay(event: str, data: Any) -> bool:
        if event == "SESSIONS":
            seen.clear()
            seen.update({r["sessionID"]: r["metadata"]["n"] for r in data["sessions"]})
        elif event == "SESSION_UPDATED":
            # No gap and no repeat: each update is the next revision of its session.
            revision = str(int(seen[data["sessionID"]]) + 1)
            assert data["metadata"]["n"] == revision, (data["sessionID"], seen)
            seen[data["sessionID"]] = revision
        else:
            assert (event, data["sessionID"]) == ("SESSION_STARTED", "marker"), (event, data)
            seen["marker"] = data["metadata"]["n"]
            return True
        return False

    return replay


async def test_no_start_or_end_is_missed_or_repeated_while_subscribing(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    registry = hub.app[REGISTRY]
    ended: asyncio.Queue[str] = asyncio.Queue()
    registry.listen(lambda c: ended.put_nowait(c.session_id) if c.kind == "ended" else None)
    stop = asyncio.Event()
    left: list[str] = []

    async def churn() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            record = blank_record(project.project_key, project.project_id, f"c{n}", n)
            await registry.join_tab(record, "t1")
            if n % 2 == 0:
                await registry.update(project.project_key, f"c{n - 1}", {"pageTitle": "x"})
            if n % 3:  # two sessions in three end (after the grace)
                await registry.leave_tab(project.project_key, f"c{n}", "t1")
                left.append(f"c{n}")
            await asyncio.sleep(0.002)  # a steady pace (the in-process registry never waits)

    task = asyncio.create_task(churn())
    try:
        feeds = []
        for _ in range(4):
            await asyncio.sleep(0.05)
            feeds.append((await subscribe(sio_connect, hub, key, project))[1])
        await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
    gone: set[str] = set()
    while not gone.issuperset(left):
        gone.add(await asyncio.wait_for(ended.get(), WAIT))
    await add_sessions(hub, project, {"marker": 0})  # anything repeated would come before it
    final = set(ids((await registry.query(project.project_key, SessionQuery(limit=1000))).sessions))
    assert len(final) > 3

    for feed in feeds:
        members: set[str] = set()
        await feed.until(membership(members))
        assert members == final


def membership(members: set[str]) -> Callable[[str, Any], bool]:
    """Rebuild, in ``members``, the set a feed describes, up to the marker's start."""

    def replay(event: str, data: Any) -> bool:
        if event == "SESSIONS":
            members.update(ids(data["sessions"]))
        elif event == "SESSION_STARTED":
            assert data["sessionID"] not in members
            members.add(data["sessionID"])
        elif event == "SESSION_UPDATED":
            assert data["sessionID"] in members
        else:
            assert event == "SESSION_ENDED", (event, data)
            members.remove(data["sessionID"])
        return event == "SESSION_STARTED" and data["sessionID"] == "marker"

    return replay


# -- a cluster ---------------------------------------------------------------------------------


async def test_subscribers_on_every_node_get_every_change_once(
    make_hub: HubFactory, redis_url: str, sqlite_url: str, sio_connect: ClientFactory
) -> None:
    node_a = await make_hub(redis_url=redis_url, database_url=sqlite_url, **QUICK)
    node_b = await make_hub(redis_url=redis_url, database_url=sqlite_url, **QUICK)
    project = await node_a.project()
    key = await node_a.key(project.project_id)
    # The same filters on both nodes: the same room name on each, which an emit through the
    # Redis manager would deliver twice.
    filters = [{"type": "USEROS", "value": ["mac"]}]
    _, on_a = await subscribe(sio_connect, node_a, key, project, filters)
    _, on_b = await subscribe(sio_connect, node_b, key, project, filters)
    for feed in (on_a, on_b):
        await feed.expect("SESSIONS")

    client = await tracker(sio_connect, node_a, project, "s1", userOs="Mac OS")
    await update(client, pageTitle="one")
    await client.disconnect()
    for feed in (on_a, on_b):
        await feed.until(lambda e, d: e == "SESSION_ENDED")
    # A last session: anything repeated before it would come ahead of it.
    await tracker(sio_connect, node_b, project, "s2", userOs="Mac OS")

    for feed in (on_a, on_b):
        await feed.until(lambda e, d: e == "SESSION_STARTED" and d["sessionID"] == "s2")
        assert [(e, d.get("sessionID")) for e, d in feed.events] == [
            ("SESSIONS", None),
            ("SESSION_STARTED", "s1"),
            ("SESSION_UPDATED", "s1"),
            ("SESSION_ENDED", "s1"),
            ("SESSION_STARTED", "s2"),
        ]
        assert feed.events[2][1]["pageTitle"] == "one"
        assert feed.events[3][1]["reason"] == "ended"
