"""Property: any tracker handshake is accepted exactly when SPEC §4.1 allows it, else refused
with ``connect_error {"message"}``; never a crash; a refused one lists and stores nothing; the
other connections are untouched (SPEC §4.1, §6).

Query parameters are generated whole (peerId, tabId, sessionInfo of random JSON, garbage and
sizes around the limit) and sent by a real ``socketio.AsyncClient``. Which handshakes are valid is
decided by ``hub.handshake.parse_handshake`` (unit-tested on its own in test_handshake.py) applied
to the very query string the client sends; the hub must agree with it end to end, and list the
session with the sessionID it names.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import socketio
from hypothesis import strategies as st

from hub.errors import HubError
from hub.handshake import Handshake, parse_handshake, parse_query
from hub.records import Record
from hub.registry.base import SessionQuery
from hub.settings import Limits
from hub.store import open_store
from hub.typedefs import REGISTRY
from tests.conftest import ClientFactory, HubFactory
from tests.hub.fuzz import ID_CHARS, big_text, fuzz, json_text, json_values

EXAMPLES = 400
INFO_LIMIT = 2048  # bytes of sessionInfo: small, so that sizes around it are cheap to send
PATH = "/ws-assist/socket"


@dataclass(frozen=True)
class Query:
    peer_id: str
    tab_id: str | None
    session_info: str | None
    transport: str = "websocket"

    def params(self) -> dict[str, str]:
        params = {"identity": "session", "peerId": self.peer_id}
        if self.tab_id is not None:
            params["tabId"] = self.tab_id
        if self.session_info is not None:
            params["sessionInfo"] = self.session_info
        return params


def info_fields(valid: bool) -> st.SearchStrategy[dict[str, Any]]:
    """sessionInfo objects: of the right types only, or of anything at all."""

    def field(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return good if valid else good | json_values

    text = st.text(max_size=20)
    metadata = st.dictionaries(st.text(max_size=70 if not valid else 64), text, max_size=8)
    return st.fixed_dictionaries(
        {},
        optional={
            "sessionID": field(st.text(ID_CHARS, min_size=1, max_size=12)),
            "pageTitle": field(st.text(max_size=30)),
            "userID": field(text),
            "userUUID": field(st.uuids().map(str)),
            "revID": field(st.text(max_size=8)),
            "trackerVersion": field(st.text(max_size=8)),
            "userOs": field(st.text(max_size=12)),
            "userBrowser": field(st.text(max_size=12)),
            "userDeviceType": field(st.sampled_from(["desktop", "mobile", "tablet", "Tablet"]))
            | st.sampled_from(["toaster", ""]),
            "isSnippet": field(st.booleans()),
            "active": field(st.booleans()),
            "timestamp": field(st.integers(min_value=0, max_value=2**45)),
            "metadata": field(metadata)
            | st.dictionaries(st.text(max_size=3), text, min_size=65, max_size=70),
            "somethingElse": json_values,
        },
    )


def session_infos() -> st.SearchStrategy[str | None]:
    oversized = st.builds(lambda n: {"pageTitle": "p" * n}, st.integers(INFO_LIMIT - 40, 3000))
    return (
        st.none()
        | info_fields(valid=True).map(json_text)
        | info_fields(valid=True).map(json_text)
        | info_fields(valid=False).map(json_text)
        | oversized.map(json_text)
        | json_values.map(json_text)
        | st.text(max_size=40)
        | big_text.map(lambda t: t[: INFO_LIMIT + 512])
    )


def queries(project_key: str) -> st.SearchStrategy[Query]:
    projects = st.sampled_from([project_key, project_key, "NoSuchProject42", ""]) | st.text(
        max_size=8
    )
    session_ids = st.text(ID_CHARS.replace("-", ""), min_size=1, max_size=12) | st.text(max_size=12)
    tabs = st.none() | st.text(ID_CHARS, max_size=10) | st.text(max_size=10)

    def peer(project: str, session: str, tab: str | None) -> str:
        return f"{project}-{session}" + (f"-{tab}" if tab is not None else "")

    peer_ids = st.builds(peer, projects, session_ids, tabs) | st.text(max_size=30)
    # websocket only: python-socketio's polling client needs a ping cycle (seconds) to give up a
    # refused or closed connection, and the server reads the same query either way.
    transports = st.just("websocket")
    anything = st.builds(Query, peer_ids, st.none() | tabs, session_infos(), transports)
    # Valid handshakes as often as anything else: they must be accepted, and they make the
    # sessions whose listing the refused ones must leave alone.
    good_id = st.text(ID_CHARS.replace("-", ""), min_size=1, max_size=6)
    good_tab = st.none() | st.text(ID_CHARS, min_size=1, max_size=6)
    good_info = st.none() | info_fields(valid=True).map(json_text)
    valid = st.builds(
        Query,
        st.builds(peer, st.just(project_key), good_id, good_tab),
        good_tab,
        good_info,
        transports,
    )
    return valid | anything


def predicted(query: Query, project_key: str, limits: Limits) -> Handshake | None:
    """The handshake the hub must accept, or None when it must refuse it."""
    try:
        handshake = parse_handshake(parse_query(urlencode(query.params())), limits)
    except HubError:
        return None
    return handshake if handshake.project_key == project_key else None


async def test_any_handshake_is_accepted_as_specified_or_refused_cleanly(
    make_hub: HubFactory, sio_connect: ClientFactory
) -> None:
    # A long grace: nothing ends while the examples run, so a listing can be compared whole.
    hub = await make_hub(session_grace=600.0, limits={"session_info_bytes": INFO_LIMIT})
    project = await hub.project()
    pk = project.project_key
    registry = hub.app[REGISTRY]
    limits = hub.settings.limits
    witness_events: list[tuple[str, Any]] = []
    witness = await sio_connect(
        hub.url,
        query={"identity": "session", "peerId": f"{pk}-witness-tab1"},
        handlers={
            name: (lambda *a, name=name: witness_events.append((name, a)))
            for name in ("ERROR", "SESSION_ALREADY_CONNECTED", "disconnect")
        },
    )
    witness_record = await registry.get(pk, "witness")

    async def listed() -> dict[str, Record]:
        page = await registry.query(pk, SessionQuery(limit=1000))
        return {record["sessionID"]: record for record in page.sessions}

    accepted: set[str] = {"witness"}
    outcomes = {"accepted": 0, "refused": 0}

    async def check(query: Query) -> None:
        expected = predicted(query, pk, limits)
        before = await listed()
        refusals: list[Any] = []
        client = socketio.AsyncClient(reconnection=False)
        client.on("connect_error", lambda data: refusals.append(data))
        url = f"{hub.url}?{urlencode(query.params())}"
        try:
            await client.connect(
                url, transports=[query.transport], socketio_path=PATH, wait_timeout=5
            )
        except socketio.exceptions.ConnectionError:
            outcomes["refused"] += 1
            assert expected is None, f"refused a valid handshake: {refusals}"
            assert len(refusals) == 1 and isinstance(refusals[0], dict), refusals
            message = refusals[0].get("message")
            assert isinstance(message, str) and message, refusals
            assert message not in ("internal error",) and "retry later" not in message
            assert await listed() == before, "a refused handshake changed the listing"
            return
        outcomes["accepted"] += 1
        try:
            assert expected is not None, f"accepted an invalid handshake: {query}"
            record = await registry.get(pk, expected.session_id)
            assert record is not None and record["sessionID"] == expected.session_id
            if expected.session_id not in before:  # a new session takes its sessionInfo
                for name in ("pageTitle", "userID", "userUUID", "revID", "metadata"):
                    if name in expected.info:
                        assert record[name] == expected.info[name], name
            else:  # a live one keeps its record (another tab of it)
                assert record == before[expected.session_id]
            accepted.add(expected.session_id)
        finally:
            await client.disconnect()
        if expected is not None:
            # Wait for the hub to let the tab go, so a later example may reuse it.
            for _ in range(500):
                if expected.tab_id not in await registry.tabs(pk, expected.session_id):
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the tab was not let go")

    ran = await fuzz(queries(pk), check, examples=EXAMPLES)
    assert ran >= EXAMPLES // 2
    assert outcomes["accepted"] > 0 and outcomes["refused"] > 0, outcomes

    # The other connection never noticed a thing.
    assert witness.connected and witness_events == []
    assert await registry.get(pk, "witness") == witness_record
    assert set(await listed()) == accepted
    # Ending the node stores every live session, and only those: no refused handshake left any.
    await hub.client.close()
    store = open_store(hub.settings)
    await store.open()
    try:
        found = await store.search(project.project_id, '"sessionID":', 1000, 0)
        stored_ids = {json.loads(s.data_json)["sessionInfo"]["sessionID"] for s in found.sessions}
        assert stored_ids == accepted
        assert found.total == len(accepted)
    finally:
        await store.close()
    print(f"handshake examples: {ran} ({outcomes})")
