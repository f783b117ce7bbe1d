"""The contract of every presence registry (SPEC §4.1 to §4.3): memory and Redis alike."""

from __future__ import annotations

import asyncio
import time

import pytest

from hub.errors import SessionDataTooLarge, SessionNotFound, TabAlreadyConnected
from hub.records import stored_data
from hub.registry.base import Change, Filter, SessionQuery
from hub.registry.merge import json_size
from tests.hub.registry.conftest import (
    OTHER_KEY,
    PROJECT_KEY,
    ChangeLog,
    RecordingSink,
    RegistryFactory,
    make_record,
)

MAX = 4 * 1024 * 1024


async def test_first_tab_starts_a_session(make_registry: RegistryFactory) -> None:
    made = await make_registry()
    registry = made.registry
    log = ChangeLog()
    registry.listen(log)
    record = make_record("s1", userID="ann@example.com")

    join = await registry.join_tab(record, "tab-1")

    assert (join.started, join.reconnected) == (True, False)
    assert join.record == record
    assert await registry.get(PROJECT_KEY, "s1") == record
    assert await registry.tabs(PROJECT_KEY, "s1") == ["tab-1"]
    changes = await log.wait_for(1)
    assert [(c.kind, c.project_key, c.session_id, c.record) for c in changes] == [
        ("started", PROJECT_KEY, "s1", record)
    ]


async def test_second_tab_shares_the_session(make_registry: RegistryFactory) -> None:
    registry = (await make_registry()).registry
    first = make_record("s1", pageTitle="first")
    await registry.join_tab(first, "tab-1")

    join = await registry.join_tab(make_record("s1", pageTitle="second"), "tab-2")

    assert (join.started, join.reconnected) == (False, False)
    assert join.record["pageTitle"] == "first"  # the live record wins over the new tab's
    assert await registry.tabs(PROJECT_KEY, "s1") == ["tab-1", "tab-2"]
    assert (await registry.query(PROJECT_KEY, SessionQuery())).total == 1


async def test_a_connected_tab_is_refused_and_the_first_untouched(
    make_registry: RegistryFactory,
) -> None:
    registry = (await make_registry()).registry
    await registry.join_tab(make_record("s1"), "tab-1")

    with pytest.raises(TabAlreadyConnected):
        await registry.join_tab(make_record("s1"), "tab-1")

    assert await registry.tabs(PROJECT_KEY, "s1") == ["tab-1"]
    assert await registry.leave_tab(PROJECT_KEY, "s1", "tab-1") is True


async def test_leaving_tab_that_is_not_the_last_keeps_the_session(
    make_registry: RegistryFactory,
) -> None:
    made = await make_registry()
    registry = made.registry
    await registry.join_tab(make_record("s1"), "tab-1")
    await registry.join_tab(make_record("s1"), "tab-2")

    assert await registry.leave_tab(PROJECT_KEY, "s1", "tab-1") is False

    assert await registry.tabs(PROJECT_KEY, "s1") == ["tab-2"]
    assert await registry.get(PROJECT_KEY, "s1") is not None
    assert await registry.leave_tab(PROJECT_KEY, "s1", "tab-1") is False  # gone already
    assert await registry.leave_tab(PROJECT_KEY, "nope", "tab-1") is False


