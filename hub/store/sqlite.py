"""The SQLite store: one file in WAL mode, searched through an FTS5 trigram index.

One aiosqlite connection (its own thread) in autocommit mode: every operation is one statement,
so nothing needs a lock, and WAL lets the ``livehub`` command write while a node reads. Ended
sessions saved at the same time are inserted together, one statement a batch
(:mod:`hub.store.batch`).
See docs/store.md for the data model and the search plan.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite

from hub.errors import KeyNotFound, ProjectNotFound, StoreUnavailable
from hub.registry.base import EndedSession
from hub.store import keys
from hub.store.base import ApiKey, NewKey, Project, SearchPage, StoredSession
from hub.store.batch import SaveBatcher, chunks
from hub.store.schema import migrations, sqlite_statements
from hub.store.searchtext import (
    MAX_ID,
    MIN_INDEXED_CHARS,
    can_match,
    check_storable,
    compact_json,
    fts5_phrase,
    storable,
    storable_id,
)
from hub.store.sqlite_search import Searcher, Statement, is_outage

_UNIQUE_RETRIES = 5

_COLUMNS = "s.session_id, s.data_text, s.created_at, s.updated_at"


def search_query(
    project_id: int, needle: str, limit: int, offset: int, match: str | None = None
) -> tuple[str, list[Any]]:
    """The SQL and parameters of one search page; every row also carries the total.

    A needle of three characters or more goes through the trigram index (CROSS JOIN makes the FTS
    table the outer loop, so the index picks the rows), then ``instr`` re-checks the real text.
    ``match`` is the FTS5 expression that picks the candidates (default: the whole needle as one
    phrase; :func:`hub.store.sqlite_search.selective_match` picks its rarest trigrams). Shorter
    needles have no trigram: they scan the project's rows with ``instr`` (not LIKE, which
    ignores case and treats ``%`` and ``_`` as wildcards).
    """
    if len(needle) >= MIN_INDEXED_CHARS:
        return _page(*_indexed_matches(project_id, needle, match), limit, offset)
    return scan_query(project_id, needle, limit, offset)


def scan_query(project_id: int, needle: str, limit: int, offset: int) -> tuple[str, list[Any]]:
    """The search without the index: every row of the project, checked with ``instr``."""
    return _page(*_scanned_matches(project_id, needle), limit, offset)


def count_query(project_id: int, needle: str, match: str | None = None) -> tuple[str, list[Any]]:
    """The SQL of the total alone, for a page past the last match."""
    if len(needle) >= MIN_INDEXED_CHARS:
        matches, params = _indexed_matches(project_id, needle, match)
    else:
        matches, params = _scanned_matches(project_id, needle)
    return f"SELECT count(*) {matches}", params


def _indexed_matches(project_id: int, needle: str, match: str | None) -> tuple[str, list[Any]]:
    sql = (
        "FROM stored_sessions_fts CROSS JOIN stored_sessions AS s"
        " ON s.id = stored_sessions_fts.rowid"
        " WHERE stored_sessions_fts MATCH ? AND s.project_id = ? AND instr(s.data_text, ?) > 0"
    )
    return sql, [match or fts5_phrase(needle), project_id, needle]


def _scanned_matches(project_id: int, needle: str) -> tuple[str, list[Any]]:
    sql = "FROM stored_sessions AS s WHERE s.project_id = ? AND instr(s.data_text, ?) > 0"
    return sql, [project_id, needle]


def _page(matches: str, params: list[Any], limit: int, offset: int) -> tuple[str, list[Any]]:
    # Sorting and counting only the ids, then reading the text of the page alone, keeps a broad
    # needle from carrying every match's text (up to 4 MiB each) through the sort: 3-4x faster.
    sql = (
        "WITH page AS MATERIALIZED (SELECT s.id, s.updated_at, s.session_id,"
        f" count(*) OVER () AS total {matches}"
        " ORDER BY s.updated_at DESC, s.session_id, s.id LIMIT ? OFFSET ?)"
        f" SELECT {_COLUMNS}, page.total FROM page CROSS JOIN stored_sessions AS s"
        " ON s.id = page.id ORDER BY page.updated_at DESC, page.session_id, page.id"
    )
    return sql, [*params, limit, offset]


def sqlite_path(database_url: str) -> str:
    """The file of a ``sqlite:///PATH`` URL (relative paths allowed; ``:memory:`` too)."""
    return database_url.removeprefix("sqlite:///")


