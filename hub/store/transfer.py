"""Move a SQLite store to PostgreSQL: every project, key, hub value and stored session.

    python -m hub.store.transfer sqlite:///./livehub.db postgresql://user@db/livehub

Run it with every node stopped (a stopped node has flushed what it owed to the store). The
PostgreSQL schema is made (or brought up to date) first; the rows are then copied in one
transaction, so a failed run leaves nothing half-copied. Copying is idempotent: rows already there
are kept, and a second run copies only what the first did not. A project id that PostgreSQL
already holds for another project stops the run: ids name projects in every URL and key.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import asyncpg

from hub.errors import HubError, SettingsError
from hub.settings import Settings
from hub.store import open_store
from hub.store.sqlite import sqlite_path

BATCH = 1000


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    conflict: str  # the unique column that makes a copy idempotent
    order: str


TABLES = (
    Table("projects", ("id", "project_key", "name", "created_at"), "id", "id"),
    Table(
        "api_keys",
        ("key_id", "project_id", "name", "secret_sha256", "created_at", "revoked_at"),
        "key_id",
        "key_id",
    ),
    Table("hub_values", ("name", "value"), "name", "name"),
    # Without the id: PostgreSQL numbers them in the SQLite order, which search ties follow.
    Table(
        "stored_sessions",
        (
            "end_id",
            "project_id",
            "session_id",
            "data_text",
            "created_at",
            "updated_at",
            "stored_at",
        ),
        "end_id",
        "id",
    ),
)


async def transfer(source_url: str, target_url: str) -> dict[str, int]:
    """Copy every row of the SQLite store at ``source_url`` into PostgreSQL at ``target_url``.

    Returns the rows newly written per table. Raises HubError when a project id clashes.
    """
    if not source_url.startswith("sqlite:///"):
        raise SettingsError("the source must be a sqlite:///PATH URL")
    if not target_url.startswith(("postgresql://", "postgres://")):
        raise SettingsError("the target must be a postgresql:// URL")
    if not await asyncio.to_thread(os.path.isfile, sqlite_path(source_url)):
        raise SettingsError(f"no SQLite database at {sqlite_path(source_url)}")
    for url in (source_url, target_url):  # make or update both schemas
        store = open_store(Settings(database_url=url))
        await store.open()
        await store.close()
    conn = await asyncpg.connect(target_url)
    try:
        async with conn.transaction():
            written = {t.name: await _copy(sqlite_path(source_url), conn, t) for t in TABLES}
            await _check_projects(sqlite_path(source_url), conn)
            # Projects made later must not reuse a copied id.
            await conn.execute(
                "SELECT setval(pg_get_serial_sequence('projects', 'id'), max(id))"
                " FROM projects HAVING max(id) IS NOT NULL"
            )
    finally:
        await conn.close()
    return written


async def _copy(path: str, conn: asyncpg.Connection, table: Table) -> int:
    columns = ", ".join(table.columns)
    marks = ", ".join(f"${i}" for i in range(1, len(table.columns) + 1))
    insert = (
        f"INSERT INTO {table.name} ({columns}) VALUES ({marks})"
        f" ON CONFLICT ({table.conflict}) DO NOTHING"
    )
    before = await conn.fetchval(f"SELECT count(*) FROM {table.name}")
    for batch in _read(path, f"SELECT {columns} FROM {table.name} ORDER BY {table.order}"):
        await conn.executemany(insert, batch)
    return int(await conn.fetchval(f"SELECT count(*) FROM {table.name}")) - int(before)


async def _check_projects(path: str, conn: asyncpg.Connection) -> None:
    for batch in _read(path, "SELECT id, project_key FROM projects ORDER BY id"):
        for project_id, project_key in batch:
            there = await conn.fetchval(
                "SELECT project_key FROM projects WHERE id = $1", project_id
            )
            if there != project_key:
                raise HubError(
                    f"project {project_id} is another project in PostgreSQL; nothing was copied"
                )


def _read(path: str, sql: str) -> Iterator[list[tuple[Any, ...]]]:
    # Read-only, so that a mistyped path does not create an empty database.
    with closing(sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)) as db:
        cursor = db.execute(sql)
        while batch := cursor.fetchmany(BATCH):
            yield batch


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hub.store.transfer", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("source", help="sqlite:///PATH")
    parser.add_argument("target", help="postgresql://…")
    args = parser.parse_args(argv)
    try:
        written = asyncio.run(transfer(args.source, args.target))
    except (HubError, sqlite3.Error, asyncpg.PostgresError, OSError) as e:
        print(f"livehub: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"copied": written}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
