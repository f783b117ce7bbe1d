"""Latency of the assist relay across two nodes (SPEC §4.4): tracker on node A, agent on node B.

Run: ``.venv/bin/python bench/relay_latency.py [--redis-url redis://127.0.0.1:6379/14]
[--events 2000] [--rate 1000]``. Not a test: the numbers go to docs/architecture.md.

Starts two ``livehub serve`` processes sharing one Redis and one SQLite file, connects a tracker
to A and an agent to B (python-socketio clients in this process, websocket), then sends
``--events`` events at ``--rate`` a second from the tracker (after a warm-up) and times each from
the send call to the agent's handler, on this process's monotonic clock; then the same from the
agent to the tab. The per-connection rate limit is raised for the run (HUB_EVENT_RATE), since one
tracker sends far faster than the default 100 events a second. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import socketio

from hub.settings import Settings
from hub.store import open_store

ROOT = Path(__file__).resolve().parent.parent
SESSION = "benchrelay1"  # no "-": a tracker's peerId would split it
WARMUP = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_node(name: str, env: dict[str, str], log: Path) -> tuple[Any, str]:
    """``python -m hub serve`` with ``env``; returns the process and its URL once healthy."""
    port = free_port()
    full = {**os.environ, "HUB_LOG_LEVEL": "warning", **env}
    full.update(HUB_HOST="127.0.0.1", HUB_PORT=str(port), HUB_NODE_ID=name)
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hub", "serve", cwd=ROOT, env=full, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"{name} exited: {_tail(log)}")
            try:
                async with http.get(url + "/health") as r:
                    if r.status == 200:
                        return proc, url
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise TimeoutError(f"{name} did not start: {_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


async def stop_node(proc: Any) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summary(latencies_ns: list[int], sent: int, seconds: float) -> dict[str, Any]:
    ms = sorted(x / 1e6 for x in latencies_ns)
    if not ms:
        return {"sent": sent, "received": 0}
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {
        "sent": sent,
        "received": len(ms),
        "rate_sent_per_s": round(sent / seconds),
        "p50_ms": round(q[49], 3),
        "p90_ms": round(q[89], 3),
        "p99_ms": round(q[98], 3),
        "max_ms": round(ms[-1], 3),
    }


async def paced(
    send: Callable[[int], Awaitable[None]], count: int, rate: float, start_at: int = 0
) -> float:
    """Call ``send(i)`` ``count`` times at ``rate`` a second; the seconds it took."""
    began = time.perf_counter()
    for n in range(count):
        due = began + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(start_at + n)
    return time.perf_counter() - began


async def measure(
    senders: list[socketio.AsyncClient],
    event: str,
    received: dict[int, int],
    count: int,
    rate: float,
) -> dict[str, Any]:
    """Warm up, then send ``count`` events at ``rate`` round-robin over ``senders``."""
    sent_at: dict[int, int] = {}

    async def send(i: int) -> None:
        sent_at[i] = time.perf_counter_ns()
        await senders[i % len(senders)].emit(event, {"i": i, "pad": "x" * 64})

    await paced(send, WARMUP, rate)
    seconds = await paced(send, count, rate, start_at=WARMUP)
    deadline = time.monotonic() + 30
    # Arrivals land in one table per pair: polled, as a bench may (no test waits like this).
    while len(received) < WARMUP + count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    latencies = [received[i] - sent_at[i] for i in range(WARMUP, WARMUP + count) if i in received]
    return summary(latencies, count, seconds)


async def connect_pair(
    url_a: str, url_b: str, project_key: str, api_key: str, session: str
) -> tuple[socketio.AsyncClient, socketio.AsyncClient, dict[int, int], dict[int, int]]:
    """A tracker on A and an agent on B in one session, with their arrival-time tables."""
    tracker = socketio.AsyncClient(reconnection=False)
    agent = socketio.AsyncClient(reconnection=False)
    at_agent: dict[int, int] = {}
    at_tab: dict[int, int] = {}
    joined = asyncio.Event()

    async def on_tick(data: dict[str, Any]) -> None:
        at_agent[data["i"]] = time.perf_counter_ns()

    async def on_agent_tick(_agent_sid: str, data: dict[str, Any]) -> None:
        at_tab[data["i"]] = time.perf_counter_ns()

    async def on_new_agent(*_args: Any) -> None:
        joined.set()

    agent.on("TRACKER_TICK", on_tick)
    tracker.on("AGENT_TICK", on_agent_tick)
    tracker.on("NEW_AGENT", on_new_agent)
    peer = f"{project_key}-{session}"
    await tracker.connect(
        f"{url_a}?identity=session&peerId={peer}&tabId=t1",
        transports=["websocket"],
        socketio_path="/ws-assist/socket",
    )
    await agent.connect(
        f"{url_b}?identity=agent&peerId={peer}&agentInfo=%7B%22id%22%3A%22bench%22%7D",
        auth={"apiKey": api_key},
        transports=["websocket"],
        socketio_path="/ws-assist/socket",
    )
    await asyncio.wait_for(joined.wait(), 10)
    return tracker, agent, at_agent, at_tab


async def run(redis_url: str, events: int, rate: float, sessions: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="livehub-relay-"))
    database_url = f"sqlite:///{workdir / 'hub.db'}"
    store = open_store(Settings(database_url=database_url))
    await store.open()
    project = await store.create_project("bench")
    key = await store.create_key(None, "bench")
    await store.close()

    per_connection = rate / sessions
    env = {"HUB_REDIS_URL": redis_url, "HUB_DATABASE_URL": database_url}
    if per_connection > 100:  # over the default limit: raise it for the run
        env.update(HUB_EVENT_RATE=str(per_connection * 2), HUB_EVENT_BURST=str(int(rate)))
    node_a, url_a = await start_node("relay-a", env, workdir / "a.log")
    node_b, url_b = await start_node("relay-b", env, workdir / "b.log")
    clients: list[socketio.AsyncClient] = []
    try:
        pairs = [
            await connect_pair(url_a, url_b, project.project_key, key.secret, f"bench{n}")
            for n in range(sessions)
        ]
        trackers = [pair[0] for pair in pairs]
        agents = [pair[1] for pair in pairs]
        clients = trackers + agents
        # Event i travels through pair i % sessions: one table of arrival times per direction.
        at_agents: dict[int, int] = _Merged([pair[2] for pair in pairs])
        at_tabs: dict[int, int] = _Merged([pair[3] for pair in pairs])
        cpu = (cpu_seconds(node_a.pid), cpu_seconds(node_b.pid), time.process_time())
        to_agent = await measure(trackers, "TRACKER_TICK", at_agents, events, rate)
        to_tab = await measure(agents, "AGENT_TICK", at_tabs, events, rate)
        used = (cpu_seconds(node_a.pid), cpu_seconds(node_b.pid), time.process_time())
        return {
            "sessions": sessions,
            "events": events,
            "target_rate_per_s": rate,
            "tracker_on_A_to_agent_on_B": to_agent,
            "agent_on_B_to_tab_on_A": to_tab,
            "cpu_seconds": {
                name: round(after - before, 2)
                for name, before, after in zip(
                    ("node_a", "node_b", "clients"), cpu, used, strict=True
                )
            },
        }
    finally:
        for client in clients:
            if client.connected:
                await client.disconnect()
        await stop_node(node_a)
        await stop_node(node_b)


class _Merged(dict[int, int]):
    """A read view over several tables with disjoint keys."""

    def __init__(self, tables: list[dict[int, int]]) -> None:
        super().__init__()
        self._tables = tables

    def __len__(self) -> int:
        return sum(len(t) for t in self._tables)

    def __contains__(self, key: object) -> bool:
        return any(key in t for t in self._tables)

    def __getitem__(self, key: int) -> int:
        for table in self._tables:
            if key in table:
                return table[key]
        raise KeyError(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("LIVEHUB_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
    )
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=1000.0, help="events a second, in all")
    parser.add_argument(
        "--sessions", type=int, default=10, help="tracker/agent pairs the rate is spread over"
    )
    args = parser.parse_args()
    result = asyncio.run(run(args.redis_url, args.events, args.rate, args.sessions))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
