"""Stored-session search: how long one page takes with and without the trigram index.

Fills N stored sessions of realistic ~2 KB JSON into each store, then times, as medians of
several runs of ``SessionStore.search`` (one page of 50 and the total of every match):

- a selective needle (an order id held by one session),
- a rare needle (a campaign held by 0.1 % of sessions),
- a broad needle (a page title held by about half of them),
- the selective needle again without the index: SQLite scans every row with ``instr()``;
  PostgreSQL runs the same query with ``enable_indexscan`` and ``enable_bitmapscan`` off.

    .venv/bin/python bench/store_search.py --sessions 100000 \\
        --postgres-url postgresql://postgres@127.0.0.1:5432/livehub_bench

The PostgreSQL database is WIPED (its public schema is dropped): give it a scratch database.
The SQLite file goes to a temporary folder unless --sqlite-path says where. Rows are written in
bulk, in one transaction, through the same tables, triggers and indexes the store uses.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import sqlite3
import statistics
import string
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import asyncpg

from hub.settings import Settings
from hub.store import open_store, postgres, sqlite
from hub.store.base import SessionStore
from hub.store.searchtext import compact_json

RUNS = 5
PAGE = 50
BATCH = 5000

WORDS = [
    "".join(random.Random(i).choice(string.ascii_lowercase) for _ in range(3 + i % 7))
    for i in range(3000)
]
TITLES = ["Checkout", "Product page", "Search results", "Account settings", "Order history"]
FIRST = ["Ana", "Ben", "Chloé", "Dmitri", "Emi", "Farah", "Gustavo", "Hana", "Ivan", "Jun"]
LAST = ["Silva", "Okafor", "Müller", "Tanaka", "Kowalski", "Nguyen", "García", "Haddad"]


def session_data(i: int, rng: random.Random) -> dict[str, Any]:
    """About 2 KB of compact JSON shaped like a real stored session."""
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)} {i % 997}"
    info = {
        "sessionID": f"{7_000_000_000 + i}",
        "projectKey": "Xk3p9QmT2vLw8ZrB4nYc",
        "projectId": 1,
        "pageTitle": TITLES[0] if i % 2 else rng.choice(TITLES[1:]),
        "userID": f"user-{i}@example.com",
        "userUUID": f"{rng.getrandbits(128):032x}",
        "revID": f"rev-{i % 40}",
        "trackerVersion": "16.2.1",
        "isSnippet": False,
        "timestamp": 1_705_000_000_000 + i * 1000,
        "metadata": {"plan": rng.choice(["free", "pro", "team"]), "company": rng.choice(LAST)},
        "userOs": rng.choice(["Mac OS X", "Windows", "Linux", "iOS", "Android"]),
        "userBrowser": rng.choice(["Chrome", "Firefox", "Safari", "Edge"]),
        "userBrowserVersion": f"{rng.randint(100, 130)}.0.{rng.randint(0, 9999)}",
        "userDevice": "",
        "userDeviceType": rng.choice(["desktop", "mobile", "tablet"]),
        "userCountry": rng.choice(["DE", "FR", "JP", "BR", "US"]),
        "userCity": None,
        "userState": None,
    }
    variables = {
        "userName": name,
        "userRole": rng.choice(["admin", "user", "viewer"]),
        "orderId": f"ORD-{i:08d}",
        "cartValue": round(rng.uniform(5, 500), 2),
        "campaign": f"cmp-{i % 1000:03d}",
    }
    messages: list[dict[str, Any]] = []
    while len(compact_json(messages)) < 1100:
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 30)))
        role = rng.choice(["user", "assistant"])
        messages.append({"role": role, "content": text, "timestamp": 1_705_000_000_000 + i})
    return {"sessionInfo": info, "variables": variables, "messages": messages}


def rows(n: int) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(42)
    for i in range(n):
        updated = 1_705_000_000_000 + i * 1000 + rng.randint(0, 600_000)
        text = compact_json(session_data(i, rng))
        yield (f"end-{i}", 1, f"{7_000_000_000 + i}", text, updated - 600_000, updated, updated)


def batches(n: int) -> Iterator[list[tuple[Any, ...]]]:
    batch: list[tuple[Any, ...]] = []
    for row in rows(n):
        batch.append(row)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


INSERT_SQLITE = (
    "INSERT INTO stored_sessions (end_id, project_id, session_id, data_text, created_at,"
    " updated_at, stored_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
COLUMNS = [
    "end_id", "project_id", "session_id", "data_text", "created_at", "updated_at", "stored_at"
]  # fmt: skip


async def timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    """The median seconds of RUNS calls (after one warm-up) and the last result."""
    result = await call()
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        result = await call()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def report(store: str, label: str, seconds: float, total: int) -> None:
    print(f"{store:<10} {label:<34} {seconds * 1000:10.1f} ms   total={total}", flush=True)


def needles() -> dict[str, str]:
    return {
        "selective (one order id)": "ORD-00001234",
        "rare (a campaign, 0.1 %)": '"cmp-123"',
        "broad (a page title, ~50 %)": '"pageTitle":"Checkout"',
    }


async def make_schema(url: str) -> None:
    """The store's own tables, triggers and indexes, and the bench project, in an empty store."""
    store = open_store(Settings(database_url=url))
    await store.open()
    await store.create_project("bench")
    await store.close()


