"""P8: ended sessions persisted per second, through the registry's end path and the store.

Measured on two paths, each with SQLite and with PostgreSQL:

- **Redis registry** (a cluster node): a loader process registers N sessions in bulk (the join
  script, one tab each), then takes every tab away at once with a grace of 0 (the leave script,
  pipelined), so that N sessions are due together. One ``livehub serve`` node does the rest as in
  production: its reaper ends them (the end script: the session leaves Redis, its data goes to the
  outbox), its drainer hands each to the store. Measured: from the moment all N are due to the
  moment the store holds N rows (counted by polling the database).
- **In-process registry** (a single node): N real trackers connected from a load process close
  their websockets together, with ``HUB_SESSION_GRACE=0``. Measured: from the first close to N rows
  in the store, so the disconnect handling is included.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from contextlib import closing
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from bench import registry_scale
from bench.harness import Config, HubNode, Worker, make_project, reset_postgres, run_worker
from bench.loadgen import client_session, close_all, connect_all
from bench.results import ScenarioResult, Target
from bench.scenarios.assist import LOADER_NODE, _no_sink
from bench.scenarios.common import tracker
from bench.worker import Control
from hub import constants as c
from hub.registry.redis import RedisRegistry
from hub.settings import Settings


async def due_together(ctl: Control, redis_url: str, count: int) -> dict[str, Any]:
    """Register ``count`` sessions, then (on ``end``) make them all due at once."""
    registry = RedisRegistry(Settings(redis_url=redis_url, node_id=LOADER_NODE), _no_sink)
    redis = aioredis.from_url(redis_url, decode_responses=True)
    try:
        await registry_scale.register(registry, redis, count)
        ctl.report("registered")
        await ctl.command("end")
        start = time.perf_counter()
        for first in range(0, count, registry_scale.BATCH):
            pipe = redis.pipeline(transaction=False)
            for i in range(first, min(first + registry_scale.BATCH, count)):
                tag = c.session_tag(registry_scale.PROJECT_KEY, f"{7_000_000_000_000_000 + i}")
                await registry._scripts.leave(args=[tag, "tab", 0], client=pipe)
            await pipe.execute()
        ctl.report("due", seconds=time.perf_counter() - start)
    finally:
        await redis.aclose()
        await registry._redis.aclose()
    return {}


async def trackers_leave(ctl: Control, url: str, project_key: str, count: int) -> dict[str, Any]:
    """Connect ``count`` trackers; on ``close``, close them all at once."""
    async with client_session() as http:
        clients = [tracker(http, url, project_key, i, prefix="end") for i in range(count)]
        errors = [str(e) for e in await connect_all(clients) if e is not None]
        if errors:
            raise RuntimeError(f"trackers refused: {errors[:3]}")
        ctl.report("connected")
        await ctl.command("close")
        ctl.report("closing")
        await close_all(clients, concurrency=count)
    return {}


async def store_writes(ctl: Control, database_url: str, count: int) -> dict[str, Any]:
    """``count`` sequential ``save_session`` calls on the store alone (no registry): seconds."""
    import random
    import uuid

    from hub.records import stored_data
    from hub.registry.base import EndedSession
    from hub.store import open_store

    rng = random.Random(count)
    sessions = []
    for i in range(count):
        record = registry_scale.make_record(rng, i)
        sessions.append(
            EndedSession(
                uuid.uuid4().hex, 1, registry_scale.PROJECT_KEY, record["sessionID"],
                stored_data(record, {}, []), record["timestamp"], record["timestamp"],
            )
        )  # fmt: skip
    store = open_store(Settings(database_url=database_url))
    await store.open()
    try:
        start = time.perf_counter()
        for ended in sessions:
            await store.save_session(ended)
        seconds = time.perf_counter() - start
    finally:
        await store.close()
    return {"seconds": seconds}


async def stored_count(database_url: str) -> int:
    if database_url.startswith("sqlite"):
        path = database_url.removeprefix("sqlite:///")

        def count() -> int:
            with closing(sqlite3.connect(path, timeout=5)) as db:
                return int(db.execute("SELECT count(*) FROM stored_sessions").fetchone()[0])

        return await asyncio.to_thread(count)
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM stored_sessions"))
    finally:
        await conn.close()


async def wait_stored(database_url: str, count: int, timeout: float) -> float:
    """Seconds until the store holds ``count`` sessions."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if await stored_count(database_url) >= count:
            return time.perf_counter() - start
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the store did not reach {count} sessions in {timeout:.0f} s")


