"""Real ``livehub serve`` processes for end-to-end tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import socketio

from tests.conftest import ROOT, free_port


@dataclass
class HubProcess:
    """One node started as ``python -m hub serve`` with settings given as environment."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 20.0) -> None:
        env = {**os.environ, **self.env, "HUB_PORT": str(self.port), "HUB_HOST": "127.0.0.1"}
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub", "serve"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"livehub serve exited: {self.log()}")
                try:
                    async with http.get(self.url + "/health") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise TimeoutError(f"livehub serve did not answer /health: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``sig`` and wait for the exit code (SIGKILL if it does not exit in time)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)


def run_cli(*args: str, env: dict[str, str]) -> dict[str, Any]:
    """Run a ``livehub`` management command; its stdout is one JSON object."""
    out = subprocess.run(
        [sys.executable, "-m", "hub", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


# -- helpers of the cluster, fault, nginx and msgpack tests ------------------------------------


async def wait_until(
    predicate: Callable[[], Awaitable[Any]], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll an async predicate until it returns something truthy; fail naming ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        await asyncio.sleep(interval)


def summarize_ms(samples: list[float]) -> str:
    """p50 / p95 / p99 / max of durations in seconds, written in milliseconds."""
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))] * 1000

    return (
        f"n={len(ordered)} p50={pct(0.5):.2f}ms p95={pct(0.95):.2f}ms "
        f"p99={pct(0.99):.2f}ms max={ordered[-1] * 1000:.2f}ms"
    )


@dataclass
class Rest:
    """The REST calls the end-to-end tests make, with one API key, against any node."""

    http: aiohttp.ClientSession
    key: str

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def live(self, base: str, project_key: str) -> dict[str, Any]:
        """``data`` of the live-session list (newest first, up to 1000)."""
        url = f"{base}/api/v1/{project_key}/assist/sessions?limit=1000"
        async with self.http.get(url, headers=self._auth) as r:
            assert r.status == 200, f"GET {url}: {r.status} {await r.text()}"
            data: dict[str, Any] = (await r.json())["data"]
        return data

    async def live_ids(self, base: str, project_key: str) -> set[str]:
        """The session ids a node lists now; an empty set while it cannot answer."""
        url = f"{base}/api/v1/{project_key}/assist/sessions?limit=1000"
        try:
            async with self.http.get(url, headers=self._auth) as r:
                if r.status != 200:
                    return set()
                data = (await r.json())["data"]
        except aiohttp.ClientError:
            return set()
        return {s["sessionID"] for s in data["sessions"]}

    async def session(self, base: str, project_key: str, session_id: str) -> dict[str, Any] | None:
        """One live record, or None on 404."""
        url = f"{base}/api/v1/{project_key}/assist/sessions/{session_id}"
        async with self.http.get(url, headers=self._auth) as r:
            if r.status == 404:
                return None
            assert r.status == 200, f"GET {url}: {r.status} {await r.text()}"
            record: dict[str, Any] = (await r.json())["data"]
        return record

    async def search(
        self, base: str, project_id: int, needle: str, limit: int = 50
    ) -> dict[str, Any]:
        """The stored-session search answer for ``needle``."""
        url = f"{base}/api/project/{project_id}/integration/api/session/search"
        body = {"search_string": needle, "limit": limit}
        async with self.http.post(url, json=body, headers=self._auth) as r:
            assert r.status == 200, f"POST {url}: {r.status} {await r.text()}"
            found: dict[str, Any] = await r.json()
        return found

    async def stored_total(self, base: str, project_id: int, needle: str) -> int:
        return int((await self.search(base, project_id, needle))["pagination"]["total"])


@dataclass
class RedisServer:
    """A ``redis-server`` of the test's own (never the shared one), to kill and restart empty."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, timeout: float = 10.0) -> None:
        """Start it empty (no RDB, no AOF) and wait for PING."""
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        self.workdir.mkdir(parents=True, exist_ok=True)
        with (self.workdir / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    "redis-server",
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(self.workdir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        client = aioredis.from_url(self.url)
        try:

            async def answers() -> bool:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {self.proc.returncode}")
                try:
                    return bool(await client.ping())
                except (RedisError, OSError):
                    return False

            await wait_until(answers, timeout, "redis-server answering PING")
        finally:
            await client.aclose()

    def kill(self) -> None:
        """SIGKILL: everything it held is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class FailoverTracker:
    """A tracker tab that, when its node drops it, connects to the next URL of its list.

    The same peerId and tabId each time, as a browser tab behind a load balancer would; a
    ``socketio.AsyncClient`` per connection, without its own reconnection (it would only retry
    the node that went away).
    """

    def __init__(
        self,
        urls: list[str],
        query: dict[str, str],
        delay: float = 0.05,
        transports: tuple[str, ...] = ("websocket",),
    ) -> None:
        self.urls = urls
        self.query = query
        self.delay = delay
        self.transports = list(transports)
        self.client: socketio.AsyncClient | None = None
        self.url: str | None = None
        self.events: list[tuple[str, Any]] = []
        self.connects = 0
        self.reconnected = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    async def connect(self, url: str | None = None, timeout: float = 5.0) -> None:
        """Connect to ``url`` (the first of the list by default)."""
        from urllib.parse import urlencode

        target = url or self.urls[0]
        client = socketio.AsyncClient(reconnection=False)
        for event in ("ERROR", "SESSION_ALREADY_CONNECTED"):
            client.on(event, self._recorder(event))
        client.on("disconnect", self._dropped)
        await client.connect(
            f"{target}?{urlencode(self.query)}",
            transports=self.transports,
            socketio_path="/ws-assist/socket",
            wait_timeout=timeout,
        )
        self.client, self.url = client, target
        self.connects += 1
        if self.connects > 1:
            self.reconnected.set()

    def _recorder(self, event: str) -> Callable[..., Awaitable[None]]:
        async def record(*args: Any) -> None:
            self.events.append((event, args[0] if args else None))

        return record

    async def _dropped(self, *reason: Any) -> None:
        if not self._closing:
            self._task = asyncio.get_running_loop().create_task(self._fail_over())

    async def _fail_over(self) -> None:
        assert self.url is not None
        # The next URL of the list; a single URL (a load balancer) is tried again.
        others = [u for u in self.urls if u != self.url] or self.urls
        for attempt in range(100):
            await asyncio.sleep(self.delay)
            try:
                await self.connect(others[attempt % len(others)])
                return
            except socketio.exceptions.ConnectionError:
                continue

    async def call(self, event: str, payload: Any, timeout: float = 5.0) -> Any:
        assert self.client is not None and self.client.connected, "tracker not connected"
        return await self.client.call(event, payload, timeout=timeout)

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self.client is not None and self.client.connected:
            await self.client.disconnect()


NGINX_SITE = ROOT / "deploy" / "nginx" / "livehub.conf"


def render_nginx(site: str, upstreams: dict[str, int], listen_port: int, workdir: Path) -> str:
    """A whole nginx.conf around ``deploy/nginx/livehub.conf`` for a test.

    Each ``server <name>:8080`` of the site becomes ``127.0.0.1:<port>`` of the node given for
    that name, ``listen 80`` becomes a free loopback port, and every path nginx writes is inside
    ``workdir``. The access log notes which node served each request's peerId.
    """
    import re

    names: set[str] = set()

    def upstream(match: re.Match[str]) -> str:
        names.add(match[1])
        return f"server 127.0.0.1:{upstreams[match[1]]}"

    site = re.sub(r"server\s+([A-Za-z0-9_-]+):8080", upstream, site)
    assert names == set(upstreams), f"the site names upstreams {names}, not {set(upstreams)}"
    site, listens = re.subn(r"listen\s+80\s*;", f"listen 127.0.0.1:{listen_port};", site)
    assert listens == 1, "the site must listen on port 80 exactly once"
    temp = "\n".join(
        f"    {kind}_temp_path {workdir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root nginx would run its workers as nobody, who cannot enter pytest's private tmp dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}worker_processes 1;\n"
        f"error_log {workdir / 'error.log'} warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"{temp}\n"
        "    log_format upstreams '$arg_peerId $upstream_addr $status';\n"
        f"    access_log {workdir / 'access.log'} upstreams;\n"
        f"{site}\n"
        "}\n"
    )


@dataclass
class NginxProcess:
    """``nginx -p <workdir> -c <conf>`` in the foreground, on a free port."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def conf(self) -> Path:
        return self.workdir / "nginx.conf"

    def _command(self, *extra: str) -> list[str]:
        pid = self.workdir / "nginx.pid"
        return [
            "nginx",
            "-p", str(self.workdir),
            "-c", str(self.conf),
            "-e", str(self.workdir / "error.log"),
            "-g", f"daemon off; pid {pid};",
            *extra,
        ]  # fmt: skip

    def write(self, upstreams: dict[str, int]) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        text = render_nginx(NGINX_SITE.read_text(), upstreams, self.port, self.workdir)
        self.conf.write_text(text)

    def test_config(self) -> subprocess.CompletedProcess[str]:
        """``nginx -t`` on the written configuration."""
        return subprocess.run(
            self._command("-t"), capture_output=True, text=True, timeout=30, check=False
        )

    async def start(self, timeout: float = 10.0) -> None:
        with (self.workdir / "stdout.log").open("ab") as log:
            self.proc = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT)

        async def listening() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.error_log()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                return False
            writer.close()
            await writer.wait_closed()
            return True

        await wait_until(listening, timeout, "nginx listening")

    def error_log(self) -> str:
        path = self.workdir / "error.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def access_log(self) -> list[str]:
        path = self.workdir / "access.log"
        return path.read_text().splitlines() if path.exists() else []

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Inbox:
    """Events a Python Socket.IO client received, by name, to await in order."""

    def __init__(self, *events: str) -> None:
        self._queues: dict[str, asyncio.Queue[tuple[Any, ...]]] = {
            e: asyncio.Queue() for e in events
        }

    def handlers(self) -> dict[str, Callable[..., Awaitable[None]]]:
        """For ``sio_connect(handlers=...)``."""

        def handler(event: str) -> Callable[..., Awaitable[None]]:
            async def put(*args: Any) -> None:
                self._queues[event].put_nowait(args)

            return put

        return {event: handler(event) for event in self._queues}

    async def get(self, event: str, timeout: float = 10.0) -> tuple[Any, ...]:
        """The arguments of the next ``event`` received."""
        try:
            return await asyncio.wait_for(self._queues[event].get(), timeout)
        except TimeoutError:
            raise AssertionError(f"no {event} within {timeout:g}s") from None

    def pending(self, event: str) -> int:
        return self._queues[event].qsize()


JS_DIR = ROOT / "tests" / "js"


class NodeScript:
    """A ``tests/js`` script run by Node.js: it prints JSON lines and takes commands on stdin."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.lines: list[dict[str, Any]] = []  # everything printed, in order
        self._unread: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, script: str, *args: str) -> NodeScript:
        import shutil

        node = shutil.which("node")
        assert node, "Node.js is needed for this test (scripts/test.sh installs the client)"
        assert (JS_DIR / "node_modules" / "socket.io-client").is_dir(), "run scripts/test.sh first"
        proc = await asyncio.create_subprocess_exec(
            node,
            str(JS_DIR / script),
            *args,
            cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(proc, script)

    async def expect(self, event: str, timeout: float = 10.0) -> dict[str, Any]:
        """The first line not taken yet whose ``event`` (or ``ack``) is ``event``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for line in self._unread:
                if event in (line.get("event"), line.get("ack")):
                    self._unread.remove(line)
                    return line
            assert self.proc.stdout is not None
            try:
                raw = await asyncio.wait_for(
                    self.proc.stdout.readline(), max(0.0, deadline - loop.time())
                )
            except TimeoutError:
                seen = [line.get("event") or line.get("ack") for line in self._unread]
                raise AssertionError(
                    f"{self.name}: no {event} within {timeout:g}s (unread: {seen})"
                ) from None
            assert raw, f"{self.name} exited early"
            line = json.loads(raw)
            self.lines.append(line)
            self._unread.append(line)

    async def send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        await self.proc.stdin.drain()

    async def close(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