async def fill_postgres(conn: asyncpg.Connection, n: int) -> int:
    """COPY n sessions into a store made by ``make_schema``; its size in bytes with indexes.

    The trigram index is dropped and built once after the rows: far faster than row by row.
    """
    definition = await conn.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'stored_sessions_data_trgm'"
    )
    await conn.execute("DROP INDEX stored_sessions_data_trgm")
    for batch in batches(n):
        await conn.copy_records_to_table("stored_sessions", records=batch, columns=COLUMNS)
    await conn.execute("SET maintenance_work_mem = '1GB'")
    await conn.execute(definition)
    await conn.execute("VACUUM ANALYZE stored_sessions")
    size: int = await conn.fetchval("SELECT pg_total_relation_size('stored_sessions')")
    return size


def fill_sqlite(path: Path, n: int) -> float:
    """Write n sessions in one transaction; the size of the file in MiB."""
    with closing(sqlite3.connect(path)) as db:
        with db:
            for batch in batches(n):
                db.executemany(INSERT_SQLITE, batch)
        db.execute("ANALYZE")
    return os.path.getsize(path) / 2**20


async def bench_sqlite(n: int, path: Path) -> None:
    # A fresh file: the store makes the schema, then the rows are written in bulk.
    await asyncio.to_thread(path.unlink, missing_ok=True)
    await make_schema(f"sqlite:///{path}")
    start = time.perf_counter()
    size = fill_sqlite(path, n)
    print(f"sqlite     filled {n} sessions in {time.perf_counter() - start:.0f} s, {size:.0f} MiB")
    store = open_store(Settings(database_url=f"sqlite:///{path}"))
    await store.open()
    try:
        await run_searches("sqlite", store)
        selective = needles()["selective (one order id)"]
        sql, params = sqlite.scan_query(1, selective, PAGE, 0)
        with closing(sqlite3.connect(path)) as db:

            async def scan() -> Any:
                return db.execute(sql, params).fetchall()

            seconds, found = await timed(scan)
        report("sqlite", "selective, no index (instr scan)", seconds, found[0][4] if found else 0)
    finally:
        await store.close()


async def bench_postgres(n: int, url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()
    await make_schema(url)
    start = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:
        size = await fill_postgres(conn, n)
    finally:
        await conn.close()
    print(f"postgres   filled {n} sessions in {time.perf_counter() - start:.0f} s,"
          f" {size / 2**20:.0f} MiB with indexes", flush=True)  # fmt: skip
    store = open_store(Settings(database_url=url))
    await store.open()
    try:
        await run_searches("postgres", store)
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("SET enable_indexscan = off; SET enable_bitmapscan = off")
            sql, params = postgres.search_query(1, needles()["selective (one order id)"], PAGE, 0)
            seconds, found = await timed(lambda: conn.fetch(sql, *params))
            total = found[0]["total"] if found else 0
            report("postgres", "selective, no index (seq scan)", seconds, total)
        finally:
            await conn.close()
    finally:
        await store.close()


async def run_searches(name: str, store: SessionStore) -> None:
    for label, needle in needles().items():
        seconds, page = await timed(functools.partial(store.search, 1, needle, PAGE, 0))
        report(name, label, seconds, page.total)
    seconds, page = await timed(lambda: store.search(1, "Zq", PAGE, 0))
    report(name, "two characters (no trigram)", seconds, page.total)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--sqlite-path", type=Path, default=None)
    parser.add_argument(
        "--postgres-url", default=os.environ.get("LIVEHUB_BENCH_POSTGRES_URL"),
        help="a scratch database: it is wiped (default $LIVEHUB_BENCH_POSTGRES_URL)",
    )  # fmt: skip
    parser.add_argument("--only", choices=["sqlite", "postgres"], default=None)
    args = parser.parse_args()
    if args.only != "postgres":
        with tempfile.TemporaryDirectory() as tmp:
            await bench_sqlite(args.sessions, args.sqlite_path or Path(tmp) / "bench.db")
    if args.only != "sqlite":
        if not args.postgres_url:
            parser.error("--postgres-url (or LIVEHUB_BENCH_POSTGRES_URL) is needed for PostgreSQL")
        await bench_postgres(args.sessions, args.postgres_url)


if __name__ == "__main__":
    asyncio.run(main())