class SqliteStore:
    """:class:`hub.store.base.SessionStore` on one SQLite file."""

    def __init__(
        self,
        path: str,
        jwt_secret: str | None = None,
        *,
        busy_timeout: float = 5.0,
        search_timeout: float = 1.0,
    ) -> None:
        self._path = path
        self._busy_timeout_ms = int(busy_timeout * 1000)
        self._searcher = (
            None if path == ":memory:" else Searcher(path, search_timeout, busy_timeout)
        )
        self._configured_jwt_secret = jwt_secret
        self._jwt_secret: str | None = None
        self._db: aiosqlite.Connection | None = None
        self._batcher = SaveBatcher(self._insert_sessions)

    async def open(self) -> None:
        connection = aiosqlite.connect(self._path, isolation_level=None)
        try:
            self._db = await connection
        except sqlite3.Error as e:
            # aiosqlite stops its worker thread after a failed connect without waiting for it;
            # wait here, so that the thread never reports to an event loop closed meanwhile.
            await asyncio.to_thread(connection._thread.join, 5.0)
            raise StoreUnavailable(f"cannot open the SQLite database {self._path}: {e}") from e
        try:
            async with self._guard() as db:
                await db.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
                await self._enable_wal(db)
                await db.execute("PRAGMA foreign_keys = ON")
                await self._migrate(db)
        except BaseException:
            await self.close()
            raise

    async def _enable_wal(self, db: aiosqlite.Connection) -> None:
        # Switching a fresh file to WAL needs an exclusive lock and SQLite answers "database is
        # locked" at once, without the busy handler, when another node opens it at that moment.
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        while True:
            try:
                await db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self._batcher.wait_idle()
        if self._searcher is not None:
            self._searcher.close()
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def check(self) -> None:
        await self._fetchone("SELECT 1")

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        # BEGIN IMMEDIATE takes the write lock first: two processes opening a fresh file one
        # after the other apply each migration once.
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.execute(
                "CREATE TABLE IF NOT EXISTS schema_version"
                " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
            )
            async with db.execute("SELECT coalesce(max(version), 0) FROM schema_version") as cur:
                row = await cur.fetchone()
            current = int(row[0]) if row else 0
            for migration in migrations("sqlite"):
                if migration.version <= current:
                    continue
                for statement in sqlite_statements(migration.sql):
                    await db.execute(statement)
                await db.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, _now_ms()),
                )
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    # Projects

    async def create_project(self, name: str) -> Project:
        check_storable(name, "name")
        for _ in range(_UNIQUE_RETRIES):
            project_key = keys.new_project_key()
            try:
                _, project_id = await self._execute(
                    "INSERT INTO projects (project_key, name, created_at) VALUES (?, ?, ?)",
                    (project_key, name, _now_ms()),
                )
            except sqlite3.IntegrityError:
                continue  # the random key is taken: draw another
            assert project_id is not None
            return Project(project_id, project_key, name)
        raise RuntimeError("could not draw a unique project key")

    async def list_projects(self) -> list[Project]:
        rows = await self._fetchall("SELECT id, project_key, name FROM projects ORDER BY id")
        return [Project(int(r[0]), r[1], r[2]) for r in rows]

    async def project_by_key(self, project_key: str) -> Project | None:
        if not keys.is_project_key(project_key):
            return None
        row = await self._fetchone(
            "SELECT id, project_key, name FROM projects WHERE project_key = ?", (project_key,)
        )
        return Project(int(row[0]), row[1], row[2]) if row else None

    async def project_by_id(self, project_id: int) -> Project | None:
        if not storable_id(project_id):
            return None
        row = await self._fetchone(
            "SELECT id, project_key, name FROM projects WHERE id = ?", (project_id,)
        )
        return Project(int(row[0]), row[1], row[2]) if row else None

    # Keys

    async def create_key(self, project_id: int | None, name: str) -> NewKey:
        check_storable(name, "name")
        if project_id is not None and await self.project_by_id(project_id) is None:
            raise ProjectNotFound(f"project {project_id} not found")
        for _ in range(_UNIQUE_RETRIES):
            key_id = keys.new_key_id()
            secret = keys.new_secret(key_id)
            try:
                await self._execute(
                    "INSERT INTO api_keys (key_id, project_id, name, secret_sha256, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (key_id, project_id, name, keys.hash_secret(secret), _now_ms()),
                )
            except sqlite3.IntegrityError as e:
                if "FOREIGN KEY" in str(e):
                    raise ProjectNotFound(f"project {project_id} not found") from e
                continue  # the random key id is taken: draw another
            return NewKey(key_id, secret, project_id, name)
        raise RuntimeError("could not draw a unique key id")

    async def revoke_key(self, key_id: str) -> None:
        if not storable(key_id):
            raise KeyNotFound(f"key {key_id!r} not found")
        changed, _ = await self._execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE key_id = ?",
            (_now_ms(), key_id),
        )
        if changed == 0:
            raise KeyNotFound(f"key {key_id} not found")

    async def authenticate(self, secret: str) -> ApiKey | None:
        key_id = keys.key_id_of(secret)
        if key_id is None:
            return None
        row = await self._fetchone(
            "SELECT project_id, name, secret_sha256 FROM api_keys"
            " WHERE key_id = ? AND revoked_at IS NULL",
            (key_id,),
        )
        if row is None or not keys.secret_matches(secret, row[2]):
            return None
        return ApiKey(key_id, None if row[0] is None else int(row[0]), row[1])

    async def jwt_secret(self) -> str:
        if self._configured_jwt_secret is not None:
            return self._configured_jwt_secret
        if self._jwt_secret is None:
            # Whoever inserts first wins; everyone then reads the winner's secret.
            await self._execute(
                "INSERT OR IGNORE INTO hub_values (name, value) VALUES ('jwt_secret', ?)",
                (keys.new_jwt_secret(),),
            )
            row = await self._fetchone("SELECT value FROM hub_values WHERE name = 'jwt_secret'")
            assert row is not None
            self._jwt_secret = str(row[0])
        return self._jwt_secret

    # Stored sessions

    async def save_session(self, ended: EndedSession) -> bool:
        # Written together with the saves that wait at the same time (hub/store/batch.py).
        return await self._batcher.save(ended)

    async def save_sessions(self, sessions: Sequence[EndedSession]) -> int:
        # One statement, hence one transaction, per MAX_BATCH sessions: a longer list that fails
        # part way leaves whole statements stored, which a retry skips on end_id.
        new = 0
        for chunk in chunks(sessions):
            new += len(await self._insert_sessions(chunk))
        return new

    async def _insert_sessions(self, sessions: Sequence[EndedSession]) -> set[str]:
        """Insert up to MAX_BATCH sessions in one statement; the end ids newly stored."""
        if not sessions:
            return set()
        stored_at = _now_ms()
        params: list[Any] = []
        for ended in sessions:
            params += (
                ended.end_id,
                ended.project_id,
                ended.session_id,
                compact_json(ended.data),
                ended.created_at_ms,
                ended.updated_at_ms,
                stored_at,
            )
        # ON CONFLICT skips an end stored already (or twice in this list); RETURNING names the
        # rows really inserted.
        sql = (
            "INSERT INTO stored_sessions (end_id, project_id, session_id, data_text,"
            " created_at, updated_at, stored_at) VALUES "
            + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(sessions))
            + " ON CONFLICT (end_id) DO NOTHING RETURNING end_id"
        )
        async with self._guard() as db:
            rows = await db.execute_fetchall(sql, params)
        return {str(row[0]) for row in rows}

    async def search(self, project_id: int, needle: str, limit: int, offset: int) -> SearchPage:
        if not can_match(needle) or not storable_id(project_id):
            return SearchPage(0, [])
        offset = min(offset, MAX_ID)  # past any row, and within what the database accepts
        rows = await self._search(
            needle, lambda match: search_query(project_id, needle, limit, offset, match)
        )
        if rows:
            return SearchPage(int(rows[0][4]), [_stored(r) for r in rows])
        if offset == 0 and limit > 0:
            return SearchPage(0, [])
        counted = await self._search(needle, lambda match: count_query(project_id, needle, match))
        return SearchPage(int(counted[0][0]) if counted else 0, [])

    async def _search(self, needle: str, statement: Statement) -> list[Any]:
        """A search statement within its time budget (:mod:`hub.store.sqlite_search`)."""
        if self._db is None:
            raise StoreUnavailable("the SQLite store is not open")
        if self._searcher is None:
            return await self._fetchall(*statement(None))
        return await self._searcher.fetchall(needle, statement)

    async def get_session(self, project_id: int, session_id: str) -> StoredSession | None:
        if not storable(session_id) or not storable_id(project_id):
            return None
        row = await self._fetchone(
            f"SELECT {_COLUMNS} FROM stored_sessions AS s"
            " WHERE s.project_id = ? AND s.session_id = ?"
            " ORDER BY s.updated_at DESC, s.id DESC LIMIT 1",
            (project_id, session_id),
        )
        return _stored(row) if row else None

    # Plumbing

    @asynccontextmanager
    async def _guard(self) -> AsyncIterator[aiosqlite.Connection]:
        """The connection; a database that cannot be used (:func:`is_outage`) raises
        StoreUnavailable, and bugs pass as they are."""
        db = self._db
        if db is None:
            raise StoreUnavailable("the SQLite store is not open")
        try:
            yield db
        except sqlite3.DatabaseError as e:
            if not is_outage(e):
                raise
            raise StoreUnavailable(f"SQLite store unavailable: {e}") from e
        except ValueError as e:  # aiosqlite's "no active connection" once closed
            raise StoreUnavailable(f"SQLite store unavailable: {e}") from e

    async def _execute(self, sql: str, params: Iterable[Any] = ()) -> tuple[int, int | None]:
        """Run one statement; its row count and last row id."""
        async with self._guard() as db, db.execute(sql, tuple(params)) as cursor:
            return cursor.rowcount, cursor.lastrowid

    async def _fetchone(self, sql: str, params: Iterable[Any] = ()) -> Any:
        async with self._guard() as db, db.execute(sql, tuple(params)) as cursor:
            return await cursor.fetchone()

    async def _fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        async with self._guard() as db, db.execute(sql, tuple(params)) as cursor:
            return list(await cursor.fetchall())


def _stored(row: Any) -> StoredSession:
    return StoredSession(str(row[0]), str(row[1]), int(row[2]), int(row[3]))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
