"""Property: any tracker event, of any name, payload type and size, is either accepted and applied
or refused with ``ERROR`` and an ack ``{"ok": false}``, leaving the record and the session's data
as they were; the connection stays open and no other connection notices (SPEC §4.2, §6).

A real tracker sends UPDATE_SESSION, SESSION_MESSAGE and other events with generated arguments
(objects with the known fields of every type, the OpenReplay wrapping, any JSON, binary
attachments, several arguments, sizes around the event limit). Whether an event is valid is
decided by ``hub.payloads`` (unit-tested on its own); what an accepted one does is checked against
a model kept here: the record after each event, and at the end the stored messages and variables.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from hub.errors import HubError, TooLarge
from hub.payloads import (
    SESSION_MESSAGE,
    UPDATE_SESSION,
    check_event_size,
    check_merged_metadata,
    validate_message,
    validate_update,
)
from hub.records import NOT_STORED_FIELDS, Record
from hub.settings import Limits
from hub.store import open_store
from hub.typedefs import REGISTRY
from tests.conftest import ClientFactory, HubFactory
from tests.hub.fuzz import fuzz, json_values

EXAMPLES = 500
EVENT_LIMIT = 8 * 1024


@dataclass(frozen=True)
class Event:
    name: str
    args: tuple[Any, ...]


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The model of SPEC §4.2's deep merge: objects merge, anything else replaces."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


texts = st.text(max_size=16)
binary = st.binary(max_size=64)
big = st.integers(EVENT_LIMIT - 200, EVENT_LIMIT + 2000).map(lambda n: "b" * n)


def update_payloads(valid: bool) -> st.SearchStrategy[dict[str, Any]]:
    """UPDATE_SESSION objects: of the right types only, or of anything at all."""

    def field(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return good if valid else good | json_values

    metadata = st.dictionaries(st.text(max_size=64 if valid else 70), field(texts), max_size=6)
    return st.fixed_dictionaries(
        {},
        optional={
            "pageTitle": field(texts),
            "userID": field(texts),
            "userUUID": field(texts),
            "revID": field(texts),
            "active": field(st.booleans()),
            "metadata": field(metadata),
            "variables": field(st.dictionaries(texts, json_values, max_size=4)),
            "somethingElse": json_values,
        },
    )


def message_payloads(valid: bool) -> st.SearchStrategy[dict[str, Any]]:
    """SESSION_MESSAGE objects: of the right types only, or of anything at all."""

    def field(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return good if valid else good | json_values

    timestamps = st.none() | st.integers(0, 2**40) | st.integers(0, 2**40).map(float)
    return st.fixed_dictionaries(
        {"role": field(st.sampled_from(["user", "assistant"]) | texts), "content": field(texts)},
        optional={"timestamp": field(timestamps), "extra": json_values},
    )


updates = update_payloads(valid=True) | update_payloads(valid=False)
wrapped = st.builds(lambda data: {"meta": {"tabId": "t1", "version": 1}, "data": data}, updates)
messages = message_payloads(valid=True) | message_payloads(valid=False)
other_payloads = json_values | binary | st.dictionaries(texts, binary, max_size=2)
# Half the events are the two the hub stores; a random name stands for any other event.
names = st.sampled_from(
    [UPDATE_SESSION] * 4
    + [SESSION_MESSAGE] * 4
    + ["connect", "disconnect", "ERROR", "message", "click", "custom-event", ""]
).flatmap(lambda name: st.just(name) if name else st.text(min_size=1, max_size=20))


@st.composite
def events(draw: st.DrawFn) -> Event:
    name = draw(names)
    # Valid payloads half of the time: they move the model, and the refused ones must not.
    if name == UPDATE_SESSION:
        good = update_payloads(valid=True)
        bad = updates | wrapped | other_payloads | big.map(lambda t: {"pageTitle": t})
    elif name == SESSION_MESSAGE:
        good = message_payloads(valid=True)
        bad = messages | other_payloads | big.map(lambda t: {"role": "u", "content": t})
    else:
        good, bad = json_values, other_payloads | big
    payload = draw(good if draw(st.booleans()) else bad)
    if isinstance(payload, dict) and draw(st.integers(0, 7)) == 0:
        payload = {**payload, "attachment": draw(binary)}
    arity = draw(st.sampled_from([1, 1, 1, 0, 2]))
    args = () if arity == 0 else (payload,) if arity == 1 else (payload, draw(json_values))
    return Event(name, args)


def expected_outcome(event: Event, record: Record, limits: Limits) -> tuple[str, Any]:
    """("ok", what it changes) or ("refused", the ERROR code), as SPEC §4.2 and §6 say."""
    try:
        if event.name in ("connect", "disconnect"):
            return "refused", "invalid_payload"
        check_event_size(list(event.args), limits)
        payload = event.args[0] if event.args else None
        if event.name == UPDATE_SESSION:
            update = validate_update(payload, limits)
            if "metadata" in update.changes:
                check_merged_metadata(record["metadata"], update.changes["metadata"], limits)
            return "ok", update
        if event.name == SESSION_MESSAGE:
            return "ok", validate_message(payload, lambda: -1)
        return "ok", None
    except TooLarge:
        return "refused", "too_large"
    except HubError:
        return "refused", "invalid_payload"


async def test_any_event_is_applied_or_refused_and_changes_nothing_else(
    make_hub: HubFactory, sio_connect: ClientFactory
) -> None:
    hub = await make_hub(
        session_grace=600.0,
        limits={"event_bytes": EVENT_LIMIT, "events_per_second": 1e6, "event_burst": 10**6},
    )
    project = await hub.project()
    pk = project.project_key
    registry = hub.app[REGISTRY]
    limits = hub.settings.limits
    errors: asyncio.Queue[Any] = asyncio.Queue()
    noticed: list[tuple[str, Any]] = []

    async def on_error(body: Any) -> None:
        await errors.put(body)

    def witness_handler(name: str) -> Any:
        return lambda *args: noticed.append((name, args))

    tracker = await sio_connect(
        hub.url,
        query={"identity": "session", "peerId": f"{pk}-a-t1"},
        handlers={"ERROR": on_error},
    )
    witness = await sio_connect(
        hub.url,
        query={"identity": "session", "peerId": f"{pk}-b-t1"},
        handlers={name: witness_handler(name) for name in ("ERROR", "disconnect", "NO_AGENT")},
    )
    witness_record = await registry.get(pk, "b")
    sent_messages: list[tuple[dict[str, Any], bool]] = []  # (message, timestamp given)
    variables: dict[str, Any] = {}
    counts: dict[str, int] = {}
    started_ms = int(time.time() * 1000)

    async def check(event: Event) -> None:
        nonlocal variables
        before = await registry.get(pk, "a")
        assert before is not None
        outcome, detail = expected_outcome(event, before, limits)
        data = event.args if len(event.args) != 1 else event.args[0]
        ack = await tracker.call(event.name, data if event.args else None, timeout=10)
        after = await registry.get(pk, "a")
        kind = event.name if event.name in (UPDATE_SESSION, SESSION_MESSAGE) else "other"
        tally = f"{kind} {'ok' if ack.get('ok') else 'refused'}"
        counts[tally] = counts.get(tally, 0) + 1
        if ack == {"ok": True}:
            assert outcome == "ok", f"accepted what must be refused ({detail}): {event}"
            if event.name == UPDATE_SESSION and detail:
                assert after == merged(before, detail.changes)
                if detail.variables is not None:
                    variables = merged(variables, detail.variables)
            else:
                assert after == before
            if event.name == SESSION_MESSAGE:
                given = event.args[0].get("timestamp") is not None
                sent_messages.append((detail, given))
            return
        assert ack["ok"] is False and set(ack["error"]) == {"code", "message", "event"}, ack
        code = ack["error"]["code"]
        assert code != "internal" and ack["error"]["event"] == event.name, ack
        if outcome == "ok":  # only the session's data limit may refuse a valid event
            assert code == "session_data_too_large", (ack, event)
        else:
            assert code == detail, (ack, event)
        assert await asyncio.wait_for(errors.get(), 5) == ack["error"]
        assert after == before, "a refused event changed the record"

    ran = await fuzz(events(), check, examples=EXAMPLES)
    assert ran >= EXAMPLES // 2
    assert tracker.connected and witness.connected
    assert errors.empty() and noticed == []
    assert await registry.get(pk, "b") == witness_record
    final = await registry.get(pk, "a")
    assert final is not None

    # Stored at the end: exactly the accepted messages, in order, and the merged variables.
    await hub.client.close()
    store = open_store(hub.settings)
    await store.open()
    try:
        stored = await store.get_session(project.project_id, "a")
    finally:
        await store.close()
    assert stored is not None
    data = json.loads(stored.data_json)
    assert data["sessionInfo"] == {k: v for k, v in final.items() if k not in NOT_STORED_FIELDS}
    assert data["variables"] == variables
    assert len(data["messages"]) == len(sent_messages)
    for kept, (sent, given) in zip(data["messages"], sent_messages, strict=True):
        if given:
            assert kept == sent
        else:
            assert {k: v for k, v in kept.items() if k != "timestamp"} == {
                k: v for k, v in sent.items() if k != "timestamp"
            }
            assert started_ms <= kept["timestamp"] <= int(time.time() * 1000)
    print(f"event examples: {ran} {counts}")
