"""Delivery latency of the live feed (SPEC §4.5) under fan-out: N subscribers, U updates a second.

Run: ``.venv/bin/python -m bench.livefeed_fanout [--subscribers 200,1000] [--rate 100]
[--seconds 10] [--groups 1] [--redis-url redis://127.0.0.1:6379/14]``. Not a test: the numbers
go to the report and docs. With ``--redis-url`` the node uses the Redis registry and that database
is FLUSHED before each run.

Per count of subscribers it starts one ``livehub serve`` process (a fresh SQLite file), connects
``--trackers`` trackers and the subscribers to ``/live`` from this process (bench/loadgen.py's
light client over one websocket each), spread over ``--groups`` distinct filters that every
tracker's session matches (1: every subscriber in one group, the benchmark's P9 case; N: one group
each, the worst case). The trackers then send ``UPDATE_SESSION {"metadata": {"seq": i}}`` at
``--rate`` a second in total, and each subscriber times every ``SESSION_UPDATED`` from the send
call to its arrival, on this process's monotonic clock, so the latency includes this process's
own work of reading N x rate messages a second. Prints one JSON object per count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from bench.loadgen import (
    ConnectError,
    SioClient,
    client_session,
    close_all,
    connect_all,
    decode_text,
)
from bench.relay_latency import cpu_seconds, paced, start_node, stop_node, summary
from hub.settings import Settings
from hub.store import open_store

WARMUP_SECONDS = 2.0
_UPDATED_PREFIX = '42/live,["SESSION_UPDATED",'
_SEQ = '"seq":"'


class FeedReader(SioClient):
    """A subscriber that reads only the ``seq`` of each SESSION_UPDATED, without decoding it.

    With a thousand subscribers this process reads 100,000 messages a second; decoding each
    record as JSON would make the load generator, not the hub, the bottleneck measured.
    """

    def __init__(self, *args: Any, on_seq: Callable[[int], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_seq = on_seq

    async def _read(self) -> None:
        ws = self._ws
        assert ws is not None
        receive, on_seq, pong = ws.receive, self._on_seq, ws.send_str
        try:
            while True:
                msg = await receive()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                text: str = msg.data
                if text.startswith(_UPDATED_PREFIX):
                    start = text.index(_SEQ, len(_UPDATED_PREFIX)) + len(_SEQ)
                    on_seq(int(text[start : text.index('"', start)]))
                elif text == "2":
                    await pong("3")
                elif text.startswith("4"):
                    await self._packet(*decode_text(text[1:]))
                elif text.startswith("0"):
                    await self._opened(json.loads(text[1:]))
                else:
                    break
        finally:
            self.connected = False
            self._fail(ConnectError("closed"))


async def run(
    subscribers: int, trackers: int, rate: float, seconds: float, groups: int, redis_url: str
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="livehub-fanout-"))
    database_url = f"sqlite:///{workdir / 'hub.db'}"
    store = open_store(Settings(database_url=database_url))
    await store.open()
    project = await store.create_project("bench")
    key = await store.create_key(project.project_id, "bench")
    await store.close()
    env = {"HUB_DATABASE_URL": database_url}
    if redis_url:
        client = aioredis.from_url(redis_url)
        await client.flushdb()
        await client.aclose()
        env["HUB_REDIS_URL"] = redis_url
    node, url = await start_node("fanout", env, workdir / "node.log")

    sent_at: dict[int, int] = {}
    latencies: list[int] = []
    snapshots = 0
    last_arrival = 0
    measuring_from = sys.maxsize  # the first seq that counts (set after the warm-up)
    expected = subscribers * int(seconds * rate)
    all_subscribed, all_delivered = asyncio.Event(), asyncio.Event()

    def on_seq(seq: int) -> None:
        nonlocal last_arrival
        if seq >= measuring_from:
            last_arrival = time.perf_counter_ns()
            latencies.append(last_arrival - sent_at[seq])
            if len(latencies) >= expected:
                all_delivered.set()

    def on_event(event: str, args: list[Any]) -> None:
        nonlocal snapshots
        if event == "SESSIONS":
            snapshots += 1
            if snapshots == subscribers:
                all_subscribed.set()

    async with client_session() as http:
        tabs = [
            SioClient(
                http,
                url,
                query={"identity": "session", "peerId": f"{project.project_key}-bench{n}"},
            )
            for n in range(trackers)
        ]
        feeds = [
            FeedReader(
                http,
                url,
                namespace="/live",
                auth={
                    "apiKey": key.secret,
                    "projectKey": project.project_key,
                    "filters": group_filters(n % groups),
                },
                handler=on_event,
                on_seq=on_seq,
            )
            for n in range(subscribers)
        ]
        try:
            for failed in await connect_all([*tabs, *feeds], timeout=60):
                if failed is not None:
                    raise failed
            await asyncio.wait_for(all_subscribed.wait(), 60)

            async def send(i: int) -> None:
                sent_at[i] = time.perf_counter_ns()
                await tabs[i % trackers].emit("UPDATE_SESSION", {"metadata": {"seq": str(i)}})

            warmup = int(WARMUP_SECONDS * rate)
            count = int(seconds * rate)
            await paced(send, warmup, rate)
            measuring_from = warmup
            cpu = (cpu_seconds(node.pid), time.process_time())
            took = await paced(send, count, rate, start_at=warmup)
            with contextlib.suppress(TimeoutError):  # what did not arrive shows in the counts
                await asyncio.wait_for(all_delivered.wait(), 30)
            used = (cpu_seconds(node.pid), time.process_time())
            result = summary(latencies, count, took)
            result.update(
                subscribers=subscribers,
                groups=groups,
                registry="redis" if redis_url else "memory",
                deliveries_expected=expected,
                deliveries_per_s=round(len(latencies) / took),
                # CPU from the first measured send to the last delivery, per second of sending.
                server_cpu_percent=round(100 * (used[0] - cpu[0]) / took),
                load_cpu_percent=round(100 * (used[1] - cpu[1]) / took),
                last_delivery_after_last_send_ms=round(
                    (last_arrival - sent_at[warmup + count - 1]) / 1e6, 1
                ),
            )
            return result
        finally:
            await close_all([*tabs, *feeds])
            await stop_node(node)


def group_filters(group: int) -> list[dict[str, Any]]:
    """Filters that every tracker's session matches, distinct for each group number."""
    filters: list[dict[str, Any]] = [{"type": "SESSIONID", "value": ["bench"]}]
    if group:  # the sessions' userID is empty: it is never "nobody<n>"
        filters.append({"type": "USERID", "value": [f"nobody{group}"], "operator": "isNot"})
    return filters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--subscribers", default="200,1000", help="comma-separated counts")
    parser.add_argument("--trackers", type=int, default=20)
    parser.add_argument("--rate", type=float, default=100.0, help="updates a second, in total")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--groups", type=int, default=1, help="distinct filters among subscribers")
    parser.add_argument("--redis-url", default=os.environ.get("LIVEHUB_BENCH_REDIS_URL", ""))
    args = parser.parse_args()
    for count in (int(n) for n in args.subscribers.split(",")):
        result = asyncio.run(
            run(count, args.trackers, args.rate, args.seconds, args.groups, args.redis_url)
        )
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
