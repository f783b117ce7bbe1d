"""The search queries use their indexes: the plan each database makes for them, read back."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import asyncpg

from hub.settings import Settings
from hub.store import open_store, postgres, sqlite
from tests.hub.store.conftest import ended

ROWS = 2000


def data(i: int) -> dict[str, object]:
    return {
        "sessionInfo": {"sessionID": f"s{i}", "userID": f"user-{i}", "pageTitle": "Checkout"},
        "variables": {"plan": "pro" if i % 2 else "free", "order": f"ORD-{i:06d}"},
        "messages": [{"role": "user", "content": f"where is my parcel number {i}?"}],
    }


async def test_sqlite_long_needles_use_the_trigram_index(sqlite_url: str) -> None:
    store = open_store(Settings(database_url=sqlite_url))
    await store.open()
    try:
        project = await store.create_project("shop")
        for i in range(ROWS):
            await store.save_session(ended(project.project_id, f"s{i}", data(i), end_id=f"e{i}"))
        page = await store.search(project.project_id, "ORD-001234", 10, 0)
        assert [s.session_id for s in page.sessions] == ["s1234"]
    finally:
        await store.close()

    with closing(sqlite3.connect(sqlite.sqlite_path(sqlite_url))) as db:
        db.execute("ANALYZE")

        def plan(needle: str) -> list[str]:
            sql, params = sqlite.search_query(project.project_id, needle, 10, 0)
            return [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params)]

        for needle in ("ORD-001234", "abc", '"%_\\'):
            steps = plan(needle)
            assert any(
                s.startswith("SCAN stored_sessions_fts VIRTUAL TABLE INDEX") for s in steps
            ), steps
            # The sessions table is only looked up by rowid, never scanned.
            assert "SEARCH s USING INTEGER PRIMARY KEY (rowid=?)" in steps, steps
            assert not any(s.startswith("SCAN s") for s in steps if "fts" not in s), steps
        # One or two characters have no trigram: the project's rows are scanned with instr().
        steps = plan("ab")
        assert not any("VIRTUAL TABLE" in s for s in steps), steps


async def test_postgres_long_needles_use_the_trigram_index(postgres_url: str) -> None:
    store = open_store(Settings(database_url=postgres_url))
    await store.open()
    try:
        project = await store.create_project("shop")
        await store.save_session(ended(project.project_id, "s0", data(0), end_id="e0"))
    finally:
        await store.close()

    conn = await asyncpg.connect(postgres_url)
    try:
        # About 14 MB of ~2 KB rows, made by the server in a second: enough pages that the
        # planner prefers the trigram index by its own costs, with no planner setting changed.
        await conn.execute(
            """
            INSERT INTO stored_sessions
                (end_id, project_id, session_id, data_text, created_at, updated_at, stored_at)
            SELECT 'e' || i, $1, 's' || i,
                '{"variables":{"order":"ORD-' || lpad(i::text, 6, '0') || '"},'
                || '"messages":[{"role":"user","content":"'
                || repeat('where is my parcel? ', 90) || '"}]}',
                0, i, 0
            FROM generate_series(1, $2::int) AS i
            """,
            project.project_id,
            ROWS * 3,
        )
        await conn.execute("VACUUM ANALYZE stored_sessions")  # as autovacuum would

        async def plan(needle: str) -> str:
            sql, params = postgres.search_query(project.project_id, needle, 10, 0)
            rows = await conn.fetch("EXPLAIN " + sql, *params)
            return "\n".join(r[0] for r in rows)

        for needle in ("ORD-001234", 's1234"', "%rcel"):
            steps = await plan(needle)
            assert "Bitmap Index Scan on stored_sessions_data_trgm" in steps, steps
            assert "Seq Scan" not in steps, steps
        sql, params = postgres.search_query(project.project_id, "ORD-001234", 10, 0)
        assert [r["session_id"] for r in await conn.fetch(sql, *params)] == ["s1234"]
    finally:
        await conn.close()