async def run_p8(config: Config, results: dict[str, ScenarioResult]) -> None:
    result = results["P8"]
    redis_count = 3_000 if config.quick else 20_000
    tracker_count = 1_000 if config.quick else 10_000
    runs = 1 if config.quick else 2
    result.settings.update(
        sessions_redis_path=redis_count,
        sessions_in_process_path=tracker_count,
        stored_data="~600 bytes a session (record, no variables or messages)",
        runs=runs,
    )
    for store in ("SQLite", "PostgreSQL"):
        metric = result.metric(
            f"Redis registry → {store}: sessions ended and stored/s", "/s", kind="value",
            target=Target("value", ">=", 5000),
        )  # fmt: skip
        for run in range(runs):
            metric.add_run(redis_count / await _redis_path(config, store, redis_count, run))
    for store in ("SQLite", "PostgreSQL"):
        metric = result.metric(
            f"in-process registry → {store}: sessions ended and stored/s", "/s", kind="value"
        )
        for run in range(runs):
            metric.add_run(tracker_count / await _memory_path(config, store, tracker_count, run))
    for store in ("SQLite", "PostgreSQL"):
        metric = result.metric(
            f"{store} alone: sequential save_session calls/s (no registry)", "/s", kind="value"
        )
        for run in range(runs):
            url = await _database(config, store, f"p8-store-{store.lower()}-{run}")
            await make_project(url)
            out = await run_worker(
                config, f"p8-store-{store.lower()}-{run}", "bench.scenarios.ending:store_writes",
                database_url=url, count=redis_count,
            )  # fmt: skip
            metric.add_run(redis_count / out["seconds"])
    result.notes.append(
        "What is measured. Redis path: N sessions registered in bulk lose their only tab at once"
        " with a grace of 0 (pipelined leave scripts); the rate is N ÷ the time from the moment"
        " all N are due to the moment the store holds N rows (polled every 50 ms); one"
        " `livehub serve` node ends them (reaper, end script, outbox) and stores them (drainer,"
        " save_session). In-process path: N real trackers close their websockets together on a"
        " node with HUB_SESSION_GRACE=0; N ÷ the time from the first close to N rows stored."
        " Store alone: N ÷ the time of N sequential save_session calls in one process."
    )
    result.notes.append(
        "How the Redis path works: the reaper ends due sessions DUE_BATCH (200) at a time, one"
        " end script each batch, and looks again at once while a batch comes back full; the"
        " drainer takes up to 256 entries at a time from the outbox and hands them to the store"
        " together (group commit; PostgreSQL writes two batches at once). What limits it:"
        " docs/optimisations.md, P8. The store-alone rows show the stores written one call at a"
        " time, with no batching."
    )


async def _database(config: Config, store: str, name: str) -> str:
    if store == "SQLite":
        return config.sqlite_url(f"{name}.db")
    await reset_postgres(config.postgres_url)
    return config.postgres_url


async def _redis_path(config: Config, store: str, count: int, run: int) -> float:
    name = f"p8-redis-{store.lower()}-{run}"
    url = await _database(config, store, name)
    await make_project(url)
    node = HubNode(name, {"HUB_DATABASE_URL": url, "HUB_REDIS_URL": config.redis_url}, config)
    await node.start()
    loader = await Worker(
        config, f"{name}-loader", "bench.scenarios.ending:due_together",
        redis_url=config.redis_url, count=count,
    ).start()  # fmt: skip
    try:
        await loader.wait_for("registered")
        await loader.send("end")
        await loader.wait_for("due")
        seconds = await wait_stored(url, count, timeout=600)
        await loader.result()
    finally:
        await loader.close()
        await node.stop()
    return seconds


async def _memory_path(config: Config, store: str, count: int, run: int) -> float:
    name = f"p8-memory-{store.lower()}-{run}"
    url = await _database(config, store, name)
    creds = await make_project(url)
    node = HubNode(name, {"HUB_DATABASE_URL": url, "HUB_SESSION_GRACE": "0"}, config)
    await node.start()
    load = await Worker(
        config, f"{name}-load", "bench.scenarios.ending:trackers_leave",
        url=node.url, project_key=creds.project_key, count=count,
    ).start()  # fmt: skip
    try:
        await load.wait_for("connected")
        await load.send("close")
        await load.wait_for("closing")
        seconds = await wait_stored(url, count, timeout=600)
        await load.result()
    finally:
        await load.close()
        await node.stop()
    return seconds
