"""The assist relay end to end (SPEC §4.4): real Socket.IO clients against real hubs.

Each room event is checked under its exact condition, on the in-process registry and on Redis,
and then across two nodes sharing one Redis and one database (tracker on A, agent on B).
Absence is checked against a later event that travels the same path, never with a sleep.
"""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import jwt
import pytest
import redis.asyncio as aioredis
import socketio

from hub import constants as c
from hub.agent import agent_role
from hub.registry.agents import Agent, AgentDirectory, MemoryAgentDirectory
from hub.registry.agents_redis import RedisAgentDirectory
from hub.registry.redis_conn import stop_task
from hub.settings import Settings
from hub.store.base import NewKey, Project
from hub.tokens import AgentTokens
from hub.tracker import tracker_role
from hub.typedefs import AGENT_TOKENS, REGISTRY, SIO, STORE
from tests.conftest import ClientFactory, Hub, HubFactory

WAIT = 5.0
SESSION = "s1"


class Inbox:
    """Every event one client received, in order; ``next`` awaits the next one of a name."""

    def __init__(self) -> None:
        self.log: list[tuple[str, tuple[Any, ...]]] = []
        self._taken: dict[str, int] = {}
        self._changed = asyncio.Condition()

    async def record(self, event: str, *args: Any) -> None:
        async with self._changed:
            self.log.append((event, args))
            self._changed.notify_all()

    def handlers(self) -> dict[str, Callable[..., Coroutine[Any, Any, None]]]:
        async def connect_error(data: Any) -> None:
            await self.record("connect_error", data)

        return {"*": self.record, "connect_error": connect_error}

    def of(self, event: str) -> list[tuple[Any, ...]]:
        return [args for name, args in self.log if name == event]

    async def next(self, event: str) -> tuple[Any, ...]:
        """The arguments of the next not yet taken ``event``."""

        async def arrived() -> tuple[Any, ...]:
            async with self._changed:
                await self._changed.wait_for(
                    lambda: len(self.of(event)) > self._taken.get(event, 0)
                )
                index = self._taken.get(event, 0)
                self._taken[event] = index + 1
                return self.of(event)[index]

        return await asyncio.wait_for(arrived(), WAIT)

    def names(self) -> list[str]:
        return [name for name, _ in self.log]


class Client:
    """A connected Socket.IO client and what it received."""

    def __init__(self, sio: socketio.AsyncClient, inbox: Inbox) -> None:
        self.sio = sio
        self.inbox = inbox

    @property
    def sid(self) -> str:
        sid = self.sio.get_sid("/")
        assert isinstance(sid, str)
        return sid

    async def next(self, event: str) -> tuple[Any, ...]:
        return await self.inbox.next(event)

    async def call(self, event: str, *args: Any) -> Any:
        return await self.sio.call(event, args[0] if len(args) == 1 else args, timeout=WAIT)


async def tracker(
    sio_connect: ClientFactory, hub: Hub, project: Project, tab: str, session: str = SESSION
) -> Client:
    inbox = Inbox()
    sio = await sio_connect(
        hub.url,
        query={"identity": "session", "peerId": f"{project.project_key}-{session}", "tabId": tab},
        handlers=inbox.handlers(),
    )
    await settle(hub)
    return Client(sio, inbox)


async def agent(
    sio_connect: ClientFactory,
    hub: Hub,
    project_key: str,
    auth: Any,
    *,
    info: Any = None,
    session: str = SESSION,
    transports: list[str] | None = None,
) -> Client:
    inbox = Inbox()
    agent_info = json.dumps(info if info is not None else {"id": "a1", "name": "Ann"})
    sio = await sio_connect(
        hub.url,
        query={"identity": "agent", "peerId": f"{project_key}-{session}", "agentInfo": agent_info},
        auth=auth,
        handlers=inbox.handlers(),
        transports=transports,
    )
    await settle(hub)
    return Client(sio, inbox)


