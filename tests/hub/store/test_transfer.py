"""Moving a SQLite store to PostgreSQL keeps every project, key, secret and stored session."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from hub.errors import HubError, SettingsError
from hub.settings import Settings
from hub.store import open_store
from hub.store.base import ApiKey, SessionStore
from hub.store.transfer import transfer
from tests.conftest import ROOT
from tests.hub.store.conftest import ended


async def opened(url: str) -> SessionStore:
    store = open_store(Settings(database_url=url))
    await store.open()
    return store


async def test_everything_moves_and_works_the_same(sqlite_url: str, postgres_url: str) -> None:
    old = await opened(sqlite_url)
    try:
        shop = await old.create_project("shop")
        blog = await old.create_project("blög 日本")
        key = await old.create_key(shop.project_id, "ci")
        org = await old.create_key(None, "org")
        gone = await old.create_key(blog.project_id, "gone")
        await old.revoke_key(gone.key_id)
        secret = await old.jwt_secret()
        for i in range(30):
            data = {"variables": {"n": i, "name": 'Zoë "Z" 🚀'}, "messages": [{"content": "hi"}]}
            project_id = shop.project_id if i % 3 else blog.project_id
            await old.save_session(
                ended(project_id, f"s{i % 7}", data, end_id=f"e{i}", updated_at_ms=i % 4)
            )
        searches = {
            (p.project_id, n): await old.search(p.project_id, n, 100, 0)
            for p in (shop, blog)
            for n in ("Zoë", "hi", "🚀", '"n":1')
        }
    finally:
        await old.close()

    written = await transfer(sqlite_url, postgres_url)
    assert written == {"projects": 2, "api_keys": 3, "hub_values": 1, "stored_sessions": 30}

    new = await opened(postgres_url)
    try:
        assert await new.list_projects() == [shop, blog]
        assert await new.authenticate(key.secret) == ApiKey(key.key_id, shop.project_id, "ci")
        assert await new.authenticate(org.secret) == ApiKey(org.key_id, None, "org")
        assert await new.authenticate(gone.secret) is None
        assert await new.jwt_secret() == secret
        for (project_id, needle), page in searches.items():
            assert await new.search(project_id, needle, 100, 0) == page, needle
        # New projects continue after the copied ids.
        assert (await new.create_project("next")).project_id == 3
    finally:
        await new.close()

    again = await transfer(sqlite_url, postgres_url)
    assert again == {"projects": 0, "api_keys": 0, "hub_values": 0, "stored_sessions": 0}


async def test_a_clashing_project_id_stops_the_move_and_copies_nothing(
    sqlite_url: str, postgres_url: str
) -> None:
    old = await opened(sqlite_url)
    project = await old.create_project("shop")
    await old.save_session(ended(project.project_id, "s1"))
    await old.close()
    new = await opened(postgres_url)
    await new.create_project("another shop")  # id 1 as well, with another key
    await new.close()

    with pytest.raises(HubError, match="project 1 is another project"):
        await transfer(sqlite_url, postgres_url)
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM stored_sessions") == 0
        assert await conn.fetchval("SELECT count(*) FROM projects") == 1
    finally:
        await conn.close()


async def test_bad_urls_are_refused(tmp_path: Path, postgres_url: str) -> None:
    with pytest.raises(SettingsError, match="no SQLite database"):
        await transfer(f"sqlite:///{tmp_path}/missing.db", postgres_url)
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(SettingsError, match="source"):
        await transfer(postgres_url, postgres_url)
    with pytest.raises(SettingsError, match="target"):
        await transfer(f"sqlite:///{tmp_path}/x.db", f"sqlite:///{tmp_path}/y.db")


async def test_the_command_prints_one_json_line(sqlite_url: str, postgres_url: str) -> None:
    old = await opened(sqlite_url)
    await old.create_project("shop")
    await old.close()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub.store.transfer", sqlite_url, postgres_url,
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert (proc.returncode, err) == (0, b"")
    assert json.loads(out) == {
        "copied": {"projects": 1, "api_keys": 0, "hub_values": 0, "stored_sessions": 0}
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub.store.transfer", sqlite_url + ".nope", postgres_url,
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert (proc.returncode, out) == (1, b"")
    assert err.decode().startswith("livehub: no SQLite database")
