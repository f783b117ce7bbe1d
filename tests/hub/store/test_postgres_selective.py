"""PostgreSQL asks its trigram index for a rare part of a needle, and answers as the whole would."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

from hub.settings import Settings
from hub.store import open_store, postgres
from hub.store.postgres import PostgresStore
from hub.store.postgres_search import TrigramSample, rarest_part
from tests.hub.store.conftest import ended

SESSIONS = 3_000

# As pg_trgm counts them in 1,000 sessions that each hold "ORD-000xxxxx".
ORDERS = {"ord": 1000, "000": 1000, "001": 300, "012": 40, "123": 30, "234": 12, "plan": 0}


def test_the_rarest_trigram_and_its_rarer_neighbours_are_asked_for() -> None:
    # 234 is the rarest; 123 and 012 are rare neighbours; 001 is common enough to stop at 4.
    assert rarest_part("ORD-00001234", ORDERS, 1000) == "001234"
    assert rarest_part("ORD-00001234", {**ORDERS, "001": 900}, 1000) == "01234"
    # Only words of the needle make trigrams: the part never spans punctuation.
    order = {**ORDERS, "rde": 1000, "der": 1000}
    assert rarest_part('"order":"ORD-00001234"', order, 1000) == "001234"
    # A trigram the sample has never seen is the rarest of all.
    assert rarest_part("ORD-0000zq91", ORDERS, 1000) == "00zq91"
    # Case does not matter to pg_trgm; the part keeps the needle's own case.
    checkout = {t: 1000 for t in ("che", "hec", "eck", "cko", "kou", "out")}
    assert rarest_part("Checkout-X1y2", {**checkout, "x1y": 3, "1y2": 5}, 1000) == "X1y2"


def test_the_whole_needle_when_no_part_would_narrow_it() -> None:
    assert rarest_part("ORD-00001234", {}, 0) is None  # no sample yet
    assert rarest_part("ORD-000", ORDERS, 1000) is None  # every trigram common: broad
    assert rarest_part("ab", ORDERS, 1000) is None  # no trigram
    assert rarest_part('":"-,', ORDERS, 1000) is None  # punctuation: no word at all
    assert rarest_part("1234", ORDERS, 1000) is None  # the part would be the whole needle
    assert rarest_part("a_b_c", ORDERS, 1000) is None  # the underscore separates words


async def test_a_failed_sample_leaves_searches_on_the_whole_needle(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def refused() -> tuple[dict[str, int], int]:
        raise OSError("connection refused")

    sample = TrigramSample(refused)
    with caplog.at_level(logging.WARNING):
        assert sample.part_to_ask("ORD-00001234") is None
        await asyncio.sleep(0)  # the sample runs in the background, and fails
        await sample.take()
    assert "could not sample trigram frequencies" in caplog.text
    assert sample.part_to_ask("ORD-00001234") is None
    await sample.close()


async def test_a_sample_is_taken_in_the_background_and_renewed() -> None:
    taken = 0

    async def counts() -> tuple[dict[str, int], int]:
        nonlocal taken
        taken += 1
        return dict(ORDERS), 1000

    sample = TrigramSample(counts, refresh=0.05)
    assert sample.part_to_ask("ORD-00001234") is None  # none yet: the first is under way
    await asyncio.sleep(0.01)
    assert sample.part_to_ask("ORD-00001234") == "001234"
    assert taken == 1
    await asyncio.sleep(0.06)
    sample.part_to_ask("ORD-00001234")
    await asyncio.sleep(0.01)
    assert taken == 2
    await sample.close()


async def test_a_selective_needle_searches_by_its_rare_part(postgres_url: str) -> None:
    store = open_store(Settings(database_url=postgres_url))
    assert isinstance(store, PostgresStore)
    await store.open()
    try:
        pid = (await store.create_project("shop")).project_id
        other = (await store.create_project("blog")).project_id
        batch = [
            ended(pid, f"s{i}", {"orderId": f"ORD-{i:08d}", "plan": "pro" if i % 2 else "free"})
            for i in range(SESSIONS)
        ]
        await store.save_sessions(batch)
        await store.save_session(ended(other, "b1", {"orderId": "ORD-00001234"}))
        await store.trigrams.take()

        # "ord" and "000" are in every session; the digits 1234 in few.
        part = store.trigrams.part_to_ask("ORD-00001234")
        assert part is not None and part in "00001234" and len(part) >= 4, part
        assert store.trigrams.part_to_ask('"plan":"') is None  # every trigram frequent

        # The answer is the whole needle's: exact, after strpos re-checks the candidates.
        page = await store.search(pid, "ORD-00001234", 10, 0)
        assert [s.session_id for s in page.sessions] == ["s1234"] and page.total == 1
        assert (await store.search(pid, "ORD-0000123", 50, 0)).total == 10  # 1230 to 1239
        assert (await store.search(pid, "XRD-00001234", 50, 0)).total == 0  # part matches, not all
        assert (await store.search(pid, "ord-00001234", 50, 0)).total == 0  # case-sensitive
        assert (await store.search(pid, "ORD-00001234", 0, 5)).total == 1  # past the page: count
        assert (await store.search(pid, '"plan":"pro"', 1, 0)).total == SESSIONS // 2
        # Wildcards of LIKE in the needle are never in the part (a word), and match literally.
        assert (await store.search(pid, "ORD-0000%234", 50, 0)).total == 0
    finally:
        await store.close()

    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute("VACUUM ANALYZE stored_sessions")
        sql, params = postgres.search_query(pid, "ORD-00001234", 10, 0, part)
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *params))
        assert "Bitmap Index Scan on stored_sessions_data_trgm" in plan, plan
        assert "strpos" in plan, plan  # the whole needle is a filter, not an index condition
        assert [r["session_id"] for r in await conn.fetch(sql, *params)] == ["s1234"]
    finally:
        await conn.close()
