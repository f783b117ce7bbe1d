"""Fixtures of the REST tests: a running hub with a project, its keys and live sessions."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import ClientResponse

from hub.records import Record, blank_record
from hub.store.base import NewKey, Project
from hub.typedefs import REGISTRY
from tests.conftest import Hub, HubFactory

SEED_TIMESTAMP = 1_656_437_966_459


class _OwnKey:
    """The default ``key`` of the request helpers: the project's own key."""


OWN_KEY = _OwnKey()


@dataclass
class Assist:
    """A hub with one project (``project``), a key of it and an organization key.

    ``add`` puts a live session in the registry the way a tracker's connect does; ``get`` and
    ``post`` call the Assist API of the project with the project's key unless told otherwise.
    """

    hub: Hub
    project: Project
    key: NewKey
    org_key: NewKey
    _tabs: itertools.count[int]

    def path(self, suffix: str = "/sessions", project_key: str | None = None) -> str:
        return f"/api/v1/{project_key or self.project.project_key}/assist{suffix}"

    async def add(
        self,
        session_id: str,
        *,
        project: Project | None = None,
        timestamp: int = SEED_TIMESTAMP,
        **fields: Any,
    ) -> Record:
        """Register a live session of ``project`` (default: the fixture's) with ``fields`` set."""
        project = project or self.project
        record = blank_record(project.project_key, project.project_id, session_id, timestamp)
        record.update(fields)
        joined = await self.hub.app[REGISTRY].join_tab(record, f"tab-{next(self._tabs)}")
        assert joined.started
        return joined.record

    def headers(self, key: str | _OwnKey | None) -> dict[str, str]:
        """``Authorization: key``; the project's key for OWN_KEY, no header for None."""
        if isinstance(key, _OwnKey):
            key = self.key.secret
        return {} if key is None else {"Authorization": key}

    async def get(
        self,
        suffix: str = "/sessions",
        *,
        key: str | _OwnKey | None = OWN_KEY,
        project_key: str | None = None,
        params: dict[str, str] | None = None,
    ) -> ClientResponse:
        """GET with ``key`` (see :meth:`headers`)."""
        return await self.hub.client.get(
            self.path(suffix, project_key), params=params, headers=self.headers(key)
        )

    async def post(
        self,
        body: Any = None,
        *,
        suffix: str = "/sessions",
        key: str | _OwnKey | None = OWN_KEY,
        project_key: str | None = None,
        data: bytes | None = None,
    ) -> ClientResponse:
        """POST ``body`` as JSON (or ``data`` as it is) with ``key`` as for :meth:`get`."""
        headers = self.headers(key)
        kwargs: dict[str, Any] = {"data": data} if data is not None else {"json": body}
        return await self.hub.client.post(self.path(suffix, project_key), headers=headers, **kwargs)

    async def search(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST a search that must succeed; its ``data``."""
        response = await self.post(body)
        assert response.status == 200, await response.text()
        data: dict[str, Any] = (await response.json())["data"]
        return data

    async def ids(self, body: dict[str, Any]) -> list[str]:
        """The sessionIDs of a search's page, in order."""
        return [s["sessionID"] for s in (await self.search(body))["sessions"]]


@pytest.fixture(params=["memory", "redis"])
def registry_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings for each registry: every Assist test runs on both (a cluster answers the same)."""
    if request.param == "redis":
        return {"redis_url": request.getfixturevalue("redis_url")}
    return {}


@pytest.fixture
async def assist(make_hub: HubFactory, registry_overrides: dict[str, Any]) -> Assist:
    hub = await make_hub(**registry_overrides)
    project = await hub.project("assist")
    return Assist(
        hub=hub,
        project=project,
        key=await hub.key(project.project_id, "project key"),
        org_key=await hub.key(None, "organization key"),
        _tabs=itertools.count(1),
    )