async def test_last_tab_leaving_ends_the_session_after_the_grace_exactly_once(
    make_registry: RegistryFactory,
) -> None:
    made = await make_registry(session_grace=0.3)
    registry, sink = made.registry, made.sink
    log = ChangeLog()
    registry.listen(log)
    record = make_record("s1", userOs="Mac OS", metadata={"plan": "trial"})
    before_start = int(time.time() * 1000)
    await registry.join_tab(record, "tab-1")
    await registry.update(PROJECT_KEY, "s1", {"pageTitle": "Cart"}, {"cart": {"items": 2}}, MAX)
    await registry.add_message(PROJECT_KEY, "s1", {"role": "user", "content": "hi"}, MAX)
    after_last_change = int(time.time() * 1000)
    loop = asyncio.get_running_loop()

    left_at = loop.time()
    assert await registry.leave_tab(PROJECT_KEY, "s1", "tab-1") is True
    assert await registry.get(PROJECT_KEY, "s1") is not None  # live during the grace
    [ended] = await sink.wait_for(1)
    waited = loop.time() - left_at

    assert waited >= 0.3 * 0.9
    final = dict(record, pageTitle="Cart")
    assert ended.data == stored_data(
        final, {"cart": {"items": 2}}, [{"role": "user", "content": "hi"}]
    )
    assert "live" not in ended.data["sessionInfo"]
    assert "active" not in ended.data["sessionInfo"]
    assert (ended.project_id, ended.project_key, ended.session_id) == (3, PROJECT_KEY, "s1")
    assert ended.created_at_ms == record["timestamp"]
    assert before_start <= ended.updated_at_ms <= after_last_change
    assert ended.end_id
    assert await registry.get(PROJECT_KEY, "s1") is None
    assert await registry.tabs(PROJECT_KEY, "s1") == []
    assert (await registry.query(PROJECT_KEY, SessionQuery())).total == 0
    changes = await log.wait_for(3)
    assert [c.kind for c in changes] == ["started", "updated", "ended"]
    assert changes[-1] == Change("ended", PROJECT_KEY, "s1", None, {"reason": "ended"})
    await registry.close()  # hands over whatever is owed: still exactly one
    assert sink.ended == [ended]


async def test_a_tab_back_within_the_grace_continues_the_session(
    make_registry: RegistryFactory,
) -> None:
    made = await make_registry(session_grace=0.3)
    registry, sink = made.registry, made.sink
    await registry.join_tab(make_record("s1"), "tab-1")
    await registry.add_message(PROJECT_KEY, "s1", {"role": "user", "content": "one"}, MAX)
    await registry.leave_tab(PROJECT_KEY, "s1", "tab-1")

    join = await registry.join_tab(make_record("s1"), "tab-1")

    assert (join.started, join.reconnected) == (False, True)
    # Past the grace that would have ended it: nothing may end (absence needs a wait).
    await asyncio.sleep(0.6)
    assert await registry.get(PROJECT_KEY, "s1") is not None
    assert sink.calls == 0
    await registry.add_message(PROJECT_KEY, "s1", {"role": "user", "content": "two"}, MAX)
    await registry.leave_tab(PROJECT_KEY, "s1", "tab-1")
    [ended] = await sink.wait_for(1)
    assert [m["content"] for m in ended.data["messages"]] == ["one", "two"]


async def test_a_session_back_after_its_end_starts_anew(make_registry: RegistryFactory) -> None:
    made = await make_registry(session_grace=0.05)
    registry, sink = made.registry, made.sink
    await registry.join_tab(make_record("s1"), "tab-1")
    await registry.leave_tab(PROJECT_KEY, "s1", "tab-1")
    await sink.wait_for(1)

    join = await registry.join_tab(make_record("s1"), "tab-1")
    await registry.leave_tab(PROJECT_KEY, "s1", "tab-1")

    assert (join.started, join.reconnected) == (True, False)
    first, second = await sink.wait_for(2)
    assert first.end_id != second.end_id


async def test_update_deep_merges_the_record_and_the_variables(
    make_registry: RegistryFactory,
) -> None:
    made = await make_registry()
    registry = made.registry
    log = ChangeLog()
    registry.listen(log)
    await registry.join_tab(make_record("s1", metadata={"plan": "free"}, userID="a"), "tab-1")

    await registry.update(PROJECT_KEY, "s1", {"metadata": {"team": "x"}}, {"a": {"b": 1, "c": 2}})
    record = await registry.update(
        PROJECT_KEY, "s1", {"userID": "b", "active": False}, {"a": {"c": 3}, "l": [1]}, MAX
    )

    assert record["metadata"] == {"plan": "free", "team": "x"}
    assert (record["userID"], record["active"]) == ("b", False)
    assert await registry.get(PROJECT_KEY, "s1") == record
    changes = await log.wait_for(3)
    assert [c.kind for c in changes] == ["started", "updated", "updated"]
    assert changes[-1].record == record
    hits = await registry.query(
        PROJECT_KEY, SessionQuery(filters=(Filter("metadata", ("x",), "is", "team"),))
    )
    assert [r["sessionID"] for r in hits.sessions] == ["s1"]
    await registry.leave_tab(PROJECT_KEY, "s1", "tab-1")
    [ended] = await made.sink.wait_for(1)
    assert ended.data["variables"] == {"a": {"b": 1, "c": 3}, "l": [1]}
    assert ended.data["sessionInfo"]["metadata"] == {"plan": "free", "team": "x"}


