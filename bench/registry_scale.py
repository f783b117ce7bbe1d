"""Benchmark of the Redis registry: Assist queries at 1,000 and 100,000 live sessions.

Run: ``.venv/bin/python bench/registry_scale.py --redis-url redis://127.0.0.1:6379/14
[--sizes 1000,100000] [--repeat 200]``. The Redis database given is FLUSHED before and after.
Not a test: the numbers go to docs/registry.md.

Per size it registers the sessions through the registry's own join script (pipelined: the bench's
bulk path), lets node A's replica catch up with the change stream, starts a second node B (a full
load of the replica from the session hashes), then times on node B, as a REST handler would call
them: the GET list (newest first, 200 a page), a filtered query, a query right after a write made
on node A (read-your-writes across nodes), and an autocomplete. Each read includes the catch-up
round trip to Redis. Prints p50 and p99 in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from hub import constants as c
from hub.records import Record, blank_record
from hub.registry.base import EndedSession, Filter, SessionQuery
from hub.registry.merge import dumps_compact
from hub.registry.redis import RedisRegistry
from hub.registry.redis_local import info_size
from hub.settings import Settings

PROJECT_KEY = "aYYaFHiagqdXKEmVlmvJ"
OSES = ["Mac OS", "Windows", "Linux", "iOS", "Android", "Chrome OS"]
BROWSERS = ["Chrome", "Firefox", "Safari", "Edge", "Opera"]
PLANS = ["free", "trial", "pro", "enterprise"]
WORDS = ["ann", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
BATCH = 1000

LIST = SessionQuery()
FILTERED = SessionQuery(
    filters=(
        Filter("userOs", ("mac",)),
        Filter("metadata", ("trial", "pro"), "is", "plan"),
    )
)


def make_record(rng: random.Random, i: int) -> Record:
    record = blank_record(PROJECT_KEY, 1, f"{7_000_000_000_000_000 + i}", 1_700_000_000_000 + i)
    record.update(
        pageTitle=f"{rng.choice(WORDS).title()}'s page {rng.randrange(500)}",
        userID=f"{rng.choice(WORDS)}{rng.randrange(100_000)}@example.com",
        userOs=rng.choice(OSES),
        userBrowser=rng.choice(BROWSERS),
        userDeviceType=rng.choice(["desktop", "mobile", "tablet"]),
        metadata={"plan": rng.choice(PLANS), "team": f"t{rng.randrange(50)}"},
    )
    return record


async def register(registry: RedisRegistry, redis: aioredis.Redis, count: int) -> None:
    """Register ``count`` sessions, one tab each, through the join script in pipelines."""
    rng = random.Random(count)
    now = int(time.time() * 1000)
    for start in range(0, count, BATCH):
        pipe = redis.pipeline(transaction=False)
        for i in range(start, min(start + BATCH, count)):
            record = make_record(rng, i)
            sid = record["sessionID"]
            args: list[str | int] = [
                c.session_tag(PROJECT_KEY, sid),
                "tab",
                registry.node_id,
                dumps_compact(record),
                PROJECT_KEY,
                sid,
                info_size(record),
                now,
                "0",
            ]
            await registry._scripts.join(args=args, client=pipe)
        await pipe.execute()


async def timed(call: Callable[[], Awaitable[object]], repeat: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


async def run_size(url: str, count: int, repeat: int) -> None:
    redis = aioredis.from_url(url, decode_responses=True)
    await redis.flushdb()

    async def sink(ended: EndedSession) -> None:
        return None

    def settings(node: str) -> Settings:
        return Settings(redis_url=url, node_id=node, session_grace=3600, node_timeout=60)

    a = RedisRegistry(settings("bench-a"), sink)
    await a.start()
    start = time.perf_counter()
    await register(a, redis, count)
    registered = time.perf_counter() - start
    start = time.perf_counter()
    total = (await a.query(PROJECT_KEY, LIST)).total
    caught_up = time.perf_counter() - start
    assert total == count, (total, count)
    start = time.perf_counter()
    b = RedisRegistry(settings("bench-b"), sink)
    await b.start()
    loaded = time.perf_counter() - start

    print(f"\n{count:,} live sessions in one project")
    print(f"  register (pipelined join scripts)     {registered:8.2f} s")
    print(f"  node A catches up with the stream     {caught_up * 1000:8.1f} ms")
    print(f"  node B starts (full replica load)     {loaded * 1000:8.1f} ms")
    memory = (await redis.info("memory"))["used_memory"] / 2**20
    stream = await redis.xlen(c.CHANGES_STREAM)
    print(f"  Redis memory (stream: {stream:,} entries) {memory:8.1f} MiB")
    matches = (await b.query(PROJECT_KEY, FILTERED)).total
    tick = [0]

    async def write_then_read() -> None:
        tick[0] += 1
        await a.update(PROJECT_KEY, f"{7_000_000_000_000_000}", {"pageTitle": f"p{tick[0]}"})
        record = await b.get(PROJECT_KEY, f"{7_000_000_000_000_000}")
        assert record is not None and record["pageTitle"] == f"p{tick[0]}"

    cases: dict[str, Callable[[], Awaitable[object]]] = {
        "GET list (newest first, 200)": lambda: b.query(PROJECT_KEY, LIST),
        f"filtered: os~mac AND plan in (trial,pro) [{matches:,} hits]": lambda: b.query(
            PROJECT_KEY, FILTERED
        ),
        "autocomplete userOs 'o'": lambda: b.autocomplete(PROJECT_KEY, "userOs", "o", 10),
        "update on A, then get on B": write_then_read,
    }
    print(f"  {'operation (on node B)':<52} {'p50 ms':>8} {'p99 ms':>8}")
    for name, call in cases.items():
        p50, p99 = await timed(call, repeat)
        print(f"  {name:<52} {p50:8.2f} {p99:8.2f}")
    await b.close()
    await a.close()
    await redis.flushdb()
    await redis.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True, help="a Redis database to FLUSH and use")
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        await run_size(args.redis_url, size, args.repeat)


if __name__ == "__main__":
    asyncio.run(main())
