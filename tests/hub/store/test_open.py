"""Choosing and opening a store; a database that does not answer is StoreUnavailable."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import pytest

from hub.errors import SettingsError, StoreUnavailable
from hub.settings import Settings
from hub.store import open_store
from hub.store.postgres import PostgresStore
from hub.store.sqlite import SqliteStore, sqlite_path
from tests.conftest import free_port
from tests.hub.store.conftest import postgres_relay


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("sqlite:///./livehub.db", SqliteStore),
        ("sqlite:////var/lib/livehub/x.db", SqliteStore),
        ("postgresql://u@db:5432/hub", PostgresStore),
        ("postgres://u@db/hub", PostgresStore),
    ],
)
def test_the_url_scheme_picks_the_store(url: str, kind: type) -> None:
    assert isinstance(open_store(Settings(database_url=url)), kind)


@pytest.mark.parametrize("url", ["sqlite://relative.db", "sqlite:///", "mysql://x/y"])
def test_a_bad_database_url_names_the_setting(url: str) -> None:
    with pytest.raises(SettingsError, match="HUB_DATABASE_URL"):
        open_store(Settings(database_url=url))


async def test_a_relative_sqlite_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store(Settings(database_url="sqlite:///./here.db"))
    await store.open()
    await store.close()
    assert (tmp_path / "here.db").is_file()


async def test_sqlite_in_a_missing_folder_is_unavailable(tmp_path: Path) -> None:
    store = open_store(Settings(database_url=f"sqlite:///{tmp_path}/no/such/dir/x.db"))
    with pytest.raises(StoreUnavailable, match="no/such/dir"):
        await store.open()
    assert not (tmp_path / "no").exists()


async def test_a_file_that_is_not_a_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a SQLite database" * 100)
    store = open_store(Settings(database_url=f"sqlite:///{path}"))
    with pytest.raises(StoreUnavailable):
        await store.open()
    with pytest.raises(StoreUnavailable):
        await store.check()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:notaport/x",
        "postgresql://[bad/x",
        "postgresql://postgres@127.0.0.1/x?sslmode=bogus",
    ],
)
async def test_a_malformed_postgres_url_names_the_setting(url: str) -> None:
    with pytest.raises(SettingsError, match="HUB_DATABASE_URL"):
        await open_store(Settings(database_url=url)).open()


async def test_postgres_that_does_not_listen_is_unavailable() -> None:
    store = open_store(Settings(database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/x"))
    with pytest.raises(StoreUnavailable):
        await store.open()


async def test_a_postgres_database_that_does_not_exist_is_unavailable(postgres_url: str) -> None:
    url = postgres_url.rsplit("/", 1)[0] + "/livehub_no_such_database"
    store = open_store(Settings(database_url=url))
    with pytest.raises(StoreUnavailable, match="does not exist"):
        await store.open()


async def test_postgres_connections_cut_by_the_server_are_replaced(
    postgres_url: str,
) -> None:
    store = open_store(Settings(database_url=postgres_url))
    await store.open()
    try:
        await store.check()
        admin = await asyncpg.connect(postgres_url)
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        assert killed >= 1
        # The pooled connection is dead; a statement safe to repeat gets a fresh one.
        await store.check()
        project = await store.create_project("after")
        assert await store.project_by_id(project.project_id) == project
    finally:
        await store.close()


async def test_postgres_gone_while_open_is_unavailable(postgres_url: str) -> None:
    async with postgres_relay(postgres_url) as (url, shut):
        store = open_store(Settings(database_url=url))
        await store.open()
        try:
            await store.check()
            await shut()
            with pytest.raises(StoreUnavailable):
                await store.check()
            with pytest.raises(StoreUnavailable):
                await store.search(1, "needle", 10, 0)
        finally:
            await store.close()


async def test_sqlite_locked_past_the_busy_timeout_is_unavailable(sqlite_url: str) -> None:
    path = sqlite_path(sqlite_url)
    store = SqliteStore(path, busy_timeout=0.2)
    await store.open()
    project = await store.create_project("shop")
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
        with pytest.raises(StoreUnavailable, match="locked"):
            await store.create_project("blocked")
        holder.execute("ROLLBACK")
        assert await store.list_projects() == [project]
    finally:
        holder.close()
        await store.close()
