"""What every scenario needs: the run's configuration, hub processes, load processes, stores.

The load never runs in the process that is measured: each ``livehub serve`` is its own process
(:class:`HubNode`), and so is each load generator (:class:`Worker`, ``python -m bench.worker``).
This process only starts them, hands out commands and collects numbers.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import redis.asyncio as aioredis

from bench.profile import Profiler
from hub.settings import Settings
from hub.store import open_store

ROOT = Path(__file__).resolve().parent.parent
Mode = Literal["quick", "full"]


class NotRun(Exception):
    """A scenario that cannot run here (a missing part): reported as not run, with why."""


@dataclass(frozen=True)
class Config:
    """One invocation of the harness."""

    mode: Mode
    redis_db: int
    postgres_url: str
    workdir: Path  # temporary: SQLite files, logs
    cache_dir: Path  # kept between runs: filled databases
    runs: int
    profile: bool = False  # py-spy on every hub node (bench/profile.py)
    # (node name, summary) of each profiled node, in the order they stopped.
    profiles: list[tuple[str, str]] = field(default_factory=list)

    @property
    def quick(self) -> bool:
        return self.mode == "quick"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:6379/{self.redis_db}"

    def sqlite_url(self, name: str) -> str:
        return f"sqlite:///{self.workdir / name}"

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def flush_redis(config: Config) -> None:
    """Empty the harness's own Redis database (never any other)."""
    client = aioredis.from_url(config.redis_url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


async def ensure_postgres_database(url: str) -> None:
    """Create the database of ``url`` when it does not exist (connecting to ``postgres``)."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    conn = await asyncpg.connect(admin)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def reset_postgres(url: str) -> None:
    """Drop and recreate the public schema of the harness's database."""
    await ensure_postgres_database(url)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()


@dataclass(frozen=True)
class Credentials:
    project_id: int
    project_key: str
    api_key: str


async def make_project(database_url: str, name: str = "bench") -> Credentials:
    """A project and an organization API key, made through the store classes."""
    store = open_store(Settings(database_url=database_url))
    await store.open()
    try:
        project = await store.create_project(name)
        key = await store.create_key(None, "bench")
    finally:
        await store.close()
    return Credentials(project.project_id, project.project_key, key.secret)


@dataclass
class HubNode:
    """One ``livehub serve`` process, configured by ``HUB_*`` variables."""

    name: str
    env: dict[str, str]
    config: Config
    port: int = field(default_factory=free_port)
    proc: asyncio.subprocess.Process | None = None
    profiler: Profiler | None = None
    # What runs: ``livehub serve`` unless a scenario measures something else (a bare server).
    command: tuple[str, ...] = ("-m", "hub", "serve")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 120.0) -> None:
        env = {
            **os.environ,
            "HUB_LOG_LEVEL": "warning",
            **self.env,
            "HUB_HOST": "127.0.0.1",
            "HUB_PORT": str(self.port),
            "HUB_NODE_ID": self.name,
        }
        with self.config.log(self.name).open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, *self.command, cwd=ROOT, env=env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"{self.name} exited: {self.log_tail()}")
                try:
                    async with http.get(self.url + "/health") as r:
                        if r.status == 200:
                            await self._profile()
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.name} did not answer /health: {self.log_tail()}")

    async def _profile(self) -> None:
        if self.config.profile and self.proc is not None:
            output = self.config.cache_dir / "profiles" / f"{self.name}.txt"
            self.profiler = Profiler(self.proc.pid, output)
            await self.profiler.start()

    async def _stop_profile(self) -> None:
        if self.profiler is not None:
            profiler, self.profiler = self.profiler, None
            self.config.profiles.append((self.name, await profiler.stop()))

    def log_tail(self) -> str:
        return self.config.log(self.name).read_text(errors="replace")[-3000:]

    def rss_kb(self) -> int:
        """Resident memory of the process, from /proc (KiB)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        """User + system CPU time the process used so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def kill(self) -> None:
        """SIGKILL: for nodes whose shutdown (storing every session) is not measured."""
        await self._stop_profile()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def stop(self, timeout: float = 30.0) -> int:
        await self._stop_profile()
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc and self.proc.returncode is not None else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            return await self.proc.wait()


class Worker:
    """A load process: ``python -m bench.worker MODULE:FUNCTION PARAMS``.

    The function talks JSON lines: it reports with ``ctl.report(name, ...)`` and waits for this
    side's ``send(name)``; its return value is the final report ``result``.
    """

    def __init__(self, config: Config, name: str, target: str, **params: Any) -> None:
        self.config = config
        self.name = name
        self.target = target
        self.params = params
        self.proc: asyncio.subprocess.Process | None = None
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._arrived = asyncio.Condition()
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> Worker:
        with self.config.log(self.name).open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.worker",
                self.target,
                json.dumps(self.params),
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                limit=2**26,
            )
        self._pump = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            message = json.loads(line)
            async with self._arrived:
                self._pending.setdefault(message.pop("report"), []).append(message)
                self._arrived.notify_all()
        async with self._arrived:
            self._pending.setdefault("exit", []).append({})
            self._arrived.notify_all()

    async def wait_for(self, name: str, timeout: float = 600.0) -> dict[str, Any]:
        """The next report ``name``; an error when the worker exits or fails first."""
        async with asyncio.timeout(timeout), self._arrived:
            while True:
                if self._pending.get(name):
                    return self._pending[name].pop(0)
                if self._pending.get("error"):
                    raise RuntimeError(f"worker {self.name}: {self._pending['error'][0]}")
                if self._pending.get("exit"):
                    tail = self.config.log(self.name).read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"worker {self.name} exited before {name!r}: {tail}")
                await self._arrived.wait()

    async def send(self, name: str, **data: Any) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"command": name, **data}) + "\n").encode())
        await self.proc.stdin.drain()

    async def result(self, timeout: float = 600.0) -> dict[str, Any]:
        result = await self.wait_for("result", timeout)
        await self.close()
        return result

    async def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            if self.proc.stdin is not None and not self.proc.stdin.is_closing():
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._pump is not None:
            await self._pump


async def run_worker(config: Config, name: str, target: str, **params: Any) -> dict[str, Any]:
    """Run a load function in its own process to the end; its result."""
    worker = await Worker(config, name, target, **params).start()
    try:
        return await worker.result()
    finally:
        await worker.close()


async def get_json(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> Any:
    async with http.get(url, **kwargs) as r:
        r.raise_for_status()
        return await r.json()
