"""Fixtures of the store tests: every contract test runs against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from hub.registry.base import EndedSession
from hub.settings import Settings
from hub.store import open_store
from hub.store.base import SessionStore
from hub.store.sqlite import sqlite_path

StoreFactory = Callable[..., Awaitable[SessionStore]]
RawQuery = Callable[..., Awaitable[list[tuple[Any, ...]]]]
Shut = Callable[[], Awaitable[None]]


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str:
    """The database URL of an empty store, once per implementation."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
async def make_store(store_url: str) -> AsyncIterator[StoreFactory]:
    """Open stores on the test database (Settings fields by keyword); all closed at the end."""
    opened: list[SessionStore] = []

    async def make(**overrides: Any) -> SessionStore:
        store = open_store(Settings(**{"database_url": store_url, **overrides}))
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> SessionStore:
    return await make_store()


@pytest.fixture
def raw(store_url: str) -> RawQuery:
    """Run SQL on the test database behind the store's back (``?`` placeholders on SQLite,
    ``$1`` on PostgreSQL): what is really kept on disk."""

    async def query(sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if store_url.startswith("sqlite"):
            with closing(sqlite3.connect(sqlite_path(store_url))) as db, db:
                return list(db.execute(sql, params).fetchall())
        conn = await asyncpg.connect(store_url)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *params)]
        finally:
            await conn.close()

    return query


def ended(
    project_id: int,
    session_id: str,
    data: dict[str, Any] | None = None,
    *,
    end_id: str | None = None,
    created_at_ms: int = 1_705_314_600_000,
    updated_at_ms: int = 1_705_314_900_000,
) -> EndedSession:
    """An ended session as the registry hands it to the store."""
    return EndedSession(
        end_id=end_id or f"{session_id}@{updated_at_ms}",
        project_id=project_id,
        project_key="k" * 20,
        session_id=session_id,
        data=data if data is not None else {"sessionInfo": {}, "variables": {}, "messages": []},
        created_at_ms=created_at_ms,
        updated_at_ms=updated_at_ms,
    )


def replace(session: EndedSession, **changes: Any) -> EndedSession:
    return dataclasses.replace(session, **changes)


@contextlib.asynccontextmanager
async def postgres_relay(
    postgres_url: str,
) -> AsyncIterator[tuple[str, Callable[[], Awaitable[None]]]]:
    """A URL that reaches PostgreSQL through a TCP relay, and the function that shuts the relay
    (every connection through it cut, no new one accepted): PostgreSQL gone, as a store sees it."""
    target = urlsplit(postgres_url)
    writers: list[asyncio.StreamWriter] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(target.hostname, target.port or 5432)
        writers.extend((writer, up_writer))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = target._replace(netloc=f"{target.username or 'postgres'}@127.0.0.1:{port}").geturl()

    async def shut() -> None:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()

    try:
        yield url, shut
    finally:
        await shut()