async def test_updates_of_a_session_that_is_not_live_are_refused(
    make_registry: RegistryFactory,
) -> None:
    registry = (await make_registry()).registry
    with pytest.raises(SessionNotFound):
        await registry.update(PROJECT_KEY, "nope", {"userID": "x"})
    with pytest.raises(SessionNotFound):
        await registry.add_message(PROJECT_KEY, "nope", {"role": "user", "content": "x"}, MAX)
    await registry.join_tab(make_record("s1"), "tab-1")
    with pytest.raises(SessionNotFound):  # same session id, another project
        await registry.update(OTHER_KEY, "s1", {"userID": "x"})


async def test_messages_are_kept_in_order(make_registry: RegistryFactory) -> None:
    made = await make_registry()
    registry = made.registry
    await registry.join_tab(make_record("s1"), "tab-1")
    for i in range(5):
        message = {"role": "user", "content": f"m{i} é ✓", "timestamp": i}
        await registry.add_message(PROJECT_KEY, "s1", message, MAX)
        message["content"] = "changed by the caller afterwards"
    await registry.leave_tab(PROJECT_KEY, "s1", "tab-1")
    [ended] = await made.sink.wait_for(1)
    assert [m["content"] for m in ended.data["messages"]] == [f"m{i} é ✓" for i in range(5)]


async def test_data_over_the_limit_is_refused_and_changes_nothing(
    make_registry: RegistryFactory,
) -> None:
    made = await make_registry()
    registry = made.registry
    log = ChangeLog()
    registry.listen(log)
    record = make_record("s1", pageTitle="Ünïcode ✓")
    await registry.join_tab(record, "tab-1")
    await registry.update(PROJECT_KEY, "s1", {}, {"v": "x" * 10})
    first = {"role": "user", "content": "ça va ✓"}
    exact = json_size(stored_data(record, {"v": "x" * 10}, [first]))

    await registry.add_message(PROJECT_KEY, "s1", first, exact)  # exactly at the limit: taken
    with pytest.raises(SessionDataTooLarge):
        await registry.add_message(PROJECT_KEY, "s1", {"role": "user", "content": ""}, exact)
    with pytest.raises(SessionDataTooLarge):
        await registry.update(
            PROJECT_KEY, "s1", {"pageTitle": "Ünïcode ✓!"}, {"v": "y" * 10}, exact
        )
    with pytest.raises(SessionDataTooLarge):
        await registry.update(PROJECT_KEY, "s1", {}, {"w": 1}, exact)

    assert await registry.get(PROJECT_KEY, "s1") == record
    assert [c.kind for c in await log.wait_for(2)] == ["started", "updated"]
    # A change that keeps the size passes at the same limit.
    await registry.update(PROJECT_KEY, "s1", {}, {"v": "z" * 10}, exact)
    await registry.leave_tab(PROJECT_KEY, "s1", "tab-1")
    [ended] = await made.sink.wait_for(1)
    assert ended.data == stored_data(record, {"v": "z" * 10}, [first])
    assert [c.kind for c in await log.wait_for(4)] == ["started", "updated", "updated", "ended"]


async def test_records_handed_out_are_copies(make_registry: RegistryFactory) -> None:
    registry = (await make_registry()).registry
    record = make_record("s1", metadata={"plan": "free"})
    join = await registry.join_tab(record, "tab-1")
    record["metadata"]["plan"] = "mutated input"
    join.record["metadata"]["plan"] = "mutated output"
    (await registry.get(PROJECT_KEY, "s1") or {})["userID"] = "mutated"
    (await registry.query(PROJECT_KEY, SessionQuery())).sessions[0]["metadata"]["x"] = "y"

    assert await registry.get(PROJECT_KEY, "s1") == make_record("s1", metadata={"plan": "free"})


