"""Fixtures of the registry tests: every contract test runs against memory and Redis."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from hub.records import Record, blank_record
from hub.registry import create_registry
from hub.registry.base import Change, EndedSession, PresenceRegistry
from hub.settings import Settings

if TYPE_CHECKING:
    from tests.hub.registry.test_redis_cluster import Cluster

PROJECT_KEY = "aYYaFHiagqdXKEmVlmvJ"
OTHER_KEY = "bZZbGIjbhreYLFnWmnwK"
WAIT = 10.0  # seconds a test waits for something the registry owes; long, so never flaky


def make_record(
    session_id: str,
    *,
    project_key: str = PROJECT_KEY,
    project_id: int = 3,
    timestamp: int = 1_656_437_966_459,
    **fields: Any,
) -> Record:
    """A live-session record with every field at its default but those given."""
    record = blank_record(project_key, project_id, session_id, timestamp)
    record.update(fields)
    return record


@dataclass
class RecordingSink:
    """An ended-session sink that records what it got and can be told to fail."""

    ended: list[EndedSession] = field(default_factory=list)
    calls: int = 0
    fail_next: int = 0  # this many calls raise before one succeeds
    fail_always: bool = False
    refuse_once: set[str] = field(default_factory=set)  # session ids whose next call raises
    in_flight: int = 0
    most_at_once: int = 0  # the most calls that were on their way together
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def __call__(self, ended: EndedSession) -> None:
        self.in_flight += 1
        self.most_at_once = max(self.most_at_once, self.in_flight)
        try:
            await asyncio.sleep(0)  # as a store would: the others handed with it arrive meanwhile
            async with self._changed:
                self.calls += 1
                self._changed.notify_all()
                if ended.session_id in self.refuse_once:
                    self.refuse_once.discard(ended.session_id)
                    raise ConnectionError(f"the store refused {ended.session_id}")
                if self.fail_always or self.fail_next > 0:
                    self.fail_next = max(self.fail_next - 1, 0)
                    raise ConnectionError("the store is down")
                self.ended.append(ended)
        finally:
            self.in_flight -= 1

    async def wait_for(self, count: int, *, calls: int = 0) -> list[EndedSession]:
        """Wait until ``count`` sessions were stored and at least ``calls`` calls were made."""
        async with asyncio.timeout(WAIT), self._changed:
            await self._changed.wait_for(lambda: len(self.ended) >= count and self.calls >= calls)
        return list(self.ended)


@dataclass
class ChangeLog:
    """A registry listener that keeps every change and lets a test await them."""

    changes: list[Change] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, change: Change) -> None:
        self.changes.append(change)
        self._changed.set()

    def kinds(self, session_id: str | None = None) -> list[str]:
        return [c.kind for c in self.changes if session_id in (None, c.session_id)]

    async def wait_for(self, count: int) -> list[Change]:
        """Wait until at least ``count`` changes arrived (listeners may be called later)."""
        async with asyncio.timeout(WAIT):
            while len(self.changes) < count:
                self._changed.clear()
                await self._changed.wait()
        return list(self.changes)


@dataclass
class Made:
    registry: PresenceRegistry
    sink: RecordingSink
    settings: Settings


RegistryFactory = Callable[..., Awaitable[Made]]


@pytest.fixture(params=["memory", "redis"])
def registry_settings(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> Callable[..., Settings]:
    """Settings of a registry under test, once per implementation."""
    if request.param == "memory":
        return make_settings
    if importlib.util.find_spec("hub.registry.redis") is None:
        # Until hub/registry/redis.py lands; then this param runs for real.
        pytest.xfail("hub.registry.redis does not exist yet")
    redis_url = str(request.getfixturevalue("redis_url"))

    def make(**overrides: Any) -> Settings:
        return make_settings(redis_url=redis_url, **overrides)

    return make


@pytest.fixture
async def make_registry(
    registry_settings: Callable[..., Settings],
) -> AsyncIterator[RegistryFactory]:
    """Start registries (Settings overrides by keyword; grace 0.2 s); all closed at the end."""
    made: list[PresenceRegistry] = []

    async def make(sink: RecordingSink | None = None, **overrides: Any) -> Made:
        settings = registry_settings(**{"session_grace": 0.2, **overrides})
        sink = sink if sink is not None else RecordingSink()
        registry = create_registry(settings, sink)
        await registry.start()
        made.append(registry)
        return Made(registry, sink, settings)

    yield make
    for registry in made:
        await registry.close()


@pytest.fixture
async def cluster(redis_url: str, make_settings: Callable[..., Settings]) -> AsyncIterator[Cluster]:
    """Nodes of one Redis-backed cluster, made on demand and closed after the test."""
    # Imported here: the cluster helpers' module imports this one.
    from tests.hub.registry.test_redis_cluster import Cluster

    made = Cluster(redis_url, make_settings)
    yield made
    await made.close()
