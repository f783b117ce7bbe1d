"""The PostgreSQL store: a small asyncpg pool, searched through a pg_trgm GIN index.

Several nodes share one database: migrations run under an advisory lock, and every write that
must happen once (a stored session, the JWT secret) is an insert that ignores conflicts. Ended
sessions saved at the same time are inserted together, one statement a batch
(:mod:`hub.store.batch`).
See docs/store.md for the data model and the search plan.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from hub.errors import (
    KeyNotFound,
    ProjectNotFound,
    SearchTooBroad,
    SettingsError,
    StoreUnavailable,
)
from hub.registry.base import EndedSession
from hub.store import keys
from hub.store.base import ApiKey, NewKey, Project, SearchPage, StoredSession
from hub.store.batch import SaveBatcher
from hub.store.postgres_search import (
    COUNT_TRIGRAMS,
    SAMPLE,
    SAMPLE_SIZE,
    TrigramSample,
    count_query,
    search_query,
)
from hub.store.schema import migrations
from hub.store.searchtext import (
    MAX_ID,
    can_match,
    check_storable,
    compact_json,
    storable,
    storable_id,
)

# The statements of a search are built in postgres_search; bench and tests read them here too.
__all__ = ["PostgresStore", "count_query", "search_query"]

# Any constant will do, as long as no other program on the database takes the same lock.
_MIGRATION_LOCK = 0x6C697665687562  # "livehub"
_UNIQUE_RETRIES = 5
_POOL_MIN, _POOL_MAX = 1, 5
_CONNECT_TIMEOUT = 10.0
_COMMAND_TIMEOUT = 60.0
# Ended sessions are written two batches at once, 256 sessions each (the registry's drainer hands
# 256 at a time). The server spends most of an insert maintaining the trigram index, in the
# connection's own process: a second batch in flight keeps a second core busy (docs/store.md,
# "Group commit"). Two of the pool's connections at most.
_WRITERS, _WRITER_BATCH = 2, 256

# What "the database does not answer" looks like from asyncpg; anything else is a bug to surface.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.InvalidCatalogNameError,
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
)
# Raised both for a connection the server cut (then the connection is closed) and for misuse.
_CLIENT_ERRORS = (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)

_COLUMNS = "session_id, data_text, created_at, updated_at"
# One row per array position, inserted in the order given; an end stored already (or twice in
# the arrays) is skipped, and RETURNING names the rows really inserted.
_INSERT_SESSIONS = (
    "INSERT INTO stored_sessions (end_id, project_id, session_id, data_text,"
    " created_at, updated_at, stored_at)"
    " SELECT e, p, s, d, c, u, $7 FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[],"
    " $5::bigint[], $6::bigint[]) WITH ORDINALITY AS t (e, p, s, d, c, u, n) ORDER BY n"
    " ON CONFLICT (end_id) DO NOTHING RETURNING end_id"
)


class PostgresStore:
    """:class:`hub.store.base.SessionStore` on a PostgreSQL database."""

    def __init__(
        self, dsn: str, jwt_secret: str | None = None, *, search_timeout: float = 1.0
    ) -> None:
        self._dsn = dsn
        self._search_timeout_ms = max(1, round(search_timeout * 1000))
        self._configured_jwt_secret = jwt_secret
        self._jwt_secret: str | None = None
        self._pool: asyncpg.Pool | None = None
        self._batcher = SaveBatcher(self._insert_sessions, writers=_WRITERS, batch=_WRITER_BATCH)
        self.trigrams = TrigramSample(self._count_trigrams)

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=_POOL_MIN,
                max_size=_POOL_MAX,
                timeout=_CONNECT_TIMEOUT,
                command_timeout=_COMMAND_TIMEOUT,
            )
        except _UNAVAILABLE as e:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {e}") from e
        except (ValueError, asyncpg.ClientConfigurationError) as e:  # a malformed URL
            raise SettingsError(f"HUB_DATABASE_URL: {e}") from e
        try:
            async with self._connection() as conn:
                await self._migrate(conn)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        await self.trigrams.close()
        await self._batcher.wait_idle()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def check(self) -> None:
        await self._query("fetchval", "SELECT 1")

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            # Nodes starting together queue here; each migration is applied once.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version"
                " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
            )
            current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
            for migration in migrations("postgres"):
                if migration.version <= current:
                    continue
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    _now_ms(),
                )

    # Projects

    async def create_project(self, name: str) -> Project:
        check_storable(name, "name")
        for _ in range(_UNIQUE_RETRIES):
            project_key = keys.new_project_key()
            project_id = await self._query(
                "fetchval",
                "INSERT INTO projects (project_key, name, created_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (project_key) DO NOTHING RETURNING id",
                project_key,
                name,
                _now_ms(),
                retry=False,
            )
            if project_id is not None:
                return Project(int(project_id), project_key, name)
        raise RuntimeError("could not draw a unique project key")

    async def list_projects(self) -> list[Project]:
        rows = await self._query("fetch", "SELECT id, project_key, name FROM projects ORDER BY id")
        return [Project(int(r[0]), r[1], r[2]) for r in rows]

    async def project_by_key(self, project_key: str) -> Project | None:
        if not keys.is_project_key(project_key):
            return None
        row = await self._query(
            "fetchrow",
            "SELECT id, project_key, name FROM projects WHERE project_key = $1",
            project_key,
        )
        return Project(int(row[0]), row[1], row[2]) if row else None

    async def project_by_id(self, project_id: int) -> Project | None:
        if not storable_id(project_id):
            return None
        row = await self._query(
            "fetchrow", "SELECT id, project_key, name FROM projects WHERE id = $1", project_id
        )
        return Project(int(row[0]), row[1], row[2]) if row else None

    # Keys

    async def create_key(self, project_id: int | None, name: str) -> NewKey:
        check_storable(name, "name")
        if project_id is not None and not storable_id(project_id):
            raise ProjectNotFound(f"project {project_id} not found")
        for _ in range(_UNIQUE_RETRIES):
            key_id = keys.new_key_id()
            secret = keys.new_secret(key_id)
            try:
                inserted = await self._query(
                    "fetchval",
                    "INSERT INTO api_keys (key_id, project_id, name, secret_sha256, created_at)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_id) DO NOTHING"
                    " RETURNING key_id",
                    key_id,
                    project_id,
                    name,
                    keys.hash_secret(secret),
                    _now_ms(),
                    retry=False,
                )
            except asyncpg.ForeignKeyViolationError as e:
                raise ProjectNotFound(f"project {project_id} not found") from e
            if inserted is not None:
                return NewKey(key_id, secret, project_id, name)
        raise RuntimeError("could not draw a unique key id")

    async def revoke_key(self, key_id: str) -> None:
        if not storable(key_id):
            raise KeyNotFound(f"key {key_id!r} not found")
        found = await self._query(
            "fetchval",
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, $1) WHERE key_id = $2"
            " RETURNING key_id",
            _now_ms(),
            key_id,
        )
        if found is None:
            raise KeyNotFound(f"key {key_id} not found")

    async def authenticate(self, secret: str) -> ApiKey | None:
        key_id = keys.key_id_of(secret)
        if key_id is None:
            return None
        row = await self._query(
            "fetchrow",
            "SELECT project_id, name, secret_sha256 FROM api_keys"
            " WHERE key_id = $1 AND revoked_at IS NULL",
            key_id,
        )
        if row is None or not keys.secret_matches(secret, row[2]):
            return None
        return ApiKey(key_id, None if row[0] is None else int(row[0]), row[1])

    async def jwt_secret(self) -> str:
        if self._configured_jwt_secret is not None:
            return self._configured_jwt_secret
        if self._jwt_secret is None:
            # Whoever inserts first wins; everyone then reads the winner's secret.
            await self._query(
                "execute",
                "INSERT INTO hub_values (name, value) VALUES ('jwt_secret', $1)"
                " ON CONFLICT (name) DO NOTHING",
                keys.new_jwt_secret(),
            )
            value = await self._query(
                "fetchval", "SELECT value FROM hub_values WHERE name = 'jwt_secret'"
            )
            self._jwt_secret = str(value)
        return self._jwt_secret

    # Stored sessions

    async def save_session(self, ended: EndedSession) -> bool:
        # Written together with the saves that wait at the same time (hub/store/batch.py).
        return await self._batcher.save(ended)

    async def save_sessions(self, sessions: Sequence[EndedSession]) -> int:
        return len(await self._insert_sessions(sessions))

    async def _insert_sessions(self, sessions: Sequence[EndedSession]) -> set[str]:
        """Insert sessions in one statement (one transaction); the end ids newly stored.

        Safe to retry: a second try of a write that did land is skipped on end_id.
        """
        if not sessions:
            return set()
        rows = await self._query(
            "fetch",
            _INSERT_SESSIONS,
            [ended.end_id for ended in sessions],
            [ended.project_id for ended in sessions],
            [ended.session_id for ended in sessions],
            [compact_json(ended.data) for ended in sessions],
            [ended.created_at_ms for ended in sessions],
            [ended.updated_at_ms for ended in sessions],
            _now_ms(),
        )
        return {str(row[0]) for row in rows}

    async def search(self, project_id: int, needle: str, limit: int, offset: int) -> SearchPage:
        if not can_match(needle) or not storable_id(project_id):
            return SearchPage(0, [])
        offset = min(offset, MAX_ID)  # past any row, and within what the database accepts
        part = self.trigrams.part_to_ask(needle)
        rows = await self._search("fetch", *search_query(project_id, needle, limit, offset, part))
        if rows:
            return SearchPage(int(rows[0]["total"]), [_stored(r) for r in rows])
        if offset == 0 and limit > 0:
            return SearchPage(0, [])
        total = await self._search("fetchval", *count_query(project_id, needle, part))
        return SearchPage(int(total), [])

    async def get_session(self, project_id: int, session_id: str) -> StoredSession | None:
        if not storable_id(project_id) or not storable(session_id):
            return None
        row = await self._query(
            "fetchrow",
            f"SELECT {_COLUMNS} FROM stored_sessions WHERE project_id = $1 AND session_id = $2"
            " ORDER BY updated_at DESC, id DESC LIMIT 1",
            project_id,
            session_id,
        )
        return _stored(row) if row else None

    # Plumbing

    async def _count_trigrams(self) -> tuple[dict[str, int], int]:
        """How many of the SAMPLE most recent sessions hold each trigram, and how many there are
        (hub/store/postgres_search.py)."""

        async def count(conn: asyncpg.Connection) -> tuple[dict[str, int], int]:
            async with conn.transaction(readonly=True):
                rows = await conn.fetch(COUNT_TRIGRAMS, SAMPLE)
                size = await conn.fetchval(SAMPLE_SIZE, SAMPLE)
            return {str(r[0]): int(r[1]) for r in rows}, int(size)

        result: tuple[dict[str, int], int] = await self._retried(count, retry=True)
        return result

    async def _search(self, method: str, sql: str, params: list[Any]) -> Any:
        """One search statement within the time budget (``HUB_SEARCH_TIMEOUT``).

        The server stops the statement at the budget (``statement_timeout``, local to this
        read-only transaction), so a needle that matches too broadly costs the database no more
        than that: SearchTooBroad.
        """
        budget_ms = self._search_timeout_ms

        async def within_budget(conn: asyncpg.Connection) -> Any:
            async with conn.transaction(readonly=True):
                await conn.execute(f"SET LOCAL statement_timeout = {budget_ms}")
                try:
                    return await getattr(conn, method)(sql, *params)
                except asyncpg.exceptions.QueryCanceledError as e:
                    raise SearchTooBroad.after(budget_ms / 1000) from e

        return await self._retried(within_budget, retry=True)

    async def _query(self, method: str, sql: str, *args: Any, retry: bool = True) -> Any:
        """Run one statement with the connection method ``method`` (``fetch``, ``fetchrow``,
        ``fetchval`` or ``execute``)."""
        return await self._retried(lambda conn: getattr(conn, method)(sql, *args), retry=retry)

    async def _retried(
        self, run: Callable[[asyncpg.Connection], Awaitable[Any]], *, retry: bool
    ) -> Any:
        """``run`` on a pooled connection.

        A pooled connection may have died while idle (PostgreSQL restarted, failed over, or an
        administrator ended it); the pool replaces it, so a statement that is safe to repeat gets
        one more try before StoreUnavailable reaches the caller.
        """
        for attempt in range(2):
            try:
                async with self._connection() as conn:
                    return await run(conn)
            except StoreUnavailable:
                if not retry or attempt or self._pool is None:
                    raise
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; failures to reach the database become StoreUnavailable."""
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("the PostgreSQL store is not open")
        try:
            async with pool.acquire() as conn:
                try:
                    yield conn
                except _CLIENT_ERRORS as e:
                    if not conn.is_closed():
                        raise
                    raise StoreUnavailable(f"PostgreSQL connection lost: {e}") from e
        except _UNAVAILABLE as e:
            raise StoreUnavailable(f"PostgreSQL does not answer: {e}") from e


def _stored(row: Any) -> StoredSession:
    return StoredSession(str(row[0]), str(row[1]), int(row[2]), int(row[3]))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
