"""The time budget of a stored-session search (HUB_SEARCH_TIMEOUT), on SQLite and PostgreSQL.

A search that runs past it is stopped by the database and answered SearchTooBroad; the store then
goes on as before: the next search answers, saves still store, and nothing stored changed.
"""

from __future__ import annotations

import asyncio

import pytest

from hub.errors import SearchTooBroad
from hub.settings import Settings
from hub.store import open_store
from hub.store.base import SessionStore
from tests.hub.store.conftest import RawQuery, StoreFactory, ended

SESSIONS = 20_000  # enough rows that a scan of them takes more than a millisecond anywhere


async def _filled(store: SessionStore) -> int:
    project = await store.create_project("shop")
    pid = project.project_id
    sessions = [
        ended(pid, f"s{i}", {"page": f"/product/{i}", "note": "lorem ipsum " * 20})
        for i in range(SESSIONS)
    ]
    for first in range(0, SESSIONS, 2_000):
        await store.save_sessions(sessions[first : first + 2_000])
    return pid


async def test_a_search_past_its_budget_is_stopped_and_changes_nothing(
    make_store: StoreFactory, raw: RawQuery
) -> None:
    writer = await make_store()
    pid = await _filled(writer)
    # 1 ms: a two-character needle (no trigram: every row is read) cannot finish within it.
    store = await make_store(search_timeout=0.001)
    rows_before = await raw("SELECT count(*) FROM stored_sessions")
    with pytest.raises(SearchTooBroad, match="HUB_SEARCH_TIMEOUT"):
        await store.search(pid, "/p", 50, 0)
    # A page past the last match counts the total alone: that statement has the budget too.
    with pytest.raises(SearchTooBroad):
        await store.search(pid, "/p", 50, SESSIONS + 10)

    # The store goes on: its connections still serve, a save stores, and nothing changed.
    assert (await store.get_session(pid, "s12345")) is not None
    assert await raw("SELECT count(*) FROM stored_sessions") == rows_before
    assert await store.save_session(ended(pid, "after")) is True
    assert (await writer.search(pid, '"page":"/product/12345"', 50, 0)).total == 1
    assert (await writer.search(pid, '"page"', 1, 0)).total == SESSIONS


async def test_a_generous_budget_answers_the_broad_search(make_store: StoreFactory) -> None:
    store = await make_store(search_timeout=60)
    pid = await _filled(store)
    page = await store.search(pid, "/p", 3, 0)
    assert page.total == SESSIONS and len(page.sessions) == 3


async def test_sqlite_searches_side_by_side_take_turns(sqlite_url: str) -> None:
    """SQLite searches share one read connection: side by side, each answers its own needle,
    and one stopped at the budget leaves the connection to the next."""
    writer = open_store(Settings(database_url=sqlite_url))
    tight = open_store(Settings(database_url=sqlite_url, search_timeout=0.001))
    await writer.open()
    await tight.open()
    try:
        pid = await _filled(writer)
        broad = [writer.search(pid, "/p", 50, 0) for _ in range(3)]
        selective = [writer.search(pid, f'"page":"/product/{i}"', 50, 0) for i in (7, 70, 700)]
        stopped = [tight.search(pid, "/p", 50, 0) for _ in range(2)]
        answers = await asyncio.gather(*broad, *selective, *stopped, return_exceptions=True)
        assert [getattr(a, "total", a) for a in answers[:6]] == [SESSIONS] * 3 + [1, 1, 1]
        assert all(isinstance(a, SearchTooBroad) for a in answers[6:])
        assert (await writer.search(pid, '"page":"/product/9"', 50, 0)).total == 1
    finally:
        await tight.close()
        await writer.close()
