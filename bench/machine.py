"""The machine and software a run measured: cores, CPU, memory, versions, load."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sqlite3
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

PACKAGES = (
    "aiohttp",
    "python-socketio",
    "python-engineio",
    "redis",
    "asyncpg",
    "aiosqlite",
    "msgpack",
    "sortedcontainers",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


async def describe(redis_url: str, postgres_url: str) -> dict[str, str]:
    """Facts about this machine and the software under test, as label → text."""
    facts = {
        "nproc": str(os.cpu_count()),
        "CPU": cpu_model(),
        "memory": f"{memory_gib():.1f} GiB",
        "open-file limit": _nofile(),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
    }
    for name in PACKAGES:
        try:
            facts[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            facts[name] = "absent"
    client = aioredis.from_url(redis_url)
    try:
        facts["Redis server"] = str((await client.info("server"))["redis_version"])
    finally:
        await client.aclose()
    conn = await asyncpg.connect(postgres_url)
    try:
        facts["PostgreSQL server"] = str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()
    facts["SQLite"] = sqlite3.sqlite_version
    return facts


def _nofile() -> str:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return f"{soft} (hard {hard})"
