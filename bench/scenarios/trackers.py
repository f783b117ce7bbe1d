"""P1 (trackers held by one hub process) and P2 (tracker registrations per second).

Both start a fresh ``livehub serve`` node and connect load-generator trackers to it from another
process (bench/loadgen.py): real Engine.IO websockets, real handshakes, a realistic sessionInfo and
User-Agent each.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from bench.harness import Config, HubNode, Worker, flush_redis, make_project
from bench.loadgen import SioClient, client_session, close_all, connect_all
from bench.results import Baseline, ScenarioResult, Series, Target
from bench.scenarios.common import tracker
from bench.worker import Control

PING_INTERVAL = 5  # seconds: short enough that every connection answers a ping while held


# -- load processes ---------------------------------------------------------------------------


async def hold(
    ctl: Control, url: str, project_key: str, count: int, steps: int, concurrency: int
) -> dict[str, Any]:
    """Connect ``count`` trackers in ``steps`` steps (the harness reads RSS after each), hold
    them until each has answered a ping, then close them when told."""
    async with client_session() as http:
        warm = [tracker(http, url, project_key, i, prefix="warm") for i in range(20)]
        await connect_all(warm, concurrency)
        await close_all(warm)
        ctl.report("warm")
        await ctl.command("go")
        clients: list[SioClient] = []
        per_step = -(-count // steps)
        for step in range(steps):
            batch = [
                tracker(http, url, project_key, i)
                for i in range(step * per_step, min(count, (step + 1) * per_step))
            ]
            errors = await connect_all(batch, concurrency, timeout=60)
            clients.extend(batch)
            failed = [str(e) for e in errors if e is not None]
            ctl.report("step", connected=sum(c.connected for c in clients), failed=failed[:3])
            await ctl.command("next")
        deadline = time.monotonic() + 3 * PING_INTERVAL + 5
        while time.monotonic() < deadline and min(c.pings for c in clients) < 1:
            await asyncio.sleep(0.2)
        ctl.report(
            "held",
            alive=sum(c.connected for c in clients),
            min_pings=min(c.pings for c in clients),
        )
        await ctl.command("close")
        await close_all(clients)
    return {}


async def register(
    ctl: Control,
    url: str,
    project_key: str,
    count: int,
    concurrency: int,
    serializer: str,
    prefix: str,
) -> dict[str, Any]:
    """Connect ``count`` trackers with ``concurrency`` handshakes in flight; rate and latencies."""
    async with client_session() as http:
        warm = [tracker(http, url, project_key, i, prefix="w" + prefix) for i in range(20)]
        await connect_all(warm, concurrency)
        clients = [
            tracker(http, url, project_key, i, prefix=prefix, serializer=serializer)
            for i in range(count)
        ]
        gate = asyncio.Semaphore(concurrency)
        latencies: list[float] = []
        failed: list[str] = []

        async def one(client: SioClient) -> None:
            async with gate:
                start = time.perf_counter()
                try:
                    await client.connect(60)
                except Exception as e:
                    failed.append(str(e))
                    return
                latencies.append((time.perf_counter() - start) * 1000)

        start = time.perf_counter()
        await asyncio.gather(*(one(c) for c in clients))
        seconds = time.perf_counter() - start
        # No goodbyes: the harness kills the hub next, and closing 10,000 sockets takes seconds.
    return {
        "seconds": seconds,
        "registered": len(latencies),
        "failed": failed[:5],
        "failures": len(failed),
        "latencies": latencies,
    }


# -- scenarios --------------------------------------------------------------------------------


@dataclass
class Held:
    """What one hold of ``count`` trackers measured on one server process."""

    before_kb: int
    after_kb: int
    alive: int
    min_pings: int
    idle_cpu: float  # % of a core while the trackers were held
    xs: list[float]
    ys: list[float]
    failed: list[str]


async def _hold(
    config: Config, node: HubNode, name: str, project_key: str, count: int, steps: int
) -> Held:
    """Hold ``count`` trackers on a started node; its RSS before, after and along the way."""
    worker = await Worker(
        config, name, "bench.scenarios.trackers:hold", url=node.url, project_key=project_key,
        count=count, steps=steps, concurrency=200,
    ).start()  # fmt: skip
    try:
        await worker.wait_for("warm")
        await asyncio.sleep(0.5)
        before = node.rss_kb()
        await worker.send("go")
        xs, ys, failed = [0.0], [before / 1024], []
        for _ in range(steps):
            step = await worker.wait_for("step")
            failed += step["failed"]
            xs.append(step["connected"])
            ys.append(node.rss_kb() / 1024)
            await worker.send("next")
        cpu_start, wall_start = node.cpu_seconds(), time.monotonic()
        status = await worker.wait_for("held", timeout=120)
        cpu = 100 * (node.cpu_seconds() - cpu_start) / max(time.monotonic() - wall_start, 1e-3)
        after = node.rss_kb()
        await worker.send("close")
        await worker.result()
    finally:
        await worker.close()
    return Held(before, after, status["alive"], status["min_pings"], cpu, xs, ys, failed)


async def run_p1(config: Config, results: dict[str, ScenarioResult]) -> None:
    result = results["P1"]
    count = 2_000 if config.quick else 10_000
    steps = 5 if config.quick else 10
    runs = 1 if config.quick else 3
    result.settings.update(
        trackers=count,
        registry="in-process",
        store="SQLite",
        HUB_PING_INTERVAL=PING_INTERVAL,
        HUB_WS_COMPRESSION="off (default)",
        runs=runs,
    )
    per_tracker = result.metric(
        "RSS per tracker (after − before) / trackers",
        "KiB",
        kind="value",
        target=Target("value", "<=", 30),
    )
    held = result.metric(
        "trackers held (connected after a ping round)",
        "trackers",
        kind="value",
        # Quick mode holds fewer: the count is checked against the target in full mode only.
        target=None if config.quick else Target("value", ">=", 10_000),
    )
    idle_cpu = result.metric("hub CPU while holding them idle", "% of a core", kind="value")
    bare = result.metric(
        "baseline: RSS per connection of a bare python-socketio server", "KiB", kind="value"
    )
    for run in range(runs):
        db = config.sqlite_url(f"p1-{run}.db")
        creds = await make_project(db)
        env = {"HUB_DATABASE_URL": db, "HUB_PING_INTERVAL": str(PING_INTERVAL)}
        node = HubNode(f"p1-hub-{run}", env, config)
        await node.start()
        try:
            out = await _hold(config, node, f"p1-load-{run}", creds.project_key, count, steps)
        finally:
            await node.stop()
        per_tracker.add_run((out.after_kb - out.before_kb) / count)
        held.add_run(out.alive if out.min_pings >= 1 else 0)
        idle_cpu.add_run(out.idle_cpu)
        result.series.append(
            Series(f"livehub, run {run + 1}", out.xs, out.ys, "connected trackers", "RSS (MiB)")
        )
        result.notes.append(
            f"run {run + 1}: hub RSS {out.before_kb / 1024:.1f} MiB before,"
            f" {out.after_kb / 1024:.1f} MiB with {out.alive:,} trackers;"
            f" fewest pings answered by one tracker: {out.min_pings}"
            + (f"; failed connects, e.g. {out.failed[:2]}" if out.failed else "")
        )
    server = HubNode(
        "p1-bare", {"HUB_PING_INTERVAL": str(PING_INTERVAL)}, config,
        command=("-m", "bench.scenarios.bare_server"),
    )  # fmt: skip
    await server.start()
    try:
        out = await _hold(config, server, "p1-bare-load", "bare", count, steps)
    finally:
        await server.stop()
    bare.add_run((out.after_kb - out.before_kb) / count)
    result.series.append(
        Series("bare python-socketio", out.xs, out.ys, "connected trackers", "RSS (MiB)")
    )
    result.baselines.append(
        Baseline(
            "livehub vs a bare python-socketio server: RSS per connection, livehub ÷ bare",
            per_tracker.stat("value") / bare.stat("value"),
            f"livehub {per_tracker.stat('value'):.1f} KiB, bare {bare.stat('value'):.1f} KiB"
            " (hub.app.create_sio: the same server, websocket compression off, an empty"
            " connect handler)",
        )
    )
    result.notes.append(
        f"The idle CPU is measured with pings every {PING_INTERVAL} s (the default is 25 s, five"
        " times fewer pings)."
    )
    if config.quick:
        result.notes.append(
            f"Quick mode holds {count:,} trackers: the ≥ 10,000 target is checked in full mode."
        )


async def run_p2(config: Config, results: dict[str, ScenarioResult]) -> None:
    result = results["P2"]
    count = 2_000 if config.quick else 10_000
    runs = 1 if config.quick else 3
    concurrency = 200
    result.settings.update(trackers=count, handshakes_in_flight=concurrency, runs=runs)
    variants = [
        ("in-process registry, JSON", "json", False),
        ("in-process registry, msgpack", "msgpack", False),
        ("Redis registry, JSON", "json", True),
    ]
    rates: dict[str, Any] = {}
    for label, serializer, redis in variants:
        rate = result.metric(
            f"registrations/s — {label}",
            "/s",
            kind="value",
            target=Target("value", ">=", 1000) if label.endswith("JSON") else None,
        )
        latency = result.metric(f"connect latency — {label}", "ms")
        rates[label] = rate
        for run in range(runs):
            db = config.sqlite_url(f"p2-{serializer}-{redis}-{run}.db")
            creds = await make_project(db)
            env = {"HUB_DATABASE_URL": db, "HUB_SOCKET_SERIALIZER": serializer}
            if redis:
                await flush_redis(config)
                env["HUB_REDIS_URL"] = config.redis_url
            node = HubNode(f"p2-hub-{serializer}-{int(redis)}-{run}", env, config)
            await node.start()
            try:
                worker = Worker(
                    config,
                    f"p2-load-{serializer}-{int(redis)}-{run}",
                    "bench.scenarios.trackers:register",
                    url=node.url,
                    project_key=creds.project_key,
                    count=count,
                    concurrency=concurrency,
                    serializer=serializer,
                    prefix="r",
                )
                await worker.start()
                out = await worker.result()
            finally:
                await node.kill()
            if out["failures"]:
                result.notes.append(f"{label}: {out['failures']} failed connects: {out['failed']}")
            rate.add_run(out["registered"] / out["seconds"])
            latency.add_run(out["latencies"])
    json_rate = rates["in-process registry, JSON"].stat("value")
    msgpack_rate = rates["in-process registry, msgpack"].stat("value")
    result.baselines.append(
        Baseline(
            "JSON vs msgpack serializer: registrations/s, JSON ÷ msgpack",
            json_rate / msgpack_rate,
            f"JSON {json_rate:,.0f}/s, msgpack {msgpack_rate:,.0f}/s",
        )
    )
    result.notes.append(
        "A registration is a complete tracker connect: websocket upgrade, Engine.IO open,"
        " Socket.IO CONNECT with the handshake parsed, User-Agent parsed, project looked up"
        " (cached)"
        f" and the registry's join; the rate is {count:,} ÷ the time from the first attempt to the"
        " last CONNECT answered."
    )
