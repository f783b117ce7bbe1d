"""Pieces the scenarios share: realistic trackers, timing helpers."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from bench.loadgen import EventHandler, SioClient

USER_AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36",
)
PLANS = ("free", "trial", "pro", "enterprise")


def now_ns() -> int:
    """CLOCK_MONOTONIC in ns: one clock for every process of the machine."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def session_info(i: int, rng: random.Random) -> str:
    """A tracker's sessionInfo of typical size (about 300 bytes)."""
    return json.dumps(
        {
            "pageTitle": f"Product page {rng.randrange(500)}",
            "userID": f"user{i}@example.com",
            "userUUID": f"{rng.getrandbits(128):032x}",
            "revID": "rev-42",
            "trackerVersion": "16.0.1",
            "timestamp": 1_700_000_000_000 + i,
            "metadata": {"plan": rng.choice(PLANS), "team": f"t{rng.randrange(50)}"},
        },
        separators=(",", ":"),
    )


def tracker(
    http: aiohttp.ClientSession,
    url: str,
    project_key: str,
    i: int,
    *,
    prefix: str = "s",
    serializer: str = "json",
    handler: EventHandler | None = None,
    rng: random.Random | None = None,
) -> SioClient:
    """A load client that connects as tracker ``i`` (session ``<prefix><i>``, tab ``t``)."""
    rng = rng or random.Random(i)
    return SioClient(
        http,
        url,
        query={
            "identity": "session",
            "peerId": f"{project_key}-{prefix}{i}-t",
            "sessionInfo": session_info(i, rng),
        },
        serializer=serializer,
        handler=handler,
        headers={"User-Agent": USER_AGENTS[i % len(USER_AGENTS)]},
    )


async def timed_calls(call: Callable[[], Awaitable[Any]], count: int) -> list[float]:
    """Milliseconds of ``count`` sequential calls."""
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - start) * 1000)
    return samples
