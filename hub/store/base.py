"""The store interface: projects, API keys, the JWT secret and the stored (ended) sessions.

Two implementations chosen by HUB_DATABASE_URL: :mod:`hub.store.sqlite` (the default) and
:mod:`hub.store.postgres`. One contract test suite (``tests/hub/store/test_contract.py``) runs
against both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from hub.registry.base import EndedSession


@dataclass(frozen=True)
class Project:
    project_id: int
    project_key: str  # 20 characters of [A-Za-z0-9]
    name: str


@dataclass(frozen=True)
class ApiKey:
    """A valid (not revoked) API key; ``project_id`` None is an organization key."""

    key_id: str
    project_id: int | None
    name: str

    def covers(self, project_id: int) -> bool:
        return self.project_id is None or self.project_id == project_id


@dataclass(frozen=True)
class NewKey:
    """A freshly made key: the secret is shown once and only its hash is kept."""

    key_id: str
    secret: str
    project_id: int | None
    name: str


@dataclass(frozen=True)
class StoredSession:
    session_id: str
    data_json: str  # the compact JSON text of the data, exactly as searched
    created_at_ms: int
    updated_at_ms: int


@dataclass(frozen=True)
class SearchPage:
    total: int
    sessions: list[StoredSession]


class SessionStore(Protocol):
    async def open(self) -> None:
        """Connect and apply pending schema migrations."""

    async def close(self) -> None: ...

    async def check(self) -> None:
        """Raise :class:`hub.errors.StoreUnavailable` when the database does not answer."""

    async def create_project(self, name: str) -> Project: ...

    async def list_projects(self) -> list[Project]: ...

    async def project_by_key(self, project_key: str) -> Project | None: ...

    async def project_by_id(self, project_id: int) -> Project | None: ...

    async def create_key(self, project_id: int | None, name: str) -> NewKey:
        """Raises ProjectNotFound for an unknown project."""

    async def revoke_key(self, key_id: str) -> None:
        """Raises KeyNotFound for an unknown key id."""

    async def authenticate(self, secret: str) -> ApiKey | None:
        """The valid key with that secret (compared in constant time), or None."""

    async def jwt_secret(self) -> str:
        """The secret that signs agent tokens: made once, then kept in the database."""

    async def save_session(self, ended: EndedSession) -> bool:
        """Store an ended session; idempotent on ``end_id``. True when newly written.

        Calls made at the same time are written together, in one transaction per batch.
        """

    async def save_sessions(self, sessions: Sequence[EndedSession]) -> int:
        """Store ended sessions together; idempotent on ``end_id``. How many were newly written.

        One transaction (SQLite: one per 500 sessions); an end already stored, or given twice,
        is written once.
        """

    async def search(self, project_id: int, needle: str, limit: int, offset: int) -> SearchPage:
        """Sessions whose compact JSON contains ``needle`` (case-sensitive), updatedAt desc."""

    async def get_session(self, project_id: int, session_id: str) -> StoredSession | None:
        """The most recently updated stored session with that id."""
