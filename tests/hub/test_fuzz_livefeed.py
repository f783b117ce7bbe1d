"""Property: any ``/live`` auth object is accepted exactly when docs/protocol.md §8 allows it,
else refused with ``connect_error {"message"}``; any ``SUBSCRIBE`` payload replaces the
subscription or is answered ``ERROR`` and an ack ``{"ok": false}`` while the old subscription goes
on delivering; never a crash, and another subscriber notices nothing (SPEC §4.5, §6).

Auth objects and SUBSCRIBE payloads are generated whole (keys real, revoked, of another project,
of the organization or random; project keys of any JSON type; filters valid, subtly wrong or
random JSON) and sent by real ``socketio.AsyncClient``s. Whether filters are valid is decided by
``hub.query.parse_filters`` (unit-tested on its own, and fuzzed against the REST search in
test_fuzz_filters.py); the keys, projects and rights by the model written here.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import socketio
from hypothesis import strategies as st

from hub.errors import HubError
from hub.query import parse_filters
from hub.typedefs import STORE
from tests.conftest import ClientFactory, HubFactory
from tests.hub.fuzz import fuzz, json_values
from tests.hub.test_fuzz_filters import filters as any_filter
from tests.hub.test_fuzz_filters import valid_filters
from tests.hub.test_livefeed import LIVE, WAIT, Feed

AUTH_EXAMPLES = 200
SUBSCRIBE_EXAMPLES = 200
PATH = "/ws-assist/socket"
SUBSCRIBE_CODES = {"invalid_payload", "not_found", "forbidden"}


def not_a_number(value: Any) -> bool:
    """Leave out a bare number as the whole auth: python-socketio writes CONNECT as ``0<json>``,
    and the server reads leading digits as a packet id, fails to decode the rest, logs a
    traceback and never answers (a python-socketio limitation, reported)."""
    return isinstance(value, bool) or not isinstance(value, int | float)


def no_errors(caplog: pytest.LogCaptureFixture) -> bool:
    """No log line at ERROR or above: the hub never took a bad input for a crash."""
    return not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def filter_lists() -> st.SearchStrategy[Any]:
    return (
        st.none()
        | st.lists(valid_filters, max_size=3)
        | st.lists(valid_filters, max_size=3)
        | st.lists(any_filter, max_size=3)
        | json_values
    )


def project_keys(pk: str, other_pk: str) -> st.SearchStrategy[Any]:
    return st.sampled_from([pk, pk, pk, other_pk, "NoSuchProject42", ""]) | json_values


def valid_filters_of(raw: Any) -> bool:
    try:
        parse_filters(raw, path="filters")
    except HubError:
        return False
    return True


async def test_any_live_auth_is_accepted_as_specified_or_refused_cleanly(
    make_hub: HubFactory, sio_connect: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    hub = await make_hub(session_grace=600.0)
    project = await hub.project()
    other = await hub.project("other")
    pk = project.project_key
    key = await hub.key(project.project_id)
    org = await hub.key(None, "org")
    foreign = await hub.key(other.project_id, "foreign")
    revoked = await hub.key(project.project_id, "revoked")
    await hub.app[STORE].revoke_key(revoked.key_id)
    covers = {
        key.secret: {pk},
        org.secret: {pk, other.project_key},
        foreign.secret: {other.project_key},
    }
    tracker = await sio_connect(hub.url, query={"identity": "session", "peerId": f"{pk}-s1-t1"})
    witness = Feed()
    witness_sio = await sio_connect(
        hub.url,
        auth={"apiKey": key.secret, "projectKey": pk},
        namespaces=[LIVE],
        handlers=witness.handlers(),
    )
    assert (await witness.expect("SESSIONS"))["total"] == 1

    keys = (
        st.sampled_from([key.secret, key.secret, org.secret, foreign.secret, revoked.secret, ""])
        | st.text(max_size=20)
        | json_values
    )
    auths = (
        st.fixed_dictionaries(
            {},
            optional={
                "apiKey": keys,
                "projectKey": project_keys(pk, other.project_key),
                "filters": filter_lists(),
                "extra": json_values,
            },
        )
        | st.fixed_dictionaries(
            {"apiKey": keys, "projectKey": st.sampled_from([pk, other.project_key])},
            optional={"filters": filter_lists()},
        )
        | json_values.filter(not_a_number)
    )
    valid = st.fixed_dictionaries(
        {"apiKey": st.sampled_from([key.secret, org.secret]), "projectKey": st.just(pk)},
        optional={"filters": st.none() | st.lists(valid_filters, max_size=3)},
    )

    def predicted(auth: Any) -> bool:
        if not isinstance(auth, dict):
            return False
        secret, project_key = auth.get("apiKey"), auth.get("projectKey")
        if not isinstance(secret, str) or not isinstance(project_key, str):
            return False
        return project_key in covers.get(secret, set()) and valid_filters_of(auth.get("filters"))

    outcomes = {"accepted": 0, "refused": 0}

    async def check(auth: Any) -> None:
        expected = predicted(auth)
        feed = Feed()
        client = socketio.AsyncClient(reconnection=False)
        for event, handler in feed.handlers().items():
            client.on(event, handler, namespace=LIVE)
        try:
            await client.connect(
                hub.url,
                auth=auth,
                namespaces=[LIVE],
                transports=["websocket"],
                socketio_path=PATH,
                wait_timeout=5,
            )
        except socketio.exceptions.ConnectionError:
            outcomes["refused"] += 1
            assert not expected, f"refused a valid subscriber: {feed.events}"
            (event, data), *rest = feed.events
            assert event == "connect_error" and rest == [], feed.events
            assert isinstance(data, dict) and isinstance(data.get("message"), str), data
            assert data["message"] and data["message"] != "internal error", data
            assert "retry later" not in data["message"], data
            return
        outcomes["accepted"] += 1
        try:
            assert expected, f"accepted an invalid subscriber: {auth}"
            snapshot = await feed.expect("SESSIONS")
            assert isinstance(snapshot, dict) and isinstance(snapshot["total"], int)
        finally:
            await client.disconnect()

    ran = await fuzz(valid | auths, check, examples=AUTH_EXAMPLES)
    assert ran >= AUTH_EXAMPLES // 2
    assert outcomes["accepted"] > 0 and outcomes["refused"] > 0, outcomes
    # The witness still delivers, and got nothing from the others' attempts.
    assert await tracker.call("UPDATE_SESSION", {"pageTitle": "after"}, timeout=WAIT) == {
        "ok": True
    }
    updated = await witness.expect("SESSION_UPDATED")
    assert updated["pageTitle"] == "after"
    assert witness_sio.connected and [e for e, _ in witness.events] == [
        "SESSIONS",
        "SESSION_UPDATED",
    ]
    assert no_errors(caplog)
    print(f"live auth examples: {ran} ({outcomes})")


async def test_any_subscribe_replaces_the_subscription_or_leaves_it_delivering(
    make_hub: HubFactory, sio_connect: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    hub = await make_hub(session_grace=600.0)
    project = await hub.project()
    other = await hub.project("other")
    pk = project.project_key
    key = await hub.key(project.project_id)
    tracker = await sio_connect(hub.url, query={"identity": "session", "peerId": f"{pk}-s1-t1"})
    feeds: list[Feed] = []
    clients: list[socketio.AsyncClient] = []
    for _ in range(2):  # the fuzzed subscriber, then the witness
        feed = Feed()
        clients.append(
            await sio_connect(
                hub.url,
                auth={"apiKey": key.secret, "projectKey": pk},
                namespaces=[LIVE],
                handlers=feed.handlers(),
            )
        )
        assert (await feed.expect("SESSIONS"))["total"] == 1
        feeds.append(feed)
    (subscriber, witness_sio), (feed, witness) = clients, feeds

    payloads = (
        st.fixed_dictionaries(
            {},
            optional={
                "projectKey": st.none() | project_keys(pk, other.project_key),
                "filters": filter_lists(),
                "extra": json_values,
            },
        )
        | json_values
    )

    def predicted(payload: Any) -> bool:
        if not isinstance(payload, dict):
            return False
        project_key = payload.get("projectKey")
        if project_key is None:
            project_key = pk  # the subscription's project
        return project_key == pk and valid_filters_of(payload.get("filters"))

    outcomes = {"accepted": 0, "refused": 0}
    titles: list[str] = []

    async def check(payload: Any) -> None:
        expected = predicted(payload)
        answer = await subscriber.call("SUBSCRIBE", payload, namespace=LIVE, timeout=WAIT)
        if expected:
            outcomes["accepted"] += 1
            assert answer == {"ok": True}, (answer, payload)
            await feed.expect("SESSIONS")
            # Back to every session of the project, so the update below is in the set.
            assert await subscriber.call("SUBSCRIBE", {}, namespace=LIVE, timeout=WAIT) == {
                "ok": True
            }
            assert (await feed.expect("SESSIONS"))["total"] == 1
        else:
            outcomes["refused"] += 1
            assert isinstance(answer, dict) and answer.get("ok") is False, (answer, payload)
            error = answer["error"]
            assert error["event"] == "SUBSCRIBE" and error["code"] in SUBSCRIBE_CODES, error
            assert isinstance(error["message"], str) and error["message"], error
            assert await feed.expect("ERROR") == error
        # The subscription in force (the old one after a refusal) still delivers.
        title = f"t{len(titles)}"
        titles.append(title)
        answer = await tracker.call("UPDATE_SESSION", {"pageTitle": title}, timeout=WAIT)
        assert answer == {"ok": True}
        assert (await feed.expect("SESSION_UPDATED"))["pageTitle"] == title
        assert (await witness.expect("SESSION_UPDATED"))["pageTitle"] == title

    ran = await fuzz(payloads, check, examples=SUBSCRIBE_EXAMPLES)
    assert ran >= SUBSCRIBE_EXAMPLES // 2
    assert outcomes["accepted"] > 0 and outcomes["refused"] > 0, outcomes
    assert subscriber.connected and witness_sio.connected
    assert feed.pending() == 0 and witness.pending() == 0
    assert witness.events[1:] == [
        ("SESSION_UPDATED", data)
        for event, data in witness.events[1:]
        if event == "SESSION_UPDATED"
    ]
    assert [data["pageTitle"] for _, data in witness.events[1:]] == titles
    assert no_errors(caplog)
    print(f"live SUBSCRIBE examples: {ran} ({outcomes})")
