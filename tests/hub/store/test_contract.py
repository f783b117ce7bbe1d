"""The SessionStore contract, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import hashlib
import re

import pytest

from hub.errors import InvalidInput, KeyNotFound, ProjectNotFound
from hub.store.base import ApiKey, SessionStore
from hub.store.schema import migrations
from hub.store.searchtext import compact_json
from tests.hub.store.conftest import RawQuery, StoreFactory, ended, replace


def q(store_url: str, sql: str) -> str:
    """Write ``?`` placeholders as ``$n`` for PostgreSQL."""
    if store_url.startswith("sqlite"):
        return sql
    count = iter(range(1, 100))
    return re.sub(r"\?", lambda _: f"${next(count)}", sql)


# Projects


async def test_projects_get_ids_from_one_and_unique_random_keys(store: SessionStore) -> None:
    made = [await store.create_project(name) for name in ("shop", "blog", "shop")]
    assert [p.project_id for p in made] == [1, 2, 3]
    assert [p.name for p in made] == ["shop", "blog", "shop"]
    for p in made:
        assert re.fullmatch(r"[A-Za-z0-9]{20}", p.project_key)
    assert len({p.project_key for p in made}) == 3
    assert await store.list_projects() == made
    assert await store.project_by_key(made[1].project_key) == made[1]
    assert await store.project_by_id(3) == made[2]


async def test_unknown_or_malformed_projects_are_none(store: SessionStore) -> None:
    project = await store.create_project("shop")
    assert await store.project_by_id(2) is None
    assert await store.project_by_id(0) is None
    assert await store.project_by_id(-1) is None
    assert await store.project_by_id(2**70) is None
    assert await store.project_by_key(project.project_key.lower() + "x") is None
    for bad in ("", "short", project.project_key + "\x00", "\ud800" * 20, "é" * 20):
        assert await store.project_by_key(bad) is None


async def test_a_name_that_cannot_be_stored_is_refused(store: SessionStore) -> None:
    with pytest.raises(InvalidInput):
        await store.create_project("bad\x00name")
    with pytest.raises(InvalidInput):
        await store.create_key(None, "lone \udc80")
    assert await store.list_projects() == []


async def test_names_keep_their_characters(store: SessionStore) -> None:
    name = "Ünïcode 商店 🚀 'quoted' \"double\""
    project = await store.create_project(name)
    assert (await store.list_projects())[0].name == name
    assert (await store.create_key(project.project_id, name)).name == name


# Keys


async def test_only_the_hash_of_a_secret_is_kept(
    store: SessionStore, raw: RawQuery, store_url: str
) -> None:
    project = await store.create_project("shop")
    key = await store.create_key(project.project_id, "ci")
    assert key.secret.startswith(f"lh_{key.key_id}_")
    token = key.secret.rsplit("_", 1)[1]
    assert len(token) >= 43  # ≥ 256 bits of [A-Za-z0-9]
    rows = await raw("SELECT * FROM api_keys")
    assert len(rows) == 1
    kept = " ".join(str(value) for value in rows[0])
    assert token not in kept
    assert key.secret not in kept
    digest = await raw(
        q(store_url, "SELECT secret_sha256 FROM api_keys WHERE key_id = ?"), key.key_id
    )
    assert digest == [(hashlib.sha256(key.secret.encode()).hexdigest(),)]


async def test_a_key_authenticates_for_its_project_only(store: SessionStore) -> None:
    shop = await store.create_project("shop")
    blog = await store.create_project("blog")
    key = await store.create_key(shop.project_id, "shop key")
    found = await store.authenticate(key.secret)
    assert found == ApiKey(key.key_id, shop.project_id, "shop key")
    assert found.covers(shop.project_id)
    assert not found.covers(blog.project_id)


async def test_an_organization_key_covers_every_project(store: SessionStore) -> None:
    shop = await store.create_project("shop")
    key = await store.create_key(None, "org")
    assert key.project_id is None
    found = await store.authenticate(key.secret)
    assert found == ApiKey(key.key_id, None, "org")
    assert found.covers(shop.project_id) and found.covers(12345)


async def test_revoked_keys_never_authenticate(store: SessionStore) -> None:
    project = await store.create_project("shop")
    key = await store.create_key(project.project_id, "a")
    other = await store.create_key(project.project_id, "b")
    await store.revoke_key(key.key_id)
    assert await store.authenticate(key.secret) is None
    await store.revoke_key(key.key_id)  # revoking again changes nothing and is no error
    assert await store.authenticate(key.secret) is None
    assert await store.authenticate(other.secret) is not None


async def test_unknown_keys_and_projects_fail_cleanly(store: SessionStore, raw: RawQuery) -> None:
    with pytest.raises(KeyNotFound):
        await store.revoke_key("nosuchkey123")
    with pytest.raises(KeyNotFound):
        await store.revoke_key("")
    with pytest.raises(KeyNotFound):
        await store.revoke_key("bad\x00id\udc80")
    with pytest.raises(ProjectNotFound):
        await store.create_key(1, "x")
    project = await store.create_project("shop")
    with pytest.raises(ProjectNotFound):
        await store.create_key(project.project_id + 1, "x")
    with pytest.raises(ProjectNotFound):
        await store.create_key(2**70, "x")
    assert await raw("SELECT key_id FROM api_keys") == []


async def test_malformed_and_wrong_secrets_are_not_found(store: SessionStore) -> None:
    project = await store.create_project("shop")
    key = await store.create_key(project.project_id, "a")
    other = await store.create_key(project.project_id, "b")
    token = key.secret.rsplit("_", 1)[1]
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    candidates = [
        "",
        "lh_",
        "Bearer " + key.secret,
        key.secret + "x",
        key.secret[:-1],
        " " + key.secret,
        key.secret.upper(),
        f"lh_{key.key_id}_{flipped}",
        f"lh_{other.key_id}_{token}",  # a real token under another key's id
        f"lh_{key.key_id}_{token}\x00",
        key.key_id,
        token,
        "lh_" + "\ud800" * 12 + "_" + token,
    ]
    for secret in candidates:
        assert await store.authenticate(secret) is None, secret
    assert await store.authenticate(key.secret) is not None


# The JWT secret


async def test_the_jwt_secret_is_made_once_and_kept(make_store: StoreFactory) -> None:
    first = await make_store()
    secret = await first.jwt_secret()
    assert len(secret) >= 43
    assert await first.jwt_secret() == secret
    again = await make_store()
    assert await again.jwt_secret() == secret


async def test_nodes_starting_together_share_one_jwt_secret(make_store: StoreFactory) -> None:
    stores = await asyncio.gather(*(make_store() for _ in range(3)))
    secrets_seen = await asyncio.gather(*(s.jwt_secret() for s in stores))
    assert len(set(secrets_seen)) == 1


async def test_a_configured_jwt_secret_wins_and_is_not_stored(
    make_store: StoreFactory, raw: RawQuery
) -> None:
    configured = "s" * 40
    store = await make_store(jwt_secret=configured)
    assert await store.jwt_secret() == configured
    assert await raw("SELECT name FROM hub_values") == []


# Saving ended sessions


async def test_saving_is_idempotent_on_end_id(store: SessionStore, raw: RawQuery) -> None:
    project = await store.create_project("shop")
    session = ended(project.project_id, "s1", end_id="end-1")
    assert await store.save_session(session) is True
    assert await store.save_session(session) is False
    changed = replace(session, data={"variables": {"other": 1}})
    assert await store.save_session(changed) is False  # the first write stays
    rows = await raw("SELECT end_id, data_text FROM stored_sessions")
    assert rows == [("end-1", compact_json(session.data))]


async def test_concurrent_saves_of_one_end_write_once(
    make_store: StoreFactory, raw: RawQuery
) -> None:
    stores = [await make_store(), await make_store()]
    project = await stores[0].create_project("shop")
    session = ended(project.project_id, "s1", end_id="end-1")
    results = await asyncio.gather(*(stores[i % 2].save_session(session) for i in range(20)))
    assert results.count(True) == 1
    assert await raw("SELECT count(*) FROM stored_sessions") == [(1,)]


async def test_the_stored_text_is_compact_json_in_stored_order(
    store: SessionStore, raw: RawQuery
) -> None:
    project = await store.create_project("shop")
    data = {
        "sessionInfo": {"zeta": 1, "alpha": "é 日本 👍🏽", "nul": "a\x00b", "nl": "x\ny"},
        "variables": {"b": [1, 2.5, None, True], "a": {"q": '"quoted" \\ back'}},
        "messages": [{"role": "user", "content": "lone \ud800 surrogate"}],
    }
    await store.save_session(ended(project.project_id, "s1", data))
    (text,) = (await raw("SELECT data_text FROM stored_sessions"))[0]
    assert text == (
        '{"sessionInfo":{"zeta":1,"alpha":"é 日本 👍🏽","nul":"a\\u0000b","nl":"x\\ny"},'
        '"variables":{"b":[1,2.5,null,true],"a":{"q":"\\"quoted\\" \\\\ back"}},'
        '"messages":[{"role":"user","content":"lone \\ud800 surrogate"}]}'
    )
    stored = await store.get_session(project.project_id, "s1")
    assert stored is not None and stored.data_json == text


async def test_get_session_returns_the_latest_end_of_that_project(store: SessionStore) -> None:
    shop = await store.create_project("shop")
    blog = await store.create_project("blog")
    old = ended(shop.project_id, "s1", {"v": "old"}, updated_at_ms=1000)
    new = ended(shop.project_id, "s1", {"v": "new"}, updated_at_ms=2000)
    for session in (new, old):
        await store.save_session(session)
    await store.save_session(ended(blog.project_id, "s2", {"v": "blog"}))
    got = await store.get_session(shop.project_id, "s1")
    assert got is not None
    assert (got.session_id, got.data_json, got.updated_at_ms) == ("s1", '{"v":"new"}', 2000)
    assert got.created_at_ms == new.created_at_ms
    assert await store.get_session(blog.project_id, "s1") is None
    assert await store.get_session(shop.project_id, "s2") is None
    assert await store.get_session(shop.project_id, "nope") is None
    assert await store.get_session(shop.project_id, "bad\x00id") is None


# Searching


async def test_search_is_a_case_sensitive_substring_within_one_project(
    store: SessionStore,
) -> None:
    shop = await store.create_project("shop")
    blog = await store.create_project("blog")
    await store.save_session(ended(shop.project_id, "a", {"name": "John Doe"}, updated_at_ms=3))
    await store.save_session(ended(shop.project_id, "b", {"name": "john doe"}, updated_at_ms=2))
    await store.save_session(ended(blog.project_id, "c", {"name": "John Doe"}, updated_at_ms=1))
    page = await store.search(shop.project_id, "John Doe", 10, 0)
    assert (page.total, [s.session_id for s in page.sessions]) == (1, ["a"])
    page = await store.search(shop.project_id, "ohn", 10, 0)
    assert (page.total, [s.session_id for s in page.sessions]) == (2, ["a", "b"])
    page = await store.search(shop.project_id, '"name":"j', 10, 0)
    assert [s.session_id for s in page.sessions] == ["b"]
    assert (await store.search(shop.project_id, "JOHN", 10, 0)).total == 0
    assert (await store.search(99, "John", 10, 0)).total == 0


async def test_search_orders_by_update_then_session_id_and_pages(store: SessionStore) -> None:
    project = await store.create_project("shop")
    spec = [("b", 5), ("a", 5), ("c", 9), ("a", 1), ("d", 5)]
    for i, (session_id, updated) in enumerate(spec):
        await store.save_session(
            ended(project.project_id, session_id, {"i": i, "x": "hit"}, updated_at_ms=updated)
        )
    page = await store.search(project.project_id, "hit", 10, 0)
    assert page.total == 5
    order = [(s.session_id, s.updated_at_ms) for s in page.sessions]
    assert order == [("c", 9), ("a", 5), ("b", 5), ("d", 5), ("a", 1)]
    pages = [await store.search(project.project_id, "hit", 2, offset) for offset in (0, 2, 4)]
    assert [p.total for p in pages] == [5, 5, 5]
    assert [s for p in pages for s in p.sessions] == page.sessions
    past = await store.search(project.project_id, "hit", 2, 10)
    assert (past.total, past.sessions) == (5, [])
    assert (await store.search(project.project_id, "hit", 0, 0)).total == 5
    for needle in ("hit", "t"):  # the indexed and the scanning query
        past = await store.search(project.project_id, needle, 2, 2**70)
        assert (past.total, past.sessions) == (5, [])


async def test_search_characters_are_literal(store: SessionStore) -> None:
    project = await store.create_project("shop")
    texts = ["100%", "a_b", "axb", 'say "hi"', "back\\slash", "*?[]", "x'y", "NEAR(a b)"]
    for i, text in enumerate(texts):
        await store.save_session(ended(project.project_id, f"s{i}", {"t": text}))
    cases = {
        "%": ["s0"],
        "0%": ["s0"],
        "_": ["s1"],
        "a_b": ["s1"],
        '\\"hi\\"': ["s3"],
        "\\\\": ["s4"],
        "k\\\\s": ["s4"],
        "*?[": ["s5"],
        "[]": ["s5"],
        "x'y": ["s6"],
        "NEAR(": ["s7"],
        '"t":"a': ["s1", "s2"],
    }
    for needle, expected in cases.items():
        page = await store.search(project.project_id, needle, 50, 0)
        assert sorted(s.session_id for s in page.sessions) == expected, needle
        assert page.total == len(expected)


async def test_needles_that_no_compact_json_holds_find_nothing(store: SessionStore) -> None:
    project = await store.create_project("shop")
    await store.save_session(ended(project.project_id, "s1", {"t": "a\nb\x00c \ud800"}))
    for needle in ("\n", "a\nb", "\x00", "\ud800", "b\x00c"):
        assert (await store.search(project.project_id, needle, 10, 0)).total == 0
    for needle in ("\\n", "a\\nb", "\\u0000", "\\ud800"):
        assert (await store.search(project.project_id, needle, 10, 0)).total == 1, needle


# Schema and availability


async def test_opening_again_applies_no_migration_twice(
    make_store: StoreFactory, raw: RawQuery
) -> None:
    first = await make_store()
    project = await first.create_project("shop")
    await first.close()
    again = await make_store()
    assert await again.list_projects() == [project]
    versions = await raw("SELECT version FROM schema_version ORDER BY version")
    assert versions == [(m.version,) for m in migrations("sqlite")]
    assert len(migrations("sqlite")) == len(migrations("postgres"))


async def test_nodes_opening_a_fresh_database_together_migrate_once(
    make_store: StoreFactory, raw: RawQuery
) -> None:
    stores = await asyncio.gather(*(make_store() for _ in range(3)))
    await stores[0].create_project("shop")
    assert len(await stores[2].list_projects()) == 1
    assert await raw("SELECT count(*) FROM schema_version") == [(len(migrations("sqlite")),)]


async def test_a_closed_store_is_unavailable(make_store: StoreFactory) -> None:
    from hub.errors import StoreUnavailable

    store = await make_store()
    await store.check()
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.check()
    with pytest.raises(StoreUnavailable):
        await store.search(1, "abc", 10, 0)
