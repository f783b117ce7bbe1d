"""The presence registry interface: where live sessions are kept while they are live.

Two implementations: :mod:`hub.registry.memory` (one node, the default) and
:mod:`hub.registry.redis` (a cluster of nodes sharing one Redis). One contract test suite
(``tests/hub/registry/test_contract.py``) runs against both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from hub.records import Record

Operator = Literal["contains", "is", "isNot", "notContains", "startsWith", "endsWith"]


@dataclass(frozen=True)
class Filter:
    """One filter of an Assist search, already validated and normalised.

    ``field`` is a record field name (``"userID"``, ``"userOs"``, ``"active"`` …) or ``"metadata"``
    with ``source`` naming the metadata key. ``values`` are lower-cased; they are OR-ed, and an
    empty tuple means "the attribute is set and not empty". Comparisons ignore case.
    """

    field: str
    values: tuple[str, ...]
    operator: Operator = "contains"
    source: str | None = None


@dataclass(frozen=True)
class SessionQuery:
    """A validated Assist query: filters AND-ed, sorted, one page."""

    filters: tuple[Filter, ...] = ()
    sort: str = "timestamp"
    order: Literal["ASC", "DESC"] = "DESC"
    page: int = 1
    limit: int = 200


@dataclass(frozen=True)
class QueryResult:
    """One page of matching sessions and the count of every match."""

    total: int
    sessions: list[Record]


@dataclass(frozen=True)
class TabJoin:
    """What happened when a tab joined its session."""

    record: Record
    started: bool  # the session was not live: a new one was registered
    reconnected: bool  # the session was live with no tab (in its grace) and continues


@dataclass(frozen=True)
class EndedSession:
    """A session whose grace passed: what the store must keep, exactly once.

    ``end_id`` is unique per end and is the store's idempotency key.
    """

    end_id: str
    project_id: int
    project_key: str
    session_id: str
    data: dict[str, Any]  # {"sessionInfo", "variables", "messages"}
    created_at_ms: int
    updated_at_ms: int


@dataclass(frozen=True)
class Change:
    """A change to the set of live sessions, in the order the registry applied it."""

    kind: Literal["started", "updated", "ended"]
    project_key: str
    session_id: str
    record: Record | None = None  # None for "ended"
    extra: dict[str, Any] = field(default_factory=dict)


EndedSink = Callable[[EndedSession], Awaitable[object]]
ChangeListener = Callable[[Change], None]


class PresenceRegistry(Protocol):
    """Live sessions, their tabs, their data until they end, and the ending itself."""

    async def start(self) -> None:
        """Connect and start the background loops (grace timers, reaper, outbox)."""

    async def close(self) -> None:
        """Stop the loops; hand every ended session still owed to the sink first."""

    async def check(self) -> None:
        """Raise :class:`hub.errors.RegistryUnavailable` when the registry does not answer."""

    async def join_tab(self, record: Record, tab_id: str) -> TabJoin:
        """Register a tab of a session; ``record`` is used when the session is not live.

        Raises :class:`hub.errors.TabAlreadyConnected` when that tab is connected already.
        """

    async def leave_tab(self, project_key: str, session_id: str, tab_id: str) -> bool:
        """Unregister a tab; True when it was the last one (the grace begins)."""

    async def update(
        self,
        project_key: str,
        session_id: str,
        changes: dict[str, Any],
        variables: dict[str, Any] | None = None,
        max_data_bytes: int | None = None,
    ) -> Record:
        """Deep-merge validated ``changes`` into the record and ``variables`` into the data.

        Raises SessionNotFound, and SessionDataTooLarge when the data would pass the limit.
        """

    async def add_message(
        self, project_key: str, session_id: str, message: dict[str, Any], max_data_bytes: int
    ) -> None:
        """Append a message to the session's data (SessionDataTooLarge over the limit)."""

    async def get(self, project_key: str, session_id: str) -> Record | None:
        """The record of a live session, or None."""

    async def tabs(self, project_key: str, session_id: str) -> list[str]:
        """The connected tab ids of a session, in the order they joined."""

    async def query(self, project_key: str, query: SessionQuery) -> QueryResult:
        """One page of the live sessions of a project that match the query."""

    async def autocomplete(self, project_key: str, field: str, q: str, limit: int) -> list[str]:
        """Distinct values of a field (or ``metadata.<key>``) among live sessions containing q."""

    def listen(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener`` for every change, in order; returns a function that stops it."""

    def live_count(self) -> int:
        """How many sessions are live, every project together, as this node knows now."""