async def refusal(
    sio_connect: ClientFactory,
    hub: Hub,
    project_key: str,
    auth: Any,
    *,
    agent_info: str | None = '{"id": "a1"}',
    peer_id: str | None = None,
) -> str:
    """Connect an agent that must be refused; the connect_error message."""
    inbox = Inbox()
    query = {
        "identity": "agent",
        "peerId": f"{project_key}-{SESSION}" if peer_id is None else peer_id,
    }
    if agent_info is not None:
        query["agentInfo"] = agent_info
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio_connect(hub.url, query=query, auth=auth, handlers=inbox.handlers())
    (data,) = await inbox.next("connect_error")
    message: str = data["message"]
    return message


async def settle(*hubs: Hub) -> None:
    """Wait until the background announcements of both roles (hooks, NEW_AGENT …) are done."""
    for hub in hubs:
        sio = hub.app[SIO]
        for tasks in (agent_role(sio)._tasks, tracker_role(sio)._tasks):
            while tasks:
                await asyncio.gather(*list(tasks), return_exceptions=True)


async def tab_gone(hub: Hub, project: Project, tab_id: str) -> None:
    """Wait until the server let a disconnected tab go (a non-last tab's leaving sends nothing)."""
    registry = hub.app[REGISTRY]
    deadline = time.monotonic() + WAIT
    while tab_id in await registry.tabs(project.project_key, SESSION):
        assert time.monotonic() < deadline, f"tab {tab_id} is still listed"
        await asyncio.sleep(0.01)


# Sessions end soon after their last tab unless a test needs a longer grace.
QUICK: dict[str, Any] = {"session_grace": 0.2, "ping_interval": 0.5, "ping_timeout": 1.0}


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "redis":
        return {"redis_url": request.getfixturevalue("redis_url")}
    return {}


@pytest.fixture
async def hub(make_hub: HubFactory, backend: dict[str, Any]) -> Hub:
    return await make_hub(**{**QUICK, "session_grace": 5.0}, **backend)


@pytest.fixture
async def project(hub: Hub) -> Project:
    return await hub.project()


@pytest.fixture
async def key(hub: Hub, project: Project) -> NewKey:
    return await hub.key(project.project_id)


def key_auth(key: NewKey) -> dict[str, str]:
    return {"apiKey": key.secret}


# -- joining -------------------------------------------------------------------------------------


