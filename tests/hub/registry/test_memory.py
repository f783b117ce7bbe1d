"""What only the in-process registry does: it ends every session when it closes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from hub.errors import InvalidInput, RegistryUnavailable, SessionDataTooLarge
from hub.registry import create_registry
from hub.registry.memory import DRAIN_BATCH, MemoryRegistry
from hub.settings import Settings
from tests.hub.registry.conftest import PROJECT_KEY, ChangeLog, RecordingSink, make_record

MemoryFactory = Callable[..., Awaitable[MemoryRegistry]]


@pytest.fixture
async def make_memory(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[MemoryFactory]:
    made: list[MemoryRegistry] = []

    async def make(
        sink: RecordingSink, session_grace: float = 0.2, **kwargs: Any
    ) -> MemoryRegistry:
        registry = MemoryRegistry(make_settings(session_grace=session_grace), sink, **kwargs)
        await registry.start()
        made.append(registry)
        return registry

    yield make
    for registry in made:
        await registry.close()


def test_create_registry_without_redis_is_in_process(
    make_settings: Callable[..., Settings],
) -> None:
    async def sink(_: Any) -> None: ...

    assert isinstance(create_registry(make_settings(), sink), MemoryRegistry)


async def test_close_ends_every_live_session_into_the_sink(make_memory: MemoryFactory) -> None:
    sink = RecordingSink(fail_next=1)
    registry = await make_memory(sink, session_grace=30)
    log = ChangeLog()
    registry.listen(log)
    await registry.join_tab(make_record("connected"), "tab-1")
    await registry.join_tab(make_record("in-grace"), "tab-1")
    await registry.leave_tab(PROJECT_KEY, "in-grace", "tab-1")
    await registry.add_message(PROJECT_KEY, "in-grace", {"role": "user", "content": "x"}, 1000)

    await registry.close()

    assert sorted(e.session_id for e in sink.ended) == ["connected", "in-grace"]
    assert next(e for e in sink.ended if e.session_id == "in-grace").data["messages"] == [
        {"role": "user", "content": "x"}
    ]
    assert sorted(c.session_id for c in log.changes if c.kind == "ended") == [
        "connected",
        "in-grace",
    ]
    with pytest.raises(RegistryUnavailable):
        await registry.join_tab(make_record("late"), "tab-1")


async def test_close_gives_up_at_its_deadline_and_logs_what_was_not_stored(
    make_memory: MemoryFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sink = RecordingSink(fail_always=True)
    registry = await make_memory(sink, close_timeout=0.3, retry_cap=0.05)
    await registry.join_tab(make_record("doomed"), "tab-1")
    await registry.update(PROJECT_KEY, "doomed", {}, {"order": "A-17"})
    loop = asyncio.get_running_loop()
    started = loop.time()

    with caplog.at_level(logging.ERROR, logger="hub.registry.memory"):
        await registry.close()

    assert loop.time() - started < 2
    assert sink.calls >= 2  # retried until the deadline
    lost = [r for r in caplog.records if "NOT stored" in r.getMessage()]
    assert len(lost) == 1
    assert "doomed" in lost[0].getMessage() and '"order":"A-17"' in lost[0].getMessage()
    failures = [r for r in caplog.records if "first: session doomed" in r.getMessage()]
    assert len(failures) == sink.calls  # every failure logged


async def test_identity_fields_cannot_change(make_memory: MemoryFactory) -> None:
    registry = await make_memory(RecordingSink())
    record = make_record("s1")
    await registry.join_tab(record, "tab-1")
    for field in ("sessionID", "projectKey", "projectId"):
        with pytest.raises(InvalidInput):
            await registry.update(PROJECT_KEY, "s1", {field: "other", "userID": "x"})
    assert await registry.get(PROJECT_KEY, "s1") == record


async def test_data_that_is_not_json_is_refused(make_memory: MemoryFactory) -> None:
    sink = RecordingSink()
    registry = await make_memory(sink, session_grace=0.01)
    await registry.join_tab(make_record("s1"), "tab-1")
    with pytest.raises(InvalidInput):
        await registry.update(PROJECT_KEY, "s1", {}, {"x": object()})
    with pytest.raises(InvalidInput):
        await registry.add_message(PROJECT_KEY, "s1", {"x": {1, 2}}, 1000)
    await registry.leave_tab(PROJECT_KEY, "s1", "tab-1")
    [ended] = await sink.wait_for(1)
    assert (ended.data["variables"], ended.data["messages"]) == ({}, [])


async def test_times_come_from_the_clock(make_memory: MemoryFactory) -> None:
    now = [1_700_000_000.0]
    sink = RecordingSink()
    registry = await make_memory(sink, session_grace=0.01, clock=lambda: now[0])
    await registry.join_tab(make_record("s1", timestamp=1_699_999_999_000), "tab-1")
    now[0] += 5
    await registry.update(PROJECT_KEY, "s1", {"userID": "u"})
    now[0] += 5
    with pytest.raises(SessionDataTooLarge):  # refused: not a change
        await registry.add_message(PROJECT_KEY, "s1", {"content": "x" * 100}, 10)
    # A tracker whose clock is ahead: the session cannot have changed before it began.
    await registry.join_tab(make_record("ahead", timestamp=1_800_000_000_000), "tab-1")
    await registry.leave_tab(PROJECT_KEY, "s1", "tab-1")
    await registry.leave_tab(PROJECT_KEY, "ahead", "tab-1")

    stored = {e.session_id: e for e in await sink.wait_for(2)}

    assert (stored["s1"].created_at_ms, stored["s1"].updated_at_ms) == (
        1_699_999_999_000,
        1_700_000_005_000,
    )
    assert stored["ahead"].updated_at_ms == stored["ahead"].created_at_ms == 1_800_000_000_000


async def test_a_zero_grace_ends_at_once(make_memory: MemoryFactory) -> None:
    sink = RecordingSink()
    registry = await make_memory(sink, session_grace=0)
    await registry.join_tab(make_record("s1"), "tab-1")
    await registry.leave_tab(PROJECT_KEY, "s1", "tab-1")
    assert [e.session_id for e in await sink.wait_for(1)] == ["s1"]


async def test_sessions_ending_together_are_handed_together_and_a_refused_one_retried(
    make_memory: MemoryFactory,
) -> None:
    sink = RecordingSink(refuse_once={"s3", "s250", "s299"})
    registry = await make_memory(sink, session_grace=30)
    ids = [f"s{i}" for i in range(300)]  # more than one batch
    for sid in ids:
        await registry.join_tab(make_record(sid), "tab-1")
        await registry.add_message(PROJECT_KEY, sid, {"content": sid}, 1000)

    await registry.close()  # ends them all at once

    assert sorted(e.session_id for e in sink.ended) == sorted(ids)
    assert all(e.data["messages"] == [{"content": e.session_id}] for e in sink.ended)
    assert len({e.end_id for e in sink.ended}) == 300
    assert sink.calls == 303  # each once, and the three refused ones once more
    assert sink.most_at_once == DRAIN_BATCH
