"""P3 (GET list page) and P4 (POST filtered search) at 100,000 live sessions in one project.

100,000 live sessions cannot be registered through real Socket.IO connections from one process
(the open-file limit is 20,000), so a loader process registers them in bulk through the Redis
registry's own join script (``bench/registry_scale.py``'s pipelined path, one tab each, held by a
loader node id that never beats and so is never reaped). A real ``livehub serve`` node on the same
Redis follows the change stream into its replica and answers REST; another process times the
requests, one at a time on a kept-alive connection.

Baseline: the same queries on the registries themselves, in one process: the in-process
``MemoryRegistry`` against the ``RedisRegistry`` (whose reads first catch up with the stream).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from bench import registry_scale
from bench.harness import Config, HubNode, Worker, get_json, make_project, run_worker
from bench.results import Baseline, ScenarioResult, Series, Target
from bench.scenarios.common import timed_calls
from bench.worker import Control
from hub.registry.base import EndedSession
from hub.registry.memory import MemoryRegistry
from hub.registry.redis import RedisRegistry
from hub.settings import Settings

PROJECT_KEY = registry_scale.PROJECT_KEY
LOADER_NODE = "bench-loader"
FILTER_BODY = {
    "filters": [
        {"type": "USEROS", "value": ["mac"], "operator": "contains"},
        {"type": "METADATA", "source": "plan", "value": ["trial", "pro"], "operator": "is"},
    ],
    "limit": 200,
}


async def _no_sink(ended: EndedSession) -> None:
    return None


# -- load processes ---------------------------------------------------------------------------


async def load_sessions(ctl: Control, redis_url: str, counts: list[int]) -> dict[str, Any]:
    """Register sessions 0…count-1 for each count in turn (reporting after each, waiting for
    ``next``); the registry is not started, so this node never beats and is never reaped."""
    settings = Settings(redis_url=redis_url, node_id=LOADER_NODE, session_grace=3600)
    registry = RedisRegistry(settings, _no_sink)
    redis = aioredis.from_url(redis_url, decode_responses=True)
    try:
        for count in counts:
            start = time.perf_counter()
            await registry_scale.register(registry, redis, count)
            ctl.report("registered", count=count, seconds=time.perf_counter() - start)
            await ctl.command("next")
    finally:
        await redis.aclose()
        await registry._redis.aclose()
    return {}


async def time_rest(
    ctl: Control,
    url: str,
    api_key: str,
    path: str,
    body: Any,
    count: int,
    runs: int,
    total_at: tuple[str, str] = ("data", "total"),
    warm: int = 20,
    statuses: tuple[int, ...] = (200,),
) -> dict[str, Any]:
    """``runs`` rounds of ``count`` sequential requests (GET, or POST with ``body``), in ms.

    ``total_at`` is where a 200 answer holds its total (reported with the samples; None when no
    answer was a 200). Answers with another of ``statuses`` are timed too and counted by status;
    any other status fails the run.
    """
    headers = {"Authorization": api_key}
    seen: dict[int, int] = {}
    totals: list[Any] = []
    async with aiohttp.ClientSession(headers=headers) as http:

        async def call() -> None:
            request = http.get(url + path) if body is None else http.post(url + path, json=body)
            async with request as r:
                if r.status not in statuses:
                    r.raise_for_status()
                    raise RuntimeError(f"unexpected status {r.status}")
                seen[r.status] = seen.get(r.status, 0) + 1
                answer = await r.json()
                if r.status == 200 and not totals:
                    totals.append(answer[total_at[0]][total_at[1]])

        for _ in range(1 + warm):  # warm up the connection, the node and the caches
            await call()
        seen.clear()
        samples = [await timed_calls(call, count) for _ in range(runs)]
    return {"runs": samples, "total": totals[0] if totals else None, "statuses": seen}


async def compare_registries(
    ctl: Control, redis_url: str, count: int, repeat: int
) -> dict[str, Any]:
    """The list and filtered queries on a MemoryRegistry and on a RedisRegistry node (ms)."""
    rng = random.Random(count)
    memory = MemoryRegistry(Settings(session_grace=3600), _no_sink)
    await memory.start()
    for i in range(count):
        await memory.join_tab(registry_scale.make_record(rng, i), "tab")
    redis_node = RedisRegistry(
        Settings(redis_url=redis_url, node_id="bench-probe", session_grace=3600), _no_sink
    )
    await redis_node.start()
    out: dict[str, Any] = {}
    try:
        for name, query in (("list", registry_scale.LIST), ("filtered", registry_scale.FILTERED)):
            for label, registry in (("memory", memory), ("redis", redis_node)):
                await registry.query(PROJECT_KEY, query)
                out[f"{label} {name}"] = await timed_calls(
                    lambda r=registry, q=query: r.query(PROJECT_KEY, q),  # type: ignore[misc]
                    repeat,
                )
    finally:
        await redis_node.close()
        await memory.close()
    return out


# -- the scenario ------------------------------------------------------------------------------


async def run_p3_p4(config: Config, results: dict[str, ScenarioResult]) -> None:
    big = 100_000
    small = 1_000
    runs = config.runs
    count = 200 if config.quick else 1000
    db = config.sqlite_url("assist.db")
    creds = await make_project(db)
    await _use_project_key(db, PROJECT_KEY)
    for result in results.values():
        result.settings.update(
            live_sessions=f"{small:,} then {big:,}, one project",
            registry="Redis (one node answering, replica fed by the stream)",
            requests_per_run=count,
            runs=runs,
        )
    loader = await Worker(
        config, "assist-loader", "bench.scenarios.assist:load_sessions",
        redis_url=config.redis_url, counts=[small, big],
    ).start()  # fmt: skip
    node = HubNode(
        "assist-hub",
        {"HUB_DATABASE_URL": db, "HUB_REDIS_URL": config.redis_url, "HUB_SESSION_GRACE": "3600"},
        config,
    )
    try:
        await loader.wait_for("registered")
        await node.start()
        at_small = await _measure(config, node.url, creds.api_key, count, runs)
        await loader.send("next")
        loaded = await loader.wait_for("registered")
        caught_up = await _wait_total(node.url, creds.api_key, big)
        at_big = await _measure(config, node.url, creds.api_key, count, runs)
        rss = node.rss_kb()
        await loader.send("next")
        await loader.result()
        baseline = await run_worker(
            config, "assist-baseline", "bench.scenarios.assist:compare_registries",
            redis_url=config.redis_url, count=big, repeat=count,
        )  # fmt: skip
    finally:
        await loader.close()
        await node.stop()
    setup_note = (
        f"{big:,} sessions registered in bulk in {loaded['seconds']:.1f} s; the node's replica had"
        f" applied all of them {caught_up:.1f} s after; node RSS {rss / 1024:.0f} MiB."
    )
    if "P3" in results:
        _report(results["P3"], "GET list (newest first, 200)", "list", at_small, at_big, small, big)
        ratio_metric = results["P3"].metric(
            f"time at {big // 1000}k ÷ time at {small // 1000}k (medians)",
            "×",
            kind="value",
            target=Target("value", "<=", 1.5),
        )
        for r_small, r_big in zip(at_small["list"]["runs"], at_big["list"]["runs"], strict=True):
            ratio_metric.add_run(_median(r_big) / _median(r_small))
        _baseline(results["P3"], baseline, "list")
        results["P3"].notes.append(setup_note)
    if "P4" in results:
        _report(
            results["P4"],
            "POST filtered: userOs contains 'mac' AND metadata.plan is trial|pro",
            "filtered",
            at_small,
            at_big,
            small,
            big,
            target=Target("p50", "<=", 50),
        )
        _baseline(results["P4"], baseline, "filtered")
        results["P4"].notes.append(setup_note)


async def _measure(
    config: Config, url: str, api_key: str, count: int, runs: int
) -> dict[str, dict[str, Any]]:
    path = f"/api/v1/{PROJECT_KEY}/assist/sessions"
    out = {}
    for name, body in (("list", None), ("filtered", FILTER_BODY)):
        out[name] = await run_worker(
            config, f"assist-rest-{name}", "bench.scenarios.assist:time_rest",
            url=url, api_key=api_key, path=path, body=body, count=count, runs=runs,
        )  # fmt: skip
    return out


def _median(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2]


def _report(
    result: ScenarioResult,
    label: str,
    name: str,
    at_small: dict[str, Any],
    at_big: dict[str, Any],
    small: int,
    big: int,
    target: Target | None = None,
) -> None:
    for size, data, tgt in ((small, at_small, None), (big, at_big, target)):
        metric = result.metric(
            f"{label} at {size:,} [total {data[name]['total']:,}]",
            "ms",
            target=tgt
            if tgt is not None
            else (Target("p50", "<=", 5) if name == "list" and size == big else None),
        )
        for samples in data[name]["runs"]:
            metric.add_run(samples)
    xs = [float(small), float(big)]
    result.series.append(
        Series(
            "p50",
            xs,
            [_median([x for run in d[name]["runs"] for x in run]) for d in (at_small, at_big)],
            "live sessions in the project",
            "REST latency (ms)",
        )
    )


def _baseline(result: ScenarioResult, baseline: dict[str, Any], name: str) -> None:
    memory, redis = _median(baseline[f"memory {name}"]), _median(baseline[f"redis {name}"])
    result.baselines.append(
        Baseline(
            f"Redis registry vs in-process registry: {name} query at 100,000, Redis ÷ in-process",
            redis / memory,
            f"RedisRegistry.query {redis:.2f} ms (catch-up round trip included),"
            f" MemoryRegistry.query {memory:.2f} ms; medians in one process, no REST",
        )
    )


async def _use_project_key(database_url: str, project_key: str) -> None:
    """Give the bench's project the key the bulk records carry (registry_scale.PROJECT_KEY)."""
    import sqlite3

    path = database_url.removeprefix("sqlite:///")

    def update() -> None:
        with sqlite3.connect(path) as db:
            db.execute("UPDATE projects SET project_key = ? WHERE id = 1", (project_key,))

    await asyncio.to_thread(update)


async def _wait_total(url: str, api_key: str, total: int, timeout: float = 300) -> float:
    """Seconds until the node lists ``total`` sessions."""
    start = time.monotonic()
    async with aiohttp.ClientSession(headers={"Authorization": api_key}) as http:
        while time.monotonic() - start < timeout:
            answer = await get_json(http, f"{url}/api/v1/{PROJECT_KEY}/assist/sessions?limit=1")
            if answer["data"]["total"] >= total:
                return time.monotonic() - start
            await asyncio.sleep(0.2)
    raise TimeoutError(f"the node did not reach {total} live sessions in {timeout} s")
