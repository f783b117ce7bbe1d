"""/health and /ready (SPEC §5.3): on a real hub, and with checks that fail or hang."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from api import ops
from api.errors import error_middleware
from hub.errors import RegistryUnavailable, StoreUnavailable
from hub.registry.base import PresenceRegistry
from hub.store.base import SessionStore
from hub.typedefs import REGISTRY, STORE
from tests.conftest import Hub

ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


async def test_health(hub: Hub) -> None:
    response = await hub.client.get("/health")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_ready_when_registry_and_store_answer(hub: Hub) -> None:
    response = await hub.client.get("/ready")
    assert response.status == 200
    assert await response.json() == {
        "status": "ready",
        "checks": {"registry": "ok", "store": "ok"},
    }


async def test_health_and_ready_need_no_key_and_only_get(hub: Hub) -> None:
    assert (await hub.client.head("/health")).status == 200
    response = await hub.client.post("/ready")
    assert response.status == 405
    assert await response.json() == {"error": "method not allowed"}


async def test_not_ready_when_the_store_fails(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken() -> None:
        raise StoreUnavailable("database is locked")

    monkeypatch.setattr(hub.app[STORE], "check", broken)
    response = await hub.client.get("/ready")
    assert response.status == 503
    assert await response.json() == {
        "status": "unavailable",
        "error": "store unavailable",
        "checks": {"registry": "ok", "store": "unavailable"},
    }
    # /health is about the process, not its backends.
    assert (await hub.client.get("/health")).status == 200


async def test_not_ready_when_the_registry_fails_unexpectedly(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken() -> None:
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(hub.app[REGISTRY], "check", broken)
    response = await hub.client.get("/ready")
    assert response.status == 503
    body = await response.json()
    assert body["error"] == "registry unavailable"
    assert "reset" not in str(body)  # the reason goes to the log, not to the prober


async def test_a_hanging_check_does_not_hang_ready(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    released = asyncio.Event()

    async def hangs() -> None:
        await released.wait()

    monkeypatch.setattr(hub.app[REGISTRY], "check", hangs)
    monkeypatch.setattr(ops, "READY_TIMEOUT", 0.2)
    started = time.monotonic()
    response = await hub.client.get("/ready")
    assert time.monotonic() - started < 2
    assert response.status == 503
    assert (await response.json())["error"] == "registry unavailable"


class FakeBackend:
    """A registry or store whose check does what the test says."""

    def __init__(self, error: Exception | None = None, *, hang: bool = False) -> None:
        self.error = error
        self.hang = hang
        self.calls = 0
        self.task: asyncio.Task[object] | None = None

    async def check(self) -> None:
        self.calls += 1
        self.task = asyncio.current_task()
        if self.hang:
            # Ignores cancellation, like a driver stuck in a blocking call.
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    if self.hang:
                        continue
                    raise
        if self.error is not None:
            raise self.error


async def ops_client(
    aiohttp_client: ClientFactory, registry: FakeBackend | None, store: FakeBackend | None
) -> TestClient[web.Request, web.Application]:
    app = web.Application(middlewares=[error_middleware])
    app.router.add_routes(ops.routes)
    if registry is not None:
        app[REGISTRY] = cast(PresenceRegistry, registry)
    if store is not None:
        app[STORE] = cast(SessionStore, store)
    return await aiohttp_client(app)


@pytest.mark.parametrize(
    ("registry", "store", "error"),
    [
        (FakeBackend(RegistryUnavailable("redis down")), FakeBackend(), "registry unavailable"),
        (FakeBackend(), FakeBackend(OSError("disk")), "store unavailable"),
        (
            FakeBackend(RegistryUnavailable("x")),
            FakeBackend(StoreUnavailable("y")),
            "registry and store unavailable",
        ),
        (None, FakeBackend(), "registry unavailable"),  # the node is starting or stopping
        (None, None, "registry and store unavailable"),
    ],
)
async def test_ready_names_what_fails(
    aiohttp_client: ClientFactory,
    registry: FakeBackend | None,
    store: FakeBackend | None,
    error: str,
) -> None:
    client = await ops_client(aiohttp_client, registry, store)
    response = await client.get("/ready")
    assert response.status == 503
    body = await response.json()
    assert body["status"] == "unavailable"
    assert body["error"] == error


async def test_ready_with_fakes_that_answer(aiohttp_client: ClientFactory) -> None:
    registry, store = FakeBackend(), FakeBackend()
    client = await ops_client(aiohttp_client, registry, store)
    response = await client.get("/ready")
    assert response.status == 200
    assert (registry.calls, store.calls) == (1, 1)


async def test_a_check_that_ignores_cancellation_is_abandoned() -> None:
    stuck = FakeBackend(hang=True)
    started = time.monotonic()
    response = await ops.readiness({"registry": stuck.check, "store": None}, seconds=0.1)
    assert time.monotonic() - started < 1
    assert response.status == 503
    # The abandoned check was cancelled once and is still running; end it so that the test
    # leaves no task behind.
    assert stuck.task is not None
    assert not stuck.task.done()
    stuck.hang = False
    stuck.task.cancel()
    await asyncio.wait([stuck.task])
    assert stuck.task.cancelled()
