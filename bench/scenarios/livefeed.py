"""P9: the live feed, 1,000 subscribers on ``/live`` and 100 session updates a second.

One ``livehub serve`` node (in-process registry). Two load processes connect 500 subscribers each
to ``/live`` (an API key, the project, no filters: every subscriber gets every change). A third
connects 10 trackers that send ``UPDATE_SESSION {"pageTitle": "bench <send time>"}`` 10 times a
second each. Each ``SESSION_UPDATED`` a subscriber receives gives one delivery latency: receive
time − send time on CLOCK_MONOTONIC (read from the pageTitle without decoding the whole packet).
100 updates/s × 1,000 subscribers is 100,000 deliveries a second; deliveries that have not arrived
when the run is over count as infinitely late.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
from typing import Any

from bench.harness import Config, HubNode, NotRun, Worker, make_project
from bench.loadgen import SioClient, client_session, close_all, connect_all
from bench.results import ScenarioResult, Target
from bench.scenarios.common import now_ns, tracker
from bench.worker import Control

SUBSCRIBERS = 1000
PROCESSES = 2
UPDATERS = 10
RATE = 100  # updates a second, all trackers together
MARK = '"pageTitle":"bench '
KEEP = 50_000  # latency samples a subscriber process sends back at most (evenly spread)


async def subscribe(
    ctl: Control, url: str, project_key: str, api_key: str, count: int, first: int
) -> dict[str, Any]:
    """``count`` subscribers; every SESSION_UPDATED latency (ms) until ``stop``."""
    latencies: list[float] = []
    snapshots = 0

    def on_raw(packet: str) -> bool:
        if not packet.startswith('2/live,["SESSION_UPDATED"'):
            return False
        at = packet.find(MARK)
        if at >= 0:
            start = at + len(MARK)
            latencies.append((now_ns() - int(packet[start : packet.index('"', start)])) / 1e6)
        return True

    def on_event(event: str, args: list[Any]) -> None:
        nonlocal snapshots
        if event == "SESSIONS":
            snapshots += 1

    async with client_session() as http:
        clients = [
            SioClient(
                http,
                url,
                namespace="/live",
                auth={"apiKey": api_key, "projectKey": project_key},
                handler=on_event,
                raw=on_raw,
            )
            for _ in range(first, first + count)
        ]
        errors = [str(e) for e in await connect_all(clients, 100) if e is not None]
        if errors:
            raise RuntimeError(f"subscribers refused: {errors[:3]}")
        ctl.report("ready")
        await ctl.command("mark")
        latencies.clear()
        ctl.report("marked")
        while (await ctl.next_command())["command"] == "count":
            ctl.report("count", received=len(latencies))
        received = list(latencies)
        await close_all(clients)
    stride = max(1, math.ceil(len(received) / KEEP))
    return {
        "received": len(received),
        "samples": [round(x, 2) for x in sorted(received)[::stride]],
        "stride": stride,
        "snapshots": snapshots,
        "connected": len(clients),
    }


async def update(
    ctl: Control, url: str, project_key: str, sessions: int, seconds: float
) -> dict[str, Any]:
    """Trackers that send UPDATE_SESSION at RATE a second together, on a fixed schedule."""
    async with client_session() as http:
        clients = [tracker(http, url, project_key, i, prefix="feed") for i in range(sessions)]
        errors = [str(e) for e in await connect_all(clients) if e is not None]
        if errors:
            raise RuntimeError(f"trackers refused: {errors[:3]}")
        ctl.report("ready")
        await ctl.command("go")
        period_ns = int(1e9 * sessions / RATE)
        per_client = int(seconds * RATE / sessions)
        start = now_ns()
        sent = 0

        async def send(index: int, client: SioClient) -> None:
            nonlocal sent
            due = start + index * period_ns // sessions
            for _ in range(per_client):
                wait = due - now_ns()
                if wait > 0:
                    await asyncio.sleep(wait / 1e9)
                await client.emit("UPDATE_SESSION", {"pageTitle": f"bench {now_ns()}"})
                sent += 1
                due += period_ns

        await asyncio.gather(*(send(i, c) for i, c in enumerate(clients)))
        ctl.report("sent", sent=sent, seconds=(now_ns() - start) / 1e9)
        await ctl.command("close")
        await close_all(clients)
    return {}


async def run_p9(config: Config, results: dict[str, ScenarioResult]) -> None:
    result = results["P9"]
    if importlib.util.find_spec("hub.livefeed") is None and config.quick:
        raise NotRun("hub/livefeed.py (the live feed) is not there yet")
    seconds = 5.0 if config.quick else 10.0
    runs = 1 if config.quick else 3
    result.settings.update(
        subscribers=SUBSCRIBERS,
        subscriber_processes=PROCESSES,
        updates_per_second=RATE,
        updating_trackers=UPDATERS,
        registry="in-process",
        seconds_per_run=seconds,
        runs=runs,
    )
    delivery = result.metric(
        "UPDATE_SESSION sent → SESSION_UPDATED received", "ms", target=Target("p99", "<=", 100)
    )
    share = result.metric("deliveries received by the end of the run", "%", kind="value")
    for run in range(runs):
        samples, sent, received = await _one_run(config, seconds, run, result)
        expected = sent * SUBSCRIBERS
        delivery.add_run(
            samples + [math.inf] * max(0, round((expected - received) / _stride(samples, received)))
        )
        share.add_run(100 * received / expected if expected else 0.0)
        result.notes.append(
            f"run {run + 1}: {sent:,} updates sent, {received:,} of {expected:,} deliveries"
            " received within 10 s after the last update (missing ones count as infinitely late)."
        )


def _stride(samples: list[float], received: int) -> float:
    """How many deliveries one kept sample stands for."""
    return received / len(samples) if samples else 1.0


async def _one_run(
    config: Config, seconds: float, run: int, result: ScenarioResult
) -> tuple[list[float], int, int]:
    db = config.sqlite_url(f"p9-{run}.db")
    creds = await make_project(db)
    node = HubNode(f"p9-hub-{run}", {"HUB_DATABASE_URL": db}, config)
    await node.start()
    per = SUBSCRIBERS // PROCESSES
    subscribers = [
        Worker(
            config,
            f"p9-subscribers-{run}-{p}",
            "bench.scenarios.livefeed:subscribe",
            url=node.url,
            project_key=creds.project_key,
            api_key=creds.api_key,
            count=per,
            first=p * per,
        )
        for p in range(PROCESSES)
    ]
    updater = Worker(
        config, f"p9-updaters-{run}", "bench.scenarios.livefeed:update",
        url=node.url, project_key=creds.project_key, sessions=UPDATERS, seconds=seconds,
    )  # fmt: skip
    try:
        await updater.start()
        await updater.wait_for("ready")
        for worker in subscribers:
            await worker.start()
        for worker in subscribers:
            await worker.wait_for("ready")
        for worker in subscribers:
            await worker.send("mark")
            await worker.wait_for("marked")
        cpu = node.cpu_seconds()
        await updater.send("go")
        sent = await updater.wait_for("sent", timeout=seconds * 10 + 60)
        result.notes.append(
            f"run {run + 1}: hub CPU {100 * (node.cpu_seconds() - cpu) / sent['seconds']:.0f} % of"
            " a core while the updates were sent"
        )
        await _settle(subscribers, int(sent["sent"]) * SUBSCRIBERS)
        for worker in subscribers:
            await worker.send("stop")
        outs = [await w.result() for w in subscribers]
        await updater.send("close")
        await updater.result()
    finally:
        for worker in [*subscribers, updater]:
            await worker.close()
        await node.stop()
    samples = sorted(s for out in outs for s in out["samples"])
    received = sum(out["received"] for out in outs)
    return samples, int(sent["sent"]), received


async def _settle(subscribers: list[Worker], expected: int, within: float = 10.0) -> None:
    """Wait (at most ``within`` s) for the deliveries still queued when the last update left."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        received = 0
        for worker in subscribers:
            await worker.send("count")
            received += (await worker.wait_for("count"))["received"]
        if received >= expected:
            return
        await asyncio.sleep(0.2)
