"""Shared fixtures: real Redis, real PostgreSQL, real hub applications and Socket.IO clients.

Redis is the server on 127.0.0.1:6379 (``LIVEHUB_TEST_REDIS_URL``), database 15, flushed for each
test that uses it. PostgreSQL is ``LIVEHUB_TEST_POSTGRES_URL``; its ``public`` schema is dropped and
made again for each test that uses it. ``scripts/test.sh`` starts both when they are down.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import socketio
from aiohttp import web
from aiohttp.test_utils import TestClient

from hub.settings import Limits, Settings
from hub.store.base import NewKey, Project
from hub.typedefs import STORE
from tests.openapi_validation import OpenApiValidator, validate_responses

REDIS_URL = os.environ.get("LIVEHUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get(
    "LIVEHUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/livehub_test"
)
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """A flushed Redis database on the test server."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL)
    await client.flushdb()
    await client.aclose()
    yield REDIS_URL
    client = aioredis.from_url(REDIS_URL)
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """An empty PostgreSQL schema on the test server."""
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()
    yield POSTGRES_URL


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'livehub.db'}"


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(sqlite_url: str) -> SettingsFactory:
    """Settings for a test node: a temporary SQLite store, no Redis, fast timers.

    Keyword arguments override fields; ``limits`` may be a dict of Limits fields.
    """

    def make(**overrides: Any) -> Settings:
        limits = overrides.pop("limits", {})
        base = Settings(
            database_url=sqlite_url,
            session_grace=1.0,
            ping_interval=5.0,
            ping_timeout=5.0,
            node_timeout=3.0,
        )
        if isinstance(limits, dict):
            limits = dataclasses.replace(Limits(), **limits)
        settings = dataclasses.replace(base, limits=limits, **overrides)
        settings.validate()
        return settings

    return make


@dataclasses.dataclass
class Hub:
    """A running test node: its REST client, its base URL and the app."""

    client: TestClient[web.Request, web.Application]
    app: web.Application
    settings: Settings

    @property
    def url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    async def project(self, name: str = "shop") -> Project:
        return await self.app[STORE].create_project(name)

    async def key(self, project_id: int | None = None, name: str = "test") -> NewKey:
        return await self.app[STORE].create_key(project_id, name)


HubFactory = Callable[..., Awaitable[Hub]]


@pytest.fixture(scope="session")
def openapi_validator() -> OpenApiValidator:
    """The OpenAPI document of the REST API, as a checker of responses."""
    return OpenApiValidator()


@pytest.fixture
async def make_hub(
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
    make_settings: SettingsFactory,
    openapi_validator: OpenApiValidator,
) -> HubFactory:
    """Start a hub application on a free port, with settings overridden by keyword.

    Every response its ``client`` gets is held to the OpenAPI document
    (tests/openapi_validation.py).
    """

    from hub.app import create_app

    async def make(**overrides: Any) -> Hub:
        settings = make_settings(**overrides)
        app = create_app(settings)
        client = await aiohttp_client(app)
        validate_responses(client, openapi_validator)
        return Hub(client=client, app=app, settings=settings)

    return make


@pytest.fixture
async def hub(make_hub: HubFactory) -> Hub:
    """A hub on the in-process registry and a SQLite store."""
    return await make_hub()


ClientFactory = Callable[..., Awaitable[socketio.AsyncClient]]


@pytest.fixture
async def sio_connect() -> AsyncIterator[ClientFactory]:
    """Connect real ``socketio.AsyncClient``s; each is disconnected at the end of the test.

    ``await sio_connect(hub.url, query={...}, auth=..., namespaces=[...], headers=...,
    transports=[...], handlers={"EVENT": callback})``. Raises socketio.exceptions.ConnectionError
    when the server refuses.
    """
    clients: list[socketio.AsyncClient] = []

    async def connect(
        url: str,
        *,
        query: dict[str, str] | None = None,
        auth: Any = None,
        namespaces: list[str] | None = None,
        headers: dict[str, str] | None = None,
        transports: list[str] | None = None,
        path: str = "/ws-assist/socket",
        handlers: dict[str, Callable[..., Any]] | None = None,
        serializer: str = "default",
        wait_timeout: float = 5,
    ) -> socketio.AsyncClient:
        from urllib.parse import urlencode

        client = socketio.AsyncClient(reconnection=False, serializer=serializer)
        for event, handler in (handlers or {}).items():
            for ns in namespaces or ["/"]:
                client.on(event, handler, namespace=ns)
        clients.append(client)
        target = url + ("?" + urlencode(query) if query else "")
        await client.connect(
            target,
            auth=auth,
            namespaces=namespaces,
            headers=headers or {},
            transports=transports or ["websocket"],
            socketio_path=path,
            wait_timeout=wait_timeout,
        )
        return client

    yield connect
    for client in clients:
        if client.connected:
            await client.disconnect()