async def test_new_agent_reaches_the_room_but_not_the_agent(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    tab = await tracker(sio_connect, hub, project, "t1")
    first = await agent(sio_connect, hub, project.project_key, key_auth(key))
    assert await tab.next("NEW_AGENT") == (first.sid, {"id": "a1", "name": "Ann"})
    second = await agent(
        sio_connect, hub, project.project_key, key_auth(key), info={"id": 7, "name": "Bo"}
    )
    assert await tab.next("NEW_AGENT") == (second.sid, {"id": 7, "name": "Bo"})
    assert await first.next("NEW_AGENT") == (second.sid, {"id": 7, "name": "Bo"})
    # The session has a tab: nobody is told it is disconnected, nobody hears of itself.
    await tab.call("PING", {"n": 1})
    assert await second.next("PING") == ({"n": 1},)
    assert await first.next("PING") == ({"n": 1},)
    assert "SESSION_DISCONNECTED" not in first.inbox.names() + second.inbox.names()
    assert second.inbox.of("NEW_AGENT") == []
    assert len(tab.inbox.of("NEW_AGENT")) == 2


async def test_agent_joining_a_session_in_its_grace_is_told_it_is_disconnected(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    tab = await tracker(sio_connect, hub, project, "t1")
    await tab.sio.disconnect()
    await settle(hub)
    watcher = await agent(sio_connect, hub, project.project_key, key_auth(key))
    assert await watcher.next("SESSION_DISCONNECTED") == (f"{project.project_key}-{SESSION}",)


async def test_agent_may_wait_for_a_session_that_is_not_live_yet(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    watcher = await agent(sio_connect, hub, project.project_key, key_auth(key))
    assert await watcher.next("SESSION_DISCONNECTED") == (f"{project.project_key}-{SESSION}",)
    tab = await tracker(sio_connect, hub, project, "t1")
    assert await watcher.next("SESSION_RECONNECTED") == (f"{project.project_key}-{SESSION}",)
    assert await tab.next("AGENTS_CONNECTED") == ([watcher.sid],)
    await tab.call("PING", 1)
    assert await watcher.next("PING") == (1,)


async def test_tab_joining_a_room_with_agents_gets_their_ids_and_infos(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    first_tab = await tracker(sio_connect, hub, project, "t1")
    a1 = await agent(sio_connect, hub, project.project_key, key_auth(key), info={"id": "a1"})
    a2 = await agent(sio_connect, hub, project.project_key, key_auth(key), info={"id": "a2"})
    assert first_tab.inbox.of("AGENTS_CONNECTED") == []  # it joined before any agent
    second_tab = await tracker(sio_connect, hub, project, "t2")
    assert await second_tab.next("AGENTS_CONNECTED") == ([a1.sid, a2.sid],)
    assert await second_tab.next("AGENTS_INFO_CONNECTED") == ([{"id": "a1"}, {"id": "a2"}],)
    # A second tab is no reconnection of the session.
    await second_tab.call("PING", 2)
    assert await a1.next("PING") == (2,)
    assert a1.inbox.of("SESSION_RECONNECTED") == []


async def test_tab_joining_a_room_without_agents_hears_nothing(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    tab = await tracker(sio_connect, hub, project, "t1")
    watcher = await agent(sio_connect, hub, project.project_key, key_auth(key))
    await tab.next("NEW_AGENT")
    assert "AGENTS_CONNECTED" not in tab.inbox.names()
    assert "AGENTS_INFO_CONNECTED" not in tab.inbox.names()
    assert watcher.inbox.of("SESSION_RECONNECTED") == []


# -- leaving -------------------------------------------------------------------------------------


async def test_agents_leaving_then_no_agent_when_none_remains(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    tab = await tracker(sio_connect, hub, project, "t1")
    a1 = await agent(sio_connect, hub, project.project_key, key_auth(key))
    a2 = await agent(sio_connect, hub, project.project_key, key_auth(key))
    a1_sid, a2_sid = a1.sid, a2.sid
    await a1.sio.disconnect()
    assert await tab.next("AGENT_DISCONNECTED") == (a1_sid,)
    assert await a2.next("AGENT_DISCONNECTED") == (a1_sid,)
    await a2.sio.disconnect()
    assert await tab.next("AGENT_DISCONNECTED") == (a2_sid,)
    await tab.next("NO_AGENT")
    # NO_AGENT came once, after the last agent, not after the first.
    names = [n for n in tab.inbox.names() if n in ("AGENT_DISCONNECTED", "NO_AGENT")]
    assert names == ["AGENT_DISCONNECTED", "AGENT_DISCONNECTED", "NO_AGENT"]
    assert a2.inbox.of("NO_AGENT") == []


async def test_only_the_last_tab_leaving_disconnects_the_session(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    t1 = await tracker(sio_connect, hub, project, "t1")
    t2 = await tracker(sio_connect, hub, project, "t2")
    watcher = await agent(sio_connect, hub, project.project_key, key_auth(key))
    await t1.sio.disconnect()
    await tab_gone(hub, project, "t1")
    await t2.call("PING", "after t1 left")
    assert await watcher.next("PING") == ("after t1 left",)
    assert watcher.inbox.of("SESSION_DISCONNECTED") == []
    await t2.sio.disconnect()
    assert await watcher.next("SESSION_DISCONNECTED") == (f"{project.project_key}-{SESSION}",)


async def test_a_tab_back_within_the_grace_reconnects_the_session(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    tab = await tracker(sio_connect, hub, project, "t1")
    watcher = await agent(sio_connect, hub, project.project_key, key_auth(key))
    await tab.sio.disconnect()
    await watcher.next("SESSION_DISCONNECTED")
    back = await tracker(sio_connect, hub, project, "t1")
    assert await watcher.next("SESSION_RECONNECTED") == (f"{project.project_key}-{SESSION}",)
    assert await back.next("AGENTS_CONNECTED") == ([watcher.sid],)


# -- relay ---------------------------------------------------------------------------------------


async def test_tracker_events_reach_every_agent(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    tab = await tracker(sio_connect, hub, project, "t1")
    agents = [await agent(sio_connect, hub, project.project_key, key_auth(key)) for _ in range(2)]
    assert await tab.call("UPDATE_SESSION", {"pageTitle": "Checkout"}) == {"ok": True}
    wrapped = {"meta": {"tabId": "x"}, "data": {"userID": "u1"}}
    assert await tab.call("UPDATE_SESSION", wrapped) == {"ok": True}
    assert await tab.call("SESSION_MESSAGE", {"role": "user", "content": "hi", "timestamp": 5})
    assert await tab.call("MOUSE_MOVE", {"x": 1, "y": 2}) == {"ok": True}
    assert await tab.call("LIST_EVENT", [1, 2]) == {"ok": True}
    for watcher in agents:
        assert await watcher.next("UPDATE_SESSION") == (
            {"meta": {"tabId": "t1", "version": 1}, "data": {"pageTitle": "Checkout"}},
        )
        assert await watcher.next("UPDATE_SESSION") == (
            {"meta": {"tabId": "t1", "version": 1}, "data": {"userID": "u1"}},
        )
        assert await watcher.next("SESSION_MESSAGE") == (
            {"role": "user", "content": "hi", "timestamp": 5},
        )
        assert await watcher.next("MOUSE_MOVE") == ({"x": 1, "y": 2},)
        assert await watcher.next("LIST_EVENT") == ([1, 2],)


async def test_a_message_gets_its_timestamp_before_it_is_relayed(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    tab = await tracker(sio_connect, hub, project, "t1")
    watcher = await agent(sio_connect, hub, project.project_key, key_auth(key))
    before = int(time.time() * 1000)
    await tab.call("SESSION_MESSAGE", {"role": "user", "content": "hi"})
    ((message,),) = [await watcher.next("SESSION_MESSAGE")]
    assert message["content"] == "hi" and message["timestamp"] >= before


async def test_refused_tracker_events_are_not_relayed(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    tab = await tracker(sio_connect, hub, project, "t1")
    watcher = await agent(sio_connect, hub, project.project_key, key_auth(key))
    refused = await tab.call("UPDATE_SESSION", {"pageTitle": 5})
    assert refused["ok"] is False
    await tab.call("UPDATE_SESSION", {"pageTitle": "ok"})
    assert await watcher.next("UPDATE_SESSION") == (
        {"meta": {"tabId": "t1", "version": 1}, "data": {"pageTitle": "ok"}},
    )
    assert len(watcher.inbox.of("UPDATE_SESSION")) == 1


async def test_agent_events_go_to_the_named_tab_else_the_first(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    t1 = await tracker(sio_connect, hub, project, "t1")
    t2 = await tracker(sio_connect, hub, project, "t2")
    watcher = await agent(sio_connect, hub, project.project_key, key_auth(key))
    to_t2 = {"meta": {"tabId": "t2"}, "x": 1}
    assert await watcher.call("CLICK", to_t2) == {"ok": True}
    assert await t2.next("CLICK") == (watcher.sid, to_t2)
    assert await watcher.call("CLICK", {"x": 2}) == {"ok": True}
    assert await t1.next("CLICK") == (watcher.sid, {"x": 2})
    assert await watcher.call("CLICK", "plain") == {"ok": True}
    assert await t1.next("CLICK") == (watcher.sid, "plain")
    assert await watcher.call("CLICK", {"meta": {"tabId": "t1"}}) == {"ok": True}
    assert await t1.next("CLICK") == (watcher.sid, {"meta": {"tabId": "t1"}})
    assert len(t2.inbox.of("CLICK")) == 1
    # The first tab leaving makes the second one the default.
    await t1.sio.disconnect()
    await tab_gone(hub, project, "t1")
    await watcher.call("CLICK", {"x": 3})
    assert await t2.next("CLICK") == (watcher.sid, {"x": 3})


async def test_agent_events_with_no_tab_to_go_to_get_an_error(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    tab = await tracker(sio_connect, hub, project, "t1")
    watcher = await agent(sio_connect, hub, project.project_key, key_auth(key))
    answer = await watcher.call("CLICK", {"meta": {"tabId": "nope"}})
    assert answer["ok"] is False and answer["error"]["code"] == "tab_not_connected"
    (error,) = await watcher.next("ERROR")
    assert error["code"] == "tab_not_connected" and error["event"] == "CLICK"
    answer = await watcher.call("CLICK", {"meta": {"tabId": 5}})
    assert answer["error"]["code"] == "invalid_payload"
    await tab.sio.disconnect()
    await watcher.next("SESSION_DISCONNECTED")
    answer = await watcher.call("CLICK", {"x": 1})
    assert answer["error"] == {
        "code": "tab_not_connected",
        "message": "the session has no tab connected",
        "event": "CLICK",
    }
    assert tab.inbox.of("CLICK") == []


async def test_agent_events_obey_the_size_and_rate_limits(
    make_hub: HubFactory, backend: dict[str, Any], sio_connect: ClientFactory
) -> None:
    hub = await make_hub(
        **QUICK, **backend, limits={"event_bytes": 1000, "events_per_second": 1, "event_burst": 3}
    )
    project = await hub.project()
    key = await hub.key(project.project_id)
    tab = await tracker(sio_connect, hub, project, "t1")
    watcher = await agent(sio_connect, hub, project.project_key, key_auth(key))
    big = await watcher.call("CLICK", {"blob": "x" * 2000})
    assert big["ok"] is False and big["error"]["code"] == "too_large"
    assert (await watcher.next("ERROR"))[0]["code"] == "too_large"
    assert (await watcher.call("CLICK", 1))["ok"] is True
    assert (await watcher.call("CLICK", 2))["ok"] is True
    limited = await watcher.call("CLICK", 3)
    assert limited["ok"] is False and limited["error"]["code"] == "rate_limited"
    assert await tab.next("CLICK") == (watcher.sid, 1)
    assert await tab.next("CLICK") == (watcher.sid, 2)
    assert len(tab.inbox.of("CLICK")) == 2


async def test_polling_agents_work_too(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    tab = await tracker(sio_connect, hub, project, "t1")
    watcher = await agent(
        sio_connect, hub, project.project_key, key_auth(key), transports=["polling"]
    )
    await tab.next("NEW_AGENT")
    await tab.call("PING", 1)
    assert await watcher.next("PING") == (1,)
    await watcher.call("PONG", 2)
    assert await tab.next("PONG") == (watcher.sid, 2)
    await watcher.sio.disconnect()
    await tab.next("NO_AGENT")


async def test_nothing_is_published_for_a_session_nobody_watches(
    make_hub: HubFactory, redis_url: str, sio_connect: ClientFactory
) -> None:
    hub = await make_hub(redis_url=redis_url, **QUICK)
    project = await hub.project()
    key = await hub.key(project.project_id)
    listener = aioredis.from_url(redis_url)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(c.SOCKETIO_CHANNEL)
    try:
        tab = await tracker(sio_connect, hub, project, "t1")
        await tab.call("PING", "unwatched")
        await agent(sio_connect, hub, project.project_key, key_auth(key))
        await tab.call("PING", "watched")
        relayed: list[Any] = []
        while not relayed:
            message = await asyncio.wait_for(pubsub.get_message(timeout=WAIT), WAIT)
            if message is not None:
                body = json.loads(message["data"])
                if body.get("event") == "PING":
                    relayed.append(body["data"])
        # Published in order by one node: the unwatched one would have come first.
        assert relayed == [["watched"]]
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await listener.aclose()


# -- credentials and refusals --------------------------------------------------------------------


async def token_for(hub: Hub, project: Project, session: str = SESSION, **kwargs: Any) -> str:
    tokens = AgentTokens(hub.app[STORE].jwt_secret, **kwargs)
    return await tokens.mint(project.project_id, project.project_key, session)


async def test_tokens_and_keys_that_let_an_agent_in(
    hub: Hub, project: Project, sio_connect: ClientFactory
) -> None:
    org_key = await hub.key(None, "organization")
    token = await hub.app[AGENT_TOKENS].mint(project.project_id, project.project_key, SESSION)
    for auth in (
        {"token": token},
        {"token": "Bearer " + token},
        {"token": "bearer  " + token},
        {"apiKey": org_key.secret},
    ):
        watcher = await agent(sio_connect, hub, project.project_key, auth)
        assert watcher.sio.connected
        await watcher.sio.disconnect()


def other_algorithm(claims: dict[str, Any], secret: str) -> str:
    """A token signed with the right secret but HS512."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(claims, secret, algorithm="HS512")


async def test_bad_credentials_are_refused(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    other = await hub.project("other")
    other_key = await hub.key(other.project_id)
    revoked = await hub.key(project.project_id, "revoked")
    await hub.app[STORE].revoke_key(revoked.key_id)
    secret = await hub.app[STORE].jwt_secret()
    now = int(time.time())
    claims = {
        "projectId": project.project_id,
        "projectKey": project.project_key,
        "sessionId": SESSION,
        "iat": now,
        "exp": now + 60,
    }
    pk = project.project_key
    cases: list[tuple[Any, str]] = [
        (None, "auth is required"),
        ({}, "auth is required"),  # the client sends no auth for an empty one
        ({"key": "x"}, "auth must hold"),
        ({"token": ""}, "auth must hold"),
        ({"token": 5}, "auth must hold"),
        ({"token": "not-a-jwt"}, "invalid token"),
        ({"token": jwt.encode(claims, "x" * 40, algorithm="HS256")}, "invalid token"),
        ({"token": other_algorithm(claims, secret)}, "invalid token"),
        ({"token": jwt.encode(claims, None, algorithm="none")}, "invalid token"),
        ({"token": await token_for(hub, project, clock=lambda: now - 7200)}, "expired"),
        ({"token": await token_for(hub, project, "s2")}, "another session"),
        ({"token": await token_for(hub, other)}, "another project"),
        ({"apiKey": "lh_nope"}, "invalid or revoked API key"),
        ({"apiKey": revoked.secret}, "invalid or revoked API key"),
        ({"apiKey": other_key.secret}, "does not cover this project"),
    ]
    for auth, expected in cases:
        message = await refusal(sio_connect, hub, pk, auth)
        assert expected in message, (auth, message)
    # A token of the other project used on its own project key is fine; on ours it is not.
    other_token = await token_for(hub, other)
    assert "another project" in await refusal(sio_connect, hub, pk, {"token": other_token})
    assert not await agent_role(hub.app[SIO]).directory.has_agents(pk, SESSION)


async def test_bad_handshakes_are_refused(
    hub: Hub, project: Project, key: NewKey, sio_connect: ClientFactory
) -> None:
    pk, auth = project.project_key, key_auth(key)
    cases: list[tuple[str | None, str | None, str]] = [
        (None, None, "agentInfo is required"),
        ("", None, "agentInfo is required"),
        ("{nope", None, "agentInfo is not valid JSON"),
        ("NaN", None, "agentInfo is not valid JSON"),
        ('["id"]', None, "agentInfo must be a JSON object"),
        ("{}", None, "agentInfo.id must be"),
        ('{"id": ""}', None, "agentInfo.id must be"),
        ('{"id": true}', None, "agentInfo.id must be"),
        ('{"id": null}', None, "agentInfo.id must be"),
        ('{"id": {"a": 1}}', None, "agentInfo.id must be"),
        (json.dumps({"id": "a", "pad": "x" * 20_000}), None, "over the limit"),
        ('{"id": "a"}', "", "peerId is required"),
        ('{"id": "a"}', f"{pk}-", "sessionID is missing"),
        ('{"id": "a"}', f"{pk}-bad/id", "bad sessionID"),
        ('{"id": "a"}', "A1b2C3d4E5f6G7h8I9j0-s1", "unknown project key"),
        ('{"id": "a"}', "not_a_key-s1", "unknown project key"),
    ]
    for info, peer_id, expected in cases:
        message = await refusal(sio_connect, hub, pk, auth, agent_info=info, peer_id=peer_id)
        assert expected in message, (info, peer_id, message)


async def test_unknown_project_with_an_organization_key(
    hub: Hub, sio_connect: ClientFactory
) -> None:
    org_key = await hub.key(None)
    message = await refusal(sio_connect, hub, "A1b2C3d4E5f6G7h8I9j0", key_auth(org_key))
    assert message == "unknown project key"


# -- the directory -------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def directory(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], redis_url: str
) -> AsyncIterator[AgentDirectory]:
    if request.param == "memory":
        made: AgentDirectory = MemoryAgentDirectory()
    else:
        await beat(redis_url, "n1")
        made = RedisAgentDirectory(make_settings(redis_url=redis_url, node_id="n1"))
    await made.start()
    yield made
    await made.close()


async def beat(url: str, *nodes: str, age_ms: int = 0) -> None:
    """Put heartbeats in the registry's nodes zset, as the registry of those nodes does."""
    client = aioredis.from_url(url)
    now_ms = int(time.time() * 1000)
    await client.zadd(c.NODES_ZSET, {node: now_ms - age_ms for node in nodes})
    await client.aclose()


async def test_directory_contract(directory: AgentDirectory) -> None:
    assert await directory.agents("K", "s") == []
    assert not await directory.has_agents("K", "s")
    await directory.add("K", "s", Agent("x", {"id": "1"}))
    await directory.add("K", "s", Agent("y", {"id": "2", "é": "ü"}))
    await directory.add("K", "other", Agent("z", {"id": "3"}))
    assert await directory.agents("K", "s") == [
        Agent("x", {"id": "1"}),
        Agent("y", {"id": "2", "é": "ü"}),
    ]
    assert await directory.has_agents("K", "s")
    assert await directory.remove("K", "s", "x") == [Agent("y", {"id": "2", "é": "ü"})]
    assert await directory.remove("K", "s", "x") == [Agent("y", {"id": "2", "é": "ü"})]
    assert await directory.remove("K", "s", "y") == []
    assert not await directory.has_agents("K", "s")
    assert await directory.agents("K", "other") == [Agent("z", {"id": "3"})]


async def test_agents_of_a_dead_node_are_not_listed_and_are_cleaned(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    await beat(redis_url, "alive", "dead")
    alive = RedisAgentDirectory(make_settings(redis_url=redis_url, node_id="alive"))
    dead = RedisAgentDirectory(make_settings(redis_url=redis_url, node_id="dead"))
    await alive.start()
    await dead.start()
    try:
        await alive.add("K", "s", Agent("a", {"id": 1}))
        await dead.add("K", "s", Agent("d", {"id": 2}))
        assert [a.sid for a in await alive.agents("K", "s")] == ["a", "d"]
        # The node stops beating (killed): after HUB_NODE_TIMEOUT its agents are not listed …
        await beat(redis_url, "dead", age_ms=int(alive._timeout_ms) + 1000)
        assert [a.sid for a in await alive.agents("K", "s")] == ["a"]
        # … and the cleaning deletes them, also once the registry forgot the node entirely.
        client = aioredis.from_url(redis_url, decode_responses=True)
        await client.zrem(c.NODES_ZSET, "dead")
        await alive._clean()
        assert await client.hkeys(c.agents_key("K", "s")) == ["a"]
        assert not await client.exists(c.node_agents_key("dead"))
        assert await client.smembers(c.AGENT_NODES_SET) == {"alive"}
        # The node was only stalled: it writes its agents back at its next cleaning.
        await beat(redis_url, "dead")
        await dead._clean()
        assert sorted(await client.hkeys(c.agents_key("K", "s"))) == ["a", "d"]
        await client.aclose()
    finally:
        await alive.close()
        await dead.close()


async def test_a_node_restarted_with_its_id_drops_what_its_earlier_life_left(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    await beat(redis_url, "n1")
    settings = make_settings(redis_url=redis_url, node_id="n1")
    first = RedisAgentDirectory(settings)
    await first.start()
    await first.add("K", "s", Agent("ghost", {"id": 1}))
    assert first._task is not None
    # A crash: no close, nothing unlisted, and nothing more runs. redis-py can swallow a
    # cancellation that lands while it reads a reply, so cancel until the loop has stopped (else
    # it may still write its agents back after the restarted node has dropped them).
    await stop_task(first._task)
    second = RedisAgentDirectory(settings)
    await second.start()
    try:
        assert await second.agents("K", "s") == []
    finally:
        await second.close()
        await first._redis.aclose()


# -- across two nodes ----------------------------------------------------------------------------


@pytest.fixture
async def nodes(make_hub: HubFactory, redis_url: str) -> tuple[Hub, Hub]:
    """Two nodes sharing one Redis and one SQLite file (make_settings gives both the same)."""
    a = await make_hub(redis_url=redis_url, **{**QUICK, "session_grace": 5.0})
    b = await make_hub(redis_url=redis_url, **{**QUICK, "session_grace": 5.0})
    assert a.settings.database_url == b.settings.database_url
    return a, b


async def test_relay_and_room_events_across_nodes(
    nodes: tuple[Hub, Hub], sio_connect: ClientFactory
) -> None:
    a, b = nodes
    project = await a.project()
    key = await a.key(project.project_id)
    token = await a.app[AGENT_TOKENS].mint(project.project_id, project.project_key, SESSION)
    t1 = await tracker(sio_connect, a, project, "t1")
    # The token minted on A is good on B: both read the secret from the shared database.
    watcher = await agent(sio_connect, b, project.project_key, {"token": token})
    assert await t1.next("NEW_AGENT") == (watcher.sid, {"id": "a1", "name": "Ann"})
    # tracker (A) → agent (B)
    await t1.call("UPDATE_SESSION", {"pageTitle": "Cart"})
    assert await watcher.next("UPDATE_SESSION") == (
        {"meta": {"tabId": "t1", "version": 1}, "data": {"pageTitle": "Cart"}},
    )
    await t1.call("SESSION_MESSAGE", {"role": "user", "content": "help", "timestamp": 1})
    assert await watcher.next("SESSION_MESSAGE") == (
        {"role": "user", "content": "help", "timestamp": 1},
    )
    await t1.call("MOUSE", {"x": 1})
    assert await watcher.next("MOUSE") == ({"x": 1},)
    # agent (B) → tracker (A): the first tab, then a named one
    t2 = await tracker(sio_connect, a, project, "t2")
    assert await t2.next("AGENTS_CONNECTED") == ([watcher.sid],)
    assert await t2.next("AGENTS_INFO_CONNECTED") == ([{"id": "a1", "name": "Ann"}],)
    await watcher.call("CLICK", {"x": 9})
    assert await t1.next("CLICK") == (watcher.sid, {"x": 9})
    await watcher.call("CLICK", {"meta": {"tabId": "t2"}})
    assert await t2.next("CLICK") == (watcher.sid, {"meta": {"tabId": "t2"}})
    # A second agent on A sees the first leave; the tabs get NO_AGENT once both left.
    other = await agent(sio_connect, a, project.project_key, key_auth(key), info={"id": "a2"})
    assert await watcher.next("NEW_AGENT") == (other.sid, {"id": "a2"})
    watcher_sid = watcher.sid
    await watcher.sio.disconnect()
    assert await other.next("AGENT_DISCONNECTED") == (watcher_sid,)
    assert await t1.next("AGENT_DISCONNECTED") == (watcher_sid,)
    assert await t2.next("AGENT_DISCONNECTED") == (watcher_sid,)
    assert t2.inbox.of("NO_AGENT") == []
    other_sid = other.sid
    await other.sio.disconnect()
    assert await t2.next("AGENT_DISCONNECTED") == (other_sid,)
    await t2.next("NO_AGENT")
    assert len(t2.inbox.of("NO_AGENT")) == 1


async def test_session_disconnect_and_reconnect_across_nodes(
    nodes: tuple[Hub, Hub], sio_connect: ClientFactory
) -> None:
    a, b = nodes
    project = await a.project()
    key = await a.key(project.project_id)
    tab = await tracker(sio_connect, a, project, "t1")
    watcher = await agent(sio_connect, b, project.project_key, key_auth(key))
    await tab.next("NEW_AGENT")
    await tab.sio.disconnect()
    assert await watcher.next("SESSION_DISCONNECTED") == (f"{project.project_key}-{SESSION}",)
    late = await agent(sio_connect, b, project.project_key, key_auth(key), info={"id": "late"})
    assert await late.next("SESSION_DISCONNECTED") == (f"{project.project_key}-{SESSION}",)
    back = await tracker(sio_connect, a, project, "t1")
    assert await back.next("AGENTS_CONNECTED") == ([watcher.sid, late.sid],)
    assert await watcher.next("SESSION_RECONNECTED") == (f"{project.project_key}-{SESSION}",)
    assert await late.next("SESSION_RECONNECTED") == (f"{project.project_key}-{SESSION}",)
