"""P5: an update made through a tracker on node A, visible through REST on node B.

Two ``livehub serve`` nodes share one Redis and one PostgreSQL database (a cluster), with 1,000
background live sessions registered in bulk. A load process connects one tracker to node A and,
for each sample, sends ``UPDATE_SESSION {"pageTitle": "v<n>"}`` and at once starts reading
``GET /api/v1/{projectKey}/assist/sessions/{sessionId}`` on node B, back to back, until the record
shows ``v<n>``. The sample is the time from the send to that answer; the ack's time is kept too.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from bench.harness import (
    Config,
    HubNode,
    Worker,
    make_project,
    reset_postgres,
    run_worker,
)
from bench.loadgen import client_session
from bench.results import ScenarioResult, Target
from bench.scenarios import assist
from bench.scenarios.common import tracker
from bench.worker import Control

SESSION_PREFIX = "p5s"  # no "-": peerId splits on it


async def update_then_read(
    ctl: Control, url_a: str, url_b: str, project_key: str, api_key: str, count: int, runs: int
) -> dict[str, Any]:
    """``runs`` rounds of ``count`` samples: (visible on B in ms, ack from A in ms, reads)."""
    async with (
        client_session() as http,
        aiohttp.ClientSession(headers={"Authorization": api_key}) as rest,
    ):
        client = tracker(http, url_a, project_key, 0, prefix=SESSION_PREFIX)
        await client.connect()
        path = f"{url_b}/api/v1/{project_key}/assist/sessions/{SESSION_PREFIX}0"

        async def title() -> str:
            async with rest.get(path) as r:
                if r.status == 404:
                    return ""
                r.raise_for_status()
                return str((await r.json())["data"]["pageTitle"])

        async def acked(want: str, start: float) -> tuple[Any, float]:
            answer = await client.call("UPDATE_SESSION", {"pageTitle": want})
            return answer, (time.perf_counter() - start) * 1000

        async with asyncio.timeout(30):
            while await title() == "":  # B sees the session once its replica caught up
                await asyncio.sleep(0.01)
        visible_runs, ack_runs, reads = [], [], 0
        n = 0
        for _ in range(runs):
            visible, acks = [], []
            for _ in range(count):
                n += 1
                want = f"v{n}"
                start = time.perf_counter()
                ack = asyncio.create_task(acked(want, start))
                seen = ""
                try:
                    async with asyncio.timeout(10):
                        while (seen := await title()) != want:
                            reads += 1
                except TimeoutError:
                    detail = ack.result() if ack.done() else "no ack"
                    raise RuntimeError(f"B showed {seen!r}, not {want!r}; ack: {detail}") from None
                visible.append((time.perf_counter() - start) * 1000)
                answer, took = await ack
                if answer != {"ok": True}:
                    raise RuntimeError(f"UPDATE_SESSION was refused: {answer}")
                acks.append(took)
            visible_runs.append(visible)
            ack_runs.append(acks)
        await client.close()
    return {"visible": visible_runs, "acks": ack_runs, "reads": reads}


async def run_p5(config: Config, results: dict[str, ScenarioResult]) -> None:
    result = results["P5"]
    background = 1_000
    count = 200 if config.quick else 1000
    runs = config.runs
    await reset_postgres(config.postgres_url)
    creds = await make_project(config.postgres_url)
    result.settings.update(
        nodes=2,
        registry="Redis",
        store="PostgreSQL",
        background_live_sessions=background,
        samples_per_run=count,
        HUB_EVENT_RATE=100_000,
        runs=runs,
    )
    env = {
        "HUB_REDIS_URL": config.redis_url,
        "HUB_DATABASE_URL": config.postgres_url,
        "HUB_SESSION_GRACE": "3600",
        # One tracker sends updates back to back, faster than a real one may (100/s).
        "HUB_EVENT_RATE": "100000",
        "HUB_EVENT_BURST": "100000",
    }
    loader = await Worker(
        config, "p5-loader", "bench.scenarios.assist:load_sessions",
        redis_url=config.redis_url, counts=[background],
    ).start()  # fmt: skip
    nodes = [HubNode("p5-a", env, config), HubNode("p5-b", env, config)]
    try:
        await loader.wait_for("registered")
        await loader.send("next")
        await loader.result()
        await asyncio.gather(*(n.start() for n in nodes))
        out = await run_worker(
            config, "p5-load", "bench.scenarios.cluster:update_then_read",
            url_a=nodes[0].url, url_b=nodes[1].url, project_key=creds.project_key,
            api_key=creds.api_key, count=count, runs=runs,
        )  # fmt: skip
    finally:
        await loader.close()
        await asyncio.gather(*(n.stop() for n in nodes))
    visible = result.metric(
        "UPDATE_SESSION sent on A → visible in GET on B", "ms", target=Target("p99", "<=", 50)
    )
    acks = result.metric("UPDATE_SESSION ack on A (for comparison)", "ms")
    for samples in out["visible"]:
        visible.add_run(samples)
    for samples in out["acks"]:
        acks.add_run(samples)
    result.notes.append(
        f"The background sessions belong to another project key ({assist.PROJECT_KEY}) in the same"
        f" Redis: node B's replica holds {background + 1:,} sessions. Reads on B per sample:"
        f" {out['reads'] / (count * runs) + 1:.2f} on average (the first read after the send"
        " usually already sees the change: a read catches up with the stream first)."
    )