async def test_query_and_autocomplete_through_the_registry(
    make_registry: RegistryFactory,
) -> None:
    registry = (await make_registry()).registry
    oses = ["Mac OS", "Windows", "Mac OS", "Linux", "mac os x"]
    for i, os_name in enumerate(oses):
        await registry.join_tab(make_record(f"s{i}", timestamp=1000 + i, userOs=os_name), "t")
    await registry.join_tab(make_record("s0", project_key=OTHER_KEY, userOs="Mac OS"), "t")

    page = await registry.query(PROJECT_KEY, SessionQuery(limit=2))
    assert page.total == 5
    assert [r["sessionID"] for r in page.sessions] == ["s4", "s3"]
    mac = await registry.query(
        PROJECT_KEY,
        SessionQuery(filters=(Filter("userOs", ("MAC",)),), order="ASC", page=2, limit=2),
    )
    assert mac.total == 3
    assert [r["sessionID"] for r in mac.sessions] == ["s4"]
    assert await registry.autocomplete(PROJECT_KEY, "userOs", "MA", 10) == [
        "Mac OS",
        "mac os x",
    ]
    assert await registry.autocomplete(PROJECT_KEY, "userOs", "", 1) == ["Mac OS"]
    assert (await registry.query("unknownProjectKey", SessionQuery())).total == 0


async def test_listeners_see_changes_in_order_and_a_failing_one_harms_nothing(
    make_registry: RegistryFactory,
) -> None:
    made = await make_registry(session_grace=0.05)
    registry = made.registry

    def broken(change: Change) -> None:
        raise RuntimeError("listener bug")

    registry.listen(broken)
    log = ChangeLog()
    registry.listen(log)
    stopped = ChangeLog()
    stop = registry.listen(stopped)

    await registry.join_tab(make_record("s1"), "tab-1")
    await stopped.wait_for(1)
    stop()
    await registry.join_tab(make_record("s2"), "tab-1")
    await registry.update(PROJECT_KEY, "s1", {"userID": "one"})
    await registry.update(PROJECT_KEY, "s2", {"userID": "two"})
    await registry.update(PROJECT_KEY, "s1", {"userID": "three"})
    await registry.leave_tab(PROJECT_KEY, "s1", "tab-1")
    await made.sink.wait_for(1)

    changes = await log.wait_for(6)
    assert [(c.kind, c.session_id) for c in changes] == [
        ("started", "s1"),
        ("started", "s2"),
        ("updated", "s1"),
        ("updated", "s2"),
        ("updated", "s1"),
        ("ended", "s1"),
    ]
    assert [c.record["userID"] for c in changes[2:5] if c.record] == ["one", "two", "three"]
    assert stopped.kinds() == ["started"]


async def test_a_failing_sink_is_retried_until_it_takes_the_session(
    make_registry: RegistryFactory,
) -> None:
    sink = RecordingSink(fail_next=2)
    made = await make_registry(sink, session_grace=0.05)
    registry = made.registry
    await registry.join_tab(make_record("s1"), "tab-1")
    await registry.join_tab(make_record("s2"), "tab-1")
    await registry.leave_tab(PROJECT_KEY, "s1", "tab-1")
    await registry.leave_tab(PROJECT_KEY, "s2", "tab-1")

    stored = await sink.wait_for(2)

    assert sorted(e.session_id for e in stored) == ["s1", "s2"]
    assert sink.calls == 4  # two failures, then one call per session
    await registry.close()
    assert len(sink.ended) == 2
    assert len({e.end_id for e in sink.ended}) == 2


async def test_close_hands_over_what_the_sink_still_owes(make_registry: RegistryFactory) -> None:
    sink = RecordingSink(fail_next=3)
    made = await make_registry(sink, session_grace=0.05)
    registry = made.registry
    await registry.join_tab(make_record("s1"), "tab-1")
    await registry.leave_tab(PROJECT_KEY, "s1", "tab-1")
    await sink.wait_for(0, calls=1)  # it ended, and the store refused it

    await registry.close()

    assert [e.session_id for e in sink.ended] == ["s1"]
    await registry.close()  # closing twice is harmless
    assert len(sink.ended) == 1


async def test_check_answers_when_the_registry_is_up(make_registry: RegistryFactory) -> None:
    registry = (await make_registry()).registry
    await registry.check()
