"""The presence registry: where live sessions are kept while they are live (see ``base``)."""

from __future__ import annotations

from hub.registry.base import EndedSink, PresenceRegistry
from hub.registry.memory import MemoryRegistry
from hub.settings import Settings


def create_registry(settings: Settings, sink: EndedSink) -> PresenceRegistry:
    """The in-process registry when ``settings.redis_url`` is unset, else the Redis one.

    ``sink`` receives every ended session, exactly once per end (it must be idempotent on
    ``EndedSession.end_id`` for the Redis registry, which may retry after a crash). Both
    registries call it for many sessions at once when many ended, so that the store can write
    them together.
    """
    if settings.redis_url is None:
        return MemoryRegistry(settings, sink)
    # Imported here so a node without Redis never loads the Redis client.
    from hub.registry.redis import RedisRegistry

    return RedisRegistry(settings, sink)
