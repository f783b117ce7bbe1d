"""The in-memory index of live-session records that answers every Assist query.

Both registries keep one: the in-process registry as its store of records, the Redis registry as
each node's replica of the shared set, kept current from the change stream. Queries never touch
Redis, so a list page costs the same whatever the size of the cluster.
"""

from __future__ import annotations

from collections.abc import Iterator

from hub.records import Record
from hub.registry.base import QueryResult, SessionQuery


class SessionIndex:
    """Records of live sessions per project, indexed for Assist queries."""

    def upsert(self, record: Record) -> None:
        """Add or replace the record of ``(record["projectKey"], record["sessionID"])``."""
        raise NotImplementedError

    def remove(self, project_key: str, session_id: str) -> Record | None:
        raise NotImplementedError

    def get(self, project_key: str, session_id: str) -> Record | None:
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError

    def query(self, project_key: str, query: SessionQuery) -> QueryResult:
        raise NotImplementedError

    def autocomplete(self, project_key: str, field: str, q: str, limit: int) -> list[str]:
        raise NotImplementedError

    def records(self) -> Iterator[Record]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError
