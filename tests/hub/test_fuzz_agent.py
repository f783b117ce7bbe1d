"""Property: any agent handshake is accepted exactly when docs/protocol.md §7 allows it, else
refused with ``connect_error {"message"}``; any agent event is relayed to its tab or answered
``ERROR`` with an ack ``{"ok": false}``; never a crash, and nobody else notices (SPEC §4.4, §6).

Handshakes are generated whole (peerId, agentInfo of random JSON and garbage, auth objects of any
shape holding real, tampered, foreign-signed and random tokens or API keys) and sent by a real
``socketio.AsyncClient``. Whether one is valid is decided by ``parse_agent_handshake`` and
``AgentTokens.verify`` (unit-tested on their own) on what the client sends, and by the API key
itself; the hub must agree end to end. Events of random names, payloads and sizes go from a real
agent to a real tracker tab; which are relayed is decided by a model of §7 "Relay" written here.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
import socketio
from hypothesis import strategies as st

from hub.agent import agent_role, parse_agent_handshake
from hub.errors import HubError
from hub.handshake import parse_query
from hub.payloads import check_event_size
from hub.typedefs import REGISTRY, SIO
from tests.conftest import ClientFactory, HubFactory
from tests.hub.fuzz import ID_CHARS, big_text, fuzz, json_text, json_values
from tests.hub.test_agent import Inbox, settle

HANDSHAKE_EXAMPLES = 200
EVENT_EXAMPLES = 200
INFO_LIMIT = 2048  # bytes of agentInfo: small, so that sizes around it are cheap to send
EVENT_LIMIT = 8 * 1024
PATH = "/ws-assist/socket"
WAIT = 5.0
# No rate limit in the way: every refusal here comes from the payload.
LIMITS = {
    "session_info_bytes": INFO_LIMIT,
    "event_bytes": EVENT_LIMIT,
    "events_per_second": 100_000.0,
    "event_burst": 100_000,
}


@dataclass(frozen=True)
class Attempt:
    peer_id: str
    agent_info: str | None
    auth: Any

    def params(self) -> dict[str, str]:
        params = {"identity": "agent", "peerId": self.peer_id}
        if self.agent_info is not None:
            params["agentInfo"] = self.agent_info
        return params


def no_errors(caplog: pytest.LogCaptureFixture) -> bool:
    """No log line at ERROR or above: the hub never took a bad input for a crash."""
    return not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def tampered(token: str, index: int, char: str) -> str:
    """``token`` with one character replaced (header, claims or signature)."""
    index %= len(token)
    return token[:index] + char + token[index + 1 :]


def unsigned(claims: dict[str, Any]) -> str:
    """A JWT with ``alg: none`` and no signature."""

    def part(value: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def agent_infos() -> st.SearchStrategy[str | None]:
    ids = st.text(min_size=1, max_size=8) | st.integers(-(2**40), 2**40)
    good = st.fixed_dictionaries({"id": ids}, optional={"name": st.text(max_size=12)})
    odd = st.fixed_dictionaries(
        {}, optional={"id": json_values | st.just("") | st.booleans(), "x": json_values}
    )
    oversized = st.builds(lambda n: {"id": "a", "pad": "p" * n}, st.integers(INFO_LIMIT - 40, 3000))
    return (
        st.none()
        | good.map(json_text)
        | good.map(json_text)
        | odd.map(json_text)
        | oversized.map(json_text)
        | json_values.map(json_text)
        | st.text(max_size=30)
        | st.sampled_from(['{"id": NaN}', '{"id": 1, "v": Infinity}', "[" * 2000])
        | big_text.map(lambda t: t[: INFO_LIMIT + 512])
    )


def attempts(
    pk: str, tokens: list[str], api_key: str, other_key: str, secret: str
) -> st.SearchStrategy[Attempt]:
    sessions = st.sampled_from(["s1", "s2", "s-3"]) | st.text(ID_CHARS, min_size=1, max_size=8)
    projects = st.sampled_from([pk, pk, pk, "NoSuchProject42", ""]) | st.text(max_size=6)
    peer_ids = (
        st.builds(lambda p, s: f"{p}-{s}", projects, sessions)
        | st.sampled_from([pk, f"{pk}-"])
        | st.text(max_size=20)
    )
    claims = st.fixed_dictionaries(
        {
            "projectId": json_values,
            "projectKey": st.sampled_from([pk, "other"]),
            "sessionId": st.sampled_from(["s1", "s2"]),
            "iat": st.integers(0, 2**31) | json_values,
            "exp": st.integers(0, 2**40) | json_values,
        }
    )
    real = st.sampled_from(tokens)
    token_values = (
        real
        | real.map(lambda t: "Bearer " + t)
        | real.map(lambda t: " bEaReR  " + t + " ")
        | st.builds(tampered, real, st.integers(0, 400), st.sampled_from("Aa0_-.x"))
        | claims.map(lambda c: jwt.encode(c, secret, algorithm="HS256"))
        | claims.map(lambda c: jwt.encode(c, "not-the-secret-" * 3, algorithm="HS256"))
        | claims.map(unsigned)
        | st.text(max_size=40)
        | json_values
    )
    key_values = (
        st.sampled_from([api_key, f" {api_key} ", other_key])
        | st.builds(tampered, st.just(api_key), st.integers(0, 100), st.sampled_from("Aa0_-"))
        | st.text(max_size=40)
        | json_values
    )
    auths = (
        st.fixed_dictionaries({}, optional={"token": token_values, "apiKey": key_values})
        | st.fixed_dictionaries({"token": token_values})
        | st.fixed_dictionaries({"apiKey": key_values})
        | json_values.filter(not_a_number)
    )
    good_info = st.builds(lambda i: json_text({"id": i}), st.text(min_size=1, max_size=6))
    good_auth = st.sampled_from([{"token": tokens[0]}, {"apiKey": api_key}]) | real.map(
        lambda t: {"token": f"Bearer {t}", "apiKey": "ignored"}
    )
    valid = st.builds(Attempt, st.just(f"{pk}-s1"), good_info, good_auth)
    return valid | st.builds(Attempt, peer_ids, agent_infos(), auths)


def not_a_number(value: Any) -> bool:
    """Leave out a bare number as the whole auth: python-socketio writes CONNECT as ``0<json>``,
    and the server reads leading digits as a packet id, fails to decode the rest, logs a
    traceback and never answers (a python-socketio limitation, reported; the Socket.IO protocol
    wants an object there anyway)."""
    return isinstance(value, bool) or not isinstance(value, int | float)


async def test_any_agent_handshake_is_accepted_as_specified_or_refused_cleanly(
    make_hub: HubFactory, sio_connect: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    hub = await make_hub(session_grace=600.0, limits=LIMITS)
    project = await hub.project()
    other = await hub.project("other")
    key = await hub.key(project.project_id)
    other_key = await hub.key(other.project_id)
    pk = project.project_key
    role = agent_role(hub.app[SIO])
    registry = hub.app[REGISTRY]
    secret = await role.tokens.secret()
    tokens = [
        await role.tokens.mint(project.project_id, pk, "s1"),
        await role.tokens.mint(project.project_id, pk, "s2"),
        await role.tokens.mint(other.project_id, other.project_key, "s1"),
        await role.tokens.mint(other.project_id, pk, "s1"),  # signed, of another projectId
    ]
    tracker = Inbox()
    await sio_connect(
        hub.url, query={"identity": "session", "peerId": f"{pk}-s1-t1"}, handlers=tracker.handlers()
    )
    witness = Inbox()
    witness_sio = await sio_connect(
        hub.url,
        query={"identity": "agent", "peerId": f"{pk}-s1", "agentInfo": '{"id": "w"}'},
        auth={"apiKey": key.secret},
        handlers=witness.handlers(),
    )
    await settle(hub)
    record = await registry.get(pk, "s1")
    limits = hub.settings.limits
    outcomes = {"accepted": 0, "refused": 0}

    async def predicted(attempt: Attempt) -> bool:
        try:
            handshake = parse_agent_handshake(parse_query(urlencode(attempt.params())), limits)
        except HubError:
            return False
        auth = attempt.auth
        if handshake.project_key != pk or not isinstance(auth, dict):
            return False
        token, api_key = auth.get("token"), auth.get("apiKey")
        if isinstance(token, str) and token.strip():  # the token wins over the key
            try:
                claims = await role.tokens.verify(token, pk, handshake.session_id)
            except HubError:
                return False
            return claims.project_id == project.project_id
        return isinstance(api_key, str) and api_key.strip() == key.secret

    async def check(attempt: Attempt) -> None:
        expected = await predicted(attempt)
        refusals: list[Any] = []
        client = socketio.AsyncClient(reconnection=False)
        client.on("connect_error", lambda data: refusals.append(data))
        try:
            await client.connect(
                f"{hub.url}?{urlencode(attempt.params())}",
                auth=attempt.auth,
                transports=["websocket"],
                socketio_path=PATH,
                wait_timeout=5,
            )
        except socketio.exceptions.ConnectionError:
            outcomes["refused"] += 1
            assert not expected, f"refused a valid agent: {refusals}"
            assert len(refusals) == 1 and isinstance(refusals[0], dict), refusals
            message = refusals[0].get("message")
            assert isinstance(message, str) and message, refusals
            assert message != "internal error" and "retry later" not in message, message
            return
        outcomes["accepted"] += 1
        try:
            assert expected, f"accepted an invalid agent: {attempt}"
            assert client.get_sid("/") in role.agents
        finally:
            await client.disconnect()

    ran = await fuzz(
        attempts(pk, tokens, key.secret, other_key.secret, secret),
        check,
        examples=HANDSHAKE_EXAMPLES,
    )
    assert ran >= HANDSHAKE_EXAMPLES // 2
    assert outcomes["accepted"] > 0 and outcomes["refused"] > 0, outcomes
    await settle(hub)
    # The tracker and the witness agent never noticed more than agents coming and going.
    assert witness_sio.connected
    assert set(tracker.names()) <= {"NEW_AGENT", "AGENT_DISCONNECTED"}
    assert set(witness.names()) <= {"NEW_AGENT", "AGENT_DISCONNECTED"}
    assert await registry.get(pk, "s1") == record
    assert no_errors(caplog)
    print(f"agent handshake examples: {ran} ({outcomes})")


# -- events ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentEvent:
    name: str
    args: tuple[Any, ...]


binary = st.binary(max_size=64)
metas = st.fixed_dictionaries(
    {},
    optional={
        "tabId": st.sampled_from(["t1", "t1", "t2", ""]) | json_values,
        "version": json_values,
    },
)
payloads = (
    json_values
    | binary
    | st.fixed_dictionaries({"meta": metas}, optional={"data": json_values | binary})
    | st.fixed_dictionaries({"meta": json_values}, optional={"x": json_values})
    | st.integers(EVENT_LIMIT - 200, EVENT_LIMIT + 1000).map(lambda n: {"big": "b" * n})
)
names = st.sampled_from(
    [
        "click",
        "mouse_move",
        "call_start",
        "control_granted",
        "connect",
        "disconnect",
        "ERROR",
        "*",  # python-socketio's catch-all handler name, an ordinary event name to the hub
        "",  # any other name
    ]
).flatmap(lambda name: st.just(name) if name else st.text(min_size=1, max_size=16))
agent_events = st.builds(
    AgentEvent,
    names,
    st.lists(payloads, max_size=1).map(tuple) | st.tuples(payloads, payloads),
)


def relayed(event: AgentEvent, limits: Any) -> bool:
    """§7 "Relay": the event reaches tab t1, the session's only tab, or is refused."""
    if event.name in ("connect", "disconnect"):
        return False
    try:
        check_event_size(event.args, limits)
    except HubError:
        return False
    payload = event.args[0] if event.args else None
    meta = payload.get("meta") if isinstance(payload, dict) else None
    tab_id = meta.get("tabId") if isinstance(meta, dict) else None
    return tab_id is None or tab_id == "t1"


def sent(args: tuple[Any, ...]) -> Any:
    """What ``call`` takes to send exactly these arguments (a tuple spreads, None sends none)."""
    return None if not args else args[0] if len(args) == 1 else args


async def test_any_agent_event_is_relayed_or_refused_and_nobody_else_notices(
    make_hub: HubFactory, sio_connect: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    hub = await make_hub(session_grace=600.0, limits=LIMITS)
    project = await hub.project()
    key = await hub.key(project.project_id)
    pk = project.project_key
    registry = hub.app[REGISTRY]
    role = agent_role(hub.app[SIO])
    token = await role.tokens.mint(project.project_id, pk, "s1")
    tracker = Inbox()
    tracker_sio = await sio_connect(
        hub.url, query={"identity": "session", "peerId": f"{pk}-s1-t1"}, handlers=tracker.handlers()
    )
    witness = Inbox()
    witness_sio = await sio_connect(
        hub.url,
        query={"identity": "agent", "peerId": f"{pk}-s1", "agentInfo": '{"id": "w"}'},
        auth={"apiKey": key.secret},
        handlers=witness.handlers(),
    )
    fuzzer = Inbox()
    fuzzer_sio = await sio_connect(
        hub.url,
        query={"identity": "agent", "peerId": f"{pk}-s1", "agentInfo": '{"id": 7}'},
        auth={"token": token},
        handlers=fuzzer.handlers(),
    )
    await settle(hub)
    for inbox in (tracker, tracker, witness):  # the two agents' arrivals, before any example
        await inbox.next("NEW_AGENT")
    fuzzer_sid = fuzzer_sio.get_sid("/")
    record = await registry.get(pk, "s1")
    tracker_before = list(tracker.log)
    witness_before = list(witness.log)
    limits = hub.settings.limits
    outcomes = {"relayed": 0, "refused": 0}
    expected_relays: list[tuple[str, tuple[Any, ...]]] = []

    async def check(event: AgentEvent) -> None:
        answer = await fuzzer_sio.call(event.name, sent(event.args), timeout=WAIT)
        if relayed(event, limits):
            assert answer == {"ok": True}, (answer, event)
            outcomes["relayed"] += 1
            payload = event.args[0] if event.args else None
            if event.name == "*":
                # The hub relays "*" like any name, but python-socketio's client hands an event
                # named "*" to its catch-all handler without the name: the Inbox logs it under
                # its first argument, the agent's sid.
                got = (fuzzer_sid, *await tracker.next(fuzzer_sid))
                expected_relays.append((fuzzer_sid, (payload,)))
            else:
                got = await tracker.next(event.name)
                expected_relays.append((event.name, (fuzzer_sid, payload)))
            assert got == (fuzzer_sid, payload), (got, event)
        else:
            outcomes["refused"] += 1
            assert isinstance(answer, dict) and answer.get("ok") is False, (answer, event)
            error = answer["error"]
            assert error["event"] == event.name and error["message"], error
            assert error["code"] in ("invalid_payload", "too_large", "tab_not_connected"), error
            (body,) = await fuzzer.next("ERROR")
            assert body == error
        assert await registry.get(pk, "s1") == record

    ran = await fuzz(agent_events, check, examples=EVENT_EXAMPLES)
    assert ran >= EVENT_EXAMPLES // 2
    assert outcomes["relayed"] > 0 and outcomes["refused"] > 0, outcomes
    await settle(hub)
    # The tab got exactly the relayed events, in order, and nothing of the refused ones.
    assert tracker.log[len(tracker_before) :] == expected_relays
    assert tracker_sio.connected and witness_sio.connected and fuzzer_sio.connected
    assert witness.log == witness_before
    assert await registry.get(pk, "s1") == record
    assert no_errors(caplog)
    print(f"agent event examples: {ran} ({outcomes})")
