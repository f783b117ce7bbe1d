"""SQLite asks its trigram index for a needle's rarest trigrams, and answers as the phrase would."""

from __future__ import annotations

import sqlite3
from contextlib import closing

from hub.settings import Settings
from hub.store import open_store
from hub.store.sqlite import sqlite_path
from hub.store.sqlite_search import selective_match
from tests.hub.store.conftest import ended

SESSIONS = 3_000


async def test_a_selective_needle_asks_for_its_rare_trigrams_only(sqlite_url: str) -> None:
    store = open_store(Settings(database_url=sqlite_url))
    await store.open()
    try:
        pid = (await store.create_project("shop")).project_id
        batch = [
            ended(pid, f"s{i}", {"orderId": f"ORD-{i:08d}", "plan": "pro" if i % 2 else "free"})
            for i in range(SESSIONS)
        ]
        await store.save_sessions(batch)
        with closing(sqlite3.connect(sqlite_path(sqlite_url))) as db:
            # "ORD", "RD-", "D-0" and "-00" are in every session; "123" and "234" in few.
            match = selective_match(db, "ORD-00001234")
            assert match is not None
            asked = set(match.split(" AND "))
            assert {'"123"', '"234"'} <= asked
            assert not asked & {'"ORD"', '"RD-"', '"D-0"', '"-00"'}
            # Every trigram frequent (the plan is in every session): the whole phrase.
            assert selective_match(db, '"plan":"') is None
            assert selective_match(db, "ab") is None  # under three characters: no trigram

        # The answer is the phrase's: exact, after instr re-checks the candidates.
        page = await store.search(pid, "ORD-00001234", 10, 0)
        assert [s.session_id for s in page.sessions] == ["s1234"] and page.total == 1
        assert (await store.search(pid, "ORD-0000123", 50, 0)).total == 10  # 1230 to 1239
        assert (await store.search(pid, "ORD-00009999", 50, 0)).total == 0
        assert (await store.search(pid, '"plan":"pro"', 1, 0)).total == SESSIONS // 2
    finally:
        await store.close()


async def test_an_empty_store_asks_for_the_phrase(sqlite_url: str) -> None:
    store = open_store(Settings(database_url=sqlite_url))
    await store.open()
    try:
        with closing(sqlite3.connect(sqlite_path(sqlite_url))) as db:
            assert selective_match(db, "ORD-00001234") is None
        assert (await store.search(1, "ORD-00001234", 10, 0)).total == 0
    finally:
        await store.close()
