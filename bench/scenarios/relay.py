"""P6: the assist relay, tracker → agent across two nodes, at 1,000 events a second.

Two ``livehub serve`` nodes share Redis and one database. One load process connects 20 trackers
to node A; another connects one agent per session to node B (``identity=agent``, an API key,
SPEC §4.4). The trackers then send ``BENCH {"t": <send time>}`` events, 50 a second each (under
the 100/s rate limit), 1,000 a second together, on a fixed schedule. The agent's process takes
each event's latency as receive time − send time on CLOCK_MONOTONIC, which both processes share.
The same is done with both nodes and clients on the msgpack serializer (the baseline).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from typing import Any

from bench.harness import Config, HubNode, NotRun, Worker, make_project, reset_postgres
from bench.loadgen import SioClient, client_session, close_all, connect_all
from bench.results import Baseline, ScenarioResult, Target
from bench.scenarios.common import now_ns, tracker
from bench.worker import Control

SESSIONS = 20
RATE = 1000  # events a second, all trackers together
EVENT = "BENCH"


async def agents(
    ctl: Control, url: str, project_key: str, api_key: str, sessions: int, serializer: str
) -> dict[str, Any]:
    """One agent per session; latencies (ms) of every BENCH event they receive until ``stop``."""
    latencies: list[float] = []

    def on_event(event: str, args: list[Any]) -> None:
        if event == EVENT and args and isinstance(args[0], dict):
            latencies.append((now_ns() - int(args[0]["t"])) / 1e6)

    async with client_session() as http:
        clients = [
            SioClient(
                http,
                url,
                query={
                    "identity": "agent",
                    "peerId": f"{project_key}-relay{i}",
                    "agentInfo": json.dumps({"id": f"agent{i}", "name": "Bench"}),
                },
                auth={"apiKey": api_key},
                serializer=serializer,
                handler=on_event,
            )
            for i in range(sessions)
        ]
        errors = [str(e) for e in await connect_all(clients) if e is not None]
        if errors:
            raise RuntimeError(f"agents refused: {errors[:3]}")
        ctl.report("ready")
        await ctl.command("mark")
        latencies.clear()  # what arrived before the measured window (none expected)
        ctl.report("marked")
        await ctl.command("stop")
        received = list(latencies)
        await close_all(clients)
    return {"latencies": received}


async def trackers(
    ctl: Control, url: str, project_key: str, sessions: int, seconds: float, serializer: str
) -> dict[str, Any]:
    """Trackers that send BENCH events at RATE a second together, on a fixed schedule."""
    async with client_session() as http:
        clients = [
            tracker(http, url, project_key, i, prefix="relay", serializer=serializer)
            for i in range(sessions)
        ]
        errors = [str(e) for e in await connect_all(clients) if e is not None]
        if errors:
            raise RuntimeError(f"trackers refused: {errors[:3]}")
        ctl.report("ready")
        await ctl.command("go")
        period_ns = int(1e9 * sessions / RATE)
        per_client = int(seconds * RATE / sessions)
        start = now_ns()
        sent = 0
        late = 0

        async def send(index: int, client: SioClient) -> None:
            nonlocal sent, late
            # Staggered so that the events of all trackers are spread evenly in time.
            due = start + index * period_ns // sessions
            for _ in range(per_client):
                wait = due - now_ns()
                if wait > 0:
                    await asyncio.sleep(wait / 1e9)
                elif wait < -period_ns:
                    late += 1
                await client.emit(EVENT, {"t": now_ns(), "pad": "x" * 200})
                sent += 1
                due += period_ns

        await asyncio.gather(*(send(i, c) for i, c in enumerate(clients)))
        elapsed = (now_ns() - start) / 1e9
        ctl.report("sent", sent=sent, seconds=elapsed, late=late)
        await ctl.command("close")
        await close_all(clients)
    return {}


async def run_p6(config: Config, results: dict[str, ScenarioResult]) -> None:
    result = results["P6"]
    if importlib.util.find_spec("hub.agent") is None and config.quick:
        raise NotRun("hub/agent.py (the assist relay) is not there yet")
    seconds = 5.0 if config.quick else 10.0
    runs = 1 if config.quick else 3
    result.settings.update(
        nodes=2,
        registry="Redis",
        sessions=SESSIONS,
        events_per_second=RATE,
        event_payload="~230 bytes",
        seconds_per_run=seconds,
        runs=runs,
    )
    p99s: dict[str, float] = {}
    for serializer in ("json", "msgpack"):
        metric = result.metric(
            f"tracker event on A → agent on B ({serializer})",
            "ms",
            target=Target("p99", "<=", 10) if serializer == "json" else None,
        )
        rate = result.metric(f"events sent/s ({serializer})", "/s", kind="value")
        for run in range(runs):
            samples, sent = await _one_run(config, serializer, seconds, run)
            metric.add_run(samples)
            rate.add_run(sent["sent"] / sent["seconds"])
            if len(samples) < sent["sent"]:
                result.notes.append(
                    f"{serializer} run {run + 1}: {sent['sent'] - len(samples)} of"
                    f" {sent['sent']:,} events not received by the end of the run"
                )
            if sent["late"]:
                result.notes.append(
                    f"{serializer} run {run + 1}: the sender fell behind its schedule"
                    f" {sent['late']} times (the load process was short of CPU)"
                )
        p99s[serializer] = metric.stat("p99")
    result.baselines.append(
        Baseline(
            "JSON vs msgpack serializer: relay p99, JSON ÷ msgpack",
            p99s["json"] / p99s["msgpack"],
            f"p99 JSON {p99s['json']:.2f} ms, msgpack {p99s['msgpack']:.2f} ms",
        )
    )


async def _one_run(
    config: Config, serializer: str, seconds: float, run: int
) -> tuple[list[float], dict[str, Any]]:
    await reset_postgres(config.postgres_url)
    creds = await make_project(config.postgres_url)
    env = {
        "HUB_REDIS_URL": config.redis_url,
        "HUB_DATABASE_URL": config.postgres_url,
        "HUB_SOCKET_SERIALIZER": serializer,
    }
    nodes = [HubNode(f"p6-a-{serializer}-{run}", env, config)]
    nodes.append(HubNode(f"p6-b-{serializer}-{run}", env, config))
    await asyncio.gather(*(n.start() for n in nodes))
    sender = Worker(
        config, f"p6-trackers-{serializer}-{run}", "bench.scenarios.relay:trackers",
        url=nodes[0].url, project_key=creds.project_key, sessions=SESSIONS, seconds=seconds,
        serializer=serializer,
    )  # fmt: skip
    receiver = Worker(
        config, f"p6-agents-{serializer}-{run}", "bench.scenarios.relay:agents",
        url=nodes[1].url, project_key=creds.project_key, api_key=creds.api_key,
        sessions=SESSIONS, serializer=serializer,
    )  # fmt: skip
    try:
        await sender.start()
        await sender.wait_for("ready")
        await receiver.start()
        await receiver.wait_for("ready")
        await asyncio.sleep(0.5)  # the agents' announcements settle
        await receiver.send("mark")
        await receiver.wait_for("marked")
        await sender.send("go")
        sent = await sender.wait_for("sent", timeout=seconds * 10 + 60)
        await asyncio.sleep(1.0)  # the last events arrive
        await receiver.send("stop")
        received = await receiver.result()
        await sender.send("close")
        await sender.result()
    finally:
        await sender.close()
        await receiver.close()
        await asyncio.gather(*(n.stop() for n in nodes))
    return received["latencies"], sent
