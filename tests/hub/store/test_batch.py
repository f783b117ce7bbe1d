"""Saving many ended sessions at once, on SQLite and PostgreSQL: each end stored exactly once,
a session the database refuses fails alone, a failing database stores nothing and loses nothing."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from contextlib import closing

import asyncpg
import pytest

from hub.errors import StoreUnavailable
from hub.registry.base import EndedSession
from hub.settings import Settings
from hub.store import open_store
from hub.store.base import SessionStore
from hub.store.batch import MAX_BATCH, SaveBatcher
from hub.store.searchtext import compact_json
from hub.store.sqlite import SqliteStore, sqlite_path
from tests.hub.store.conftest import RawQuery, StoreFactory, ended, postgres_relay, replace


async def test_a_batch_stores_each_end_once_in_the_order_given(
    store: SessionStore, raw: RawQuery
) -> None:
    project = await store.create_project("shop")
    pid = project.project_id
    stored_before = ended(pid, "s0", {"n": 0}, end_id="end-0")
    assert await store.save_session(stored_before) is True
    s1 = ended(pid, "s1", {"n": 1}, end_id="end-1")
    batch = [
        s1,
        ended(pid, "s2", {"n": 2}, end_id="end-2"),
        replace(s1, data={"n": "the same end again"}),
        replace(stored_before, data={"n": "stored already"}),
        ended(pid, "s3", {"n": 3}, end_id="end-3"),
    ]

    assert await store.save_sessions(batch) == 3

    rows = await raw("SELECT end_id, data_text FROM stored_sessions ORDER BY id")
    assert rows == [(f"end-{i}", compact_json({"n": i})) for i in range(4)]
    assert await store.save_sessions(batch) == 0  # all of it again: nothing new


async def test_an_empty_batch_stores_nothing(store: SessionStore, raw: RawQuery) -> None:
    assert await store.save_sessions([]) == 0
    assert await raw("SELECT count(*) FROM stored_sessions") == [(0,)]


async def test_a_batch_longer_than_one_statement(store: SessionStore, raw: RawQuery) -> None:
    project = await store.create_project("shop")
    count = MAX_BATCH * 2 + 7
    batch = [ended(project.project_id, f"s{i}", {"i": i}) for i in range(count)]

    assert await store.save_sessions(batch) == count

    assert await raw("SELECT count(DISTINCT end_id) FROM stored_sessions") == [(count,)]
    page = await store.search(project.project_id, '"i":1000}', 10, 0)
    assert [s.session_id for s in page.sessions] == ["s1000"]


async def test_concurrent_saves_each_learn_whether_their_end_was_new(
    store: SessionStore, raw: RawQuery
) -> None:
    project = await store.create_project("shop")
    sessions = [ended(project.project_id, f"s{i}") for i in range(300)]
    await store.save_sessions(sessions[:50])  # these were stored before

    # Every session twice, all at once: they are written together, a few batches in all.
    results = await asyncio.gather(*(store.save_session(s) for s in sessions + sessions))

    new = [s.end_id for s, result in zip(sessions + sessions, results, strict=True) if result]
    assert sorted(new) == sorted(s.end_id for s in sessions[50:])
    assert await raw("SELECT count(*), count(DISTINCT end_id) FROM stored_sessions") == [(300, 300)]


async def test_a_session_the_database_refuses_fails_alone(
    store: SessionStore, raw: RawQuery
) -> None:
    project = await store.create_project("shop")
    good = [ended(project.project_id, f"s{i}") for i in range(4)]
    refused = ended(2**70, "too-big-a-project-id")  # no integer column holds it

    results = await asyncio.gather(
        *(store.save_session(s) for s in [*good[:2], refused, *good[2:]]),
        return_exceptions=True,
    )

    assert results[:2] == [True, True] and results[3:] == [True, True]
    assert isinstance(results[2], Exception) and not isinstance(results[2], StoreUnavailable)
    rows = await raw("SELECT session_id FROM stored_sessions ORDER BY id")
    assert sorted(r[0] for r in rows) == ["s0", "s1", "s2", "s3"]


async def test_a_closed_store_refuses_a_batch(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.close()
    sessions = [ended(1, f"s{i}") for i in range(3)]
    with pytest.raises(StoreUnavailable):
        await store.save_sessions(sessions)
    results = await asyncio.gather(
        *(store.save_session(s) for s in sessions), return_exceptions=True
    )
    assert all(isinstance(r, StoreUnavailable) for r in results)


CountRows = Callable[[], Awaitable[tuple[int, int]]]


async def _fails_then_a_retry_stores_each_once(
    failing: SessionStore,
    recover: Callable[[], Awaitable[SessionStore]],
    count_rows: CountRows,
) -> None:
    """Saves while the database fails: every caller learns it and nothing is written; once it
    is back (``recover`` returns a store that works), a retry stores each session once."""
    sessions = [ended(1, f"s{i}") for i in range(20)]
    with pytest.raises(StoreUnavailable):
        await failing.save_sessions(sessions[:10])
    results = await asyncio.gather(
        *(failing.save_session(s) for s in sessions), return_exceptions=True
    )
    assert all(isinstance(r, StoreUnavailable) for r in results)
    assert await count_rows() == (0, 0)

    store = await recover()
    assert await store.save_sessions(sessions[:10]) == 10
    results = await asyncio.gather(*(store.save_session(s) for s in sessions))
    assert results == [False] * 10 + [True] * 10
    assert await count_rows() == (20, 20)


async def test_sqlite_locked_fails_every_save_and_loses_nothing(sqlite_url: str) -> None:
    path = sqlite_path(sqlite_url)
    store = SqliteStore(path, busy_timeout=0.2)
    await store.open()
    holder = sqlite3.connect(path, isolation_level=None)

    async def count_rows() -> tuple[int, int]:
        with closing(sqlite3.connect(path)) as db:
            row = db.execute("SELECT count(*), count(DISTINCT end_id) FROM stored_sessions")
            count, distinct = row.fetchone()
        return int(count), int(distinct)

    async def unlock() -> SessionStore:
        holder.execute("ROLLBACK")
        return store

    try:
        holder.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
        await _fails_then_a_retry_stores_each_once(store, unlock, count_rows)
    finally:
        holder.close()
        await store.close()


async def test_postgres_gone_fails_every_save_and_loses_nothing(postgres_url: str) -> None:
    async def count_rows() -> tuple[int, int]:
        conn = await asyncpg.connect(postgres_url)
        try:
            row = await conn.fetchrow(
                "SELECT count(*), count(DISTINCT end_id) FROM stored_sessions"
            )
        finally:
            await conn.close()
        return int(row[0]), int(row[1])

    opened: list[SessionStore] = []

    async def reconnect() -> SessionStore:
        store = open_store(Settings(database_url=postgres_url))
        await store.open()
        opened.append(store)
        return store

    async with postgres_relay(postgres_url) as (url, shut):
        store = open_store(Settings(database_url=url))
        await store.open()
        opened.append(store)
        try:
            await shut()
            await _fails_then_a_retry_stores_each_once(store, reconnect, count_rows)
        finally:
            for made in opened:
                await made.close()


async def test_a_caller_that_stops_waiting_still_has_its_session_stored(
    store: SessionStore, raw: RawQuery
) -> None:
    project = await store.create_project("shop")
    session = ended(project.project_id, "s1")
    saving = asyncio.create_task(store.save_session(session))
    await asyncio.sleep(0)  # queued
    saving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await saving

    async def stored() -> bool:
        return await raw("SELECT count(*) FROM stored_sessions") == [(1,)]

    # The first save goes on and stores it. (Saving again before it lands may race it: on
    # PostgreSQL two writers run at once, and whichever inserts first answers True.)
    async with asyncio.timeout(10):
        while not await stored():  # noqa: ASYNC110 (a row written by the store's own writer)
            await asyncio.sleep(0.01)
    assert await store.save_session(session) is False
    assert await stored()


async def test_two_writers_write_two_batches_at_once_each_of_the_size_allowed() -> None:
    gate = asyncio.Event()
    written: list[list[str]] = []
    in_flight = 0
    most_in_flight = 0

    async def write(sessions: Sequence[EndedSession]) -> set[str]:
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        await gate.wait()
        in_flight -= 1
        written.append([s.end_id for s in sessions])
        return {s.end_id for s in sessions}

    batcher = SaveBatcher(write, writers=2, batch=3)
    sessions = [ended(1, f"s{i}", end_id=f"e{i}") for i in range(8)]
    saves = asyncio.gather(*(batcher.save(s) for s in sessions))
    for _ in range(5):
        await asyncio.sleep(0)
    assert (in_flight, written) == (2, [])  # two batches of 3 wait for the database together
    gate.set()
    assert await saves == [True] * 8
    await batcher.wait_idle()
    assert most_in_flight == 2
    assert sorted(written) == [["e0", "e1", "e2"], ["e3", "e4", "e5"], ["e6", "e7"]]


async def test_one_writer_writes_one_batch_at_a_time() -> None:
    in_flight: list[int] = []

    async def write(sessions: Sequence[EndedSession]) -> set[str]:
        in_flight.append(len(sessions))
        await asyncio.sleep(0.01)
        assert len(in_flight) == 1
        in_flight.pop()
        return {s.end_id for s in sessions}

    batcher = SaveBatcher(write)
    results = await asyncio.gather(
        *(batcher.save(ended(1, f"s{i}", end_id=f"e{i}")) for i in range(MAX_BATCH + 5))
    )
    assert all(results)


@pytest.mark.parametrize(("writers", "batch"), [(0, 10), (2, 0), (1, MAX_BATCH + 1)])
def test_a_batcher_refuses_impossible_sizes(writers: int, batch: int) -> None:
    async def write(sessions: Sequence[EndedSession]) -> set[str]:
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="SaveBatcher"):
        SaveBatcher(write, writers=writers, batch=batch)


@pytest.mark.parametrize("writers", [1, 2])
async def test_saves_one_after_the_other_are_each_written(writers: int) -> None:
    written: list[str] = []

    async def write(sessions: Sequence[EndedSession]) -> set[str]:
        written.extend(s.end_id for s in sessions)
        return {s.end_id for s in sessions}

    batcher = SaveBatcher(write, writers=writers)
    for i in range(5):  # each waits for the last writer to finish, then needs a writer again
        assert await asyncio.wait_for(batcher.save(ended(1, f"s{i}", end_id=f"e{i}")), 5)
    assert written == [f"e{i}" for i in range(5)]
