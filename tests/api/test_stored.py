"""The stored-session search API (SPEC §5.2, seed 002) through a real hub application."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from api.stored import iso_time
from hub.registry.base import EndedSession
from hub.store.base import NewKey, Project
from hub.typedefs import STORE
from tests.conftest import Hub, HubFactory

INVALID_AUTH = {"error": {"message": "Invalid authentication"}}


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


# The two sessions of the seed's example response, exactly as it shows them.
SEED_RESULTS: list[dict[str, Any]] = [
    {
        "sessionId": "user-123-session-456",
        "data": {
            "variables": {"userName": "John Doe", "userRole": "admin"},
            "messages": [
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "Hi John Doe! How can I help you today?"},
            ],
        },
        "createdAt": "2024-01-15T10:30:00.000Z",
        "updatedAt": "2024-01-15T10:35:00.000Z",
    },
    {
        "sessionId": "user-456-session-789",
        "data": {"variables": {"userName": "John Doe", "userRole": "user"}, "messages": []},
        "createdAt": "2024-01-14T15:20:00.000Z",
        "updatedAt": "2024-01-14T15:25:00.000Z",
    },
]


@dataclass
class Stored:
    """A hub with a project, a key of it, and a way to store ended sessions."""

    hub: Hub
    project: Project
    key: NewKey

    async def save(
        self, session_id: str, data: dict[str, Any], created: int = 0, updated: int = 0, **kw: Any
    ) -> None:
        ended = EndedSession(
            end_id=kw.get("end_id", f"{session_id}/{updated}"),
            project_id=kw.get("project_id", self.project.project_id),
            project_key=self.project.project_key,
            session_id=session_id,
            data=data,
            created_at_ms=created,
            updated_at_ms=updated,
        )
        assert await self.hub.app[STORE].save_session(ended)

    def search_url(self, project_id: int | str | None = None) -> str:
        pid = self.project.project_id if project_id is None else project_id
        return f"/api/project/{pid}/integration/api/session/search"

    def session_url(self, session_id: str, project_id: int | str | None = None) -> str:
        pid = self.project.project_id if project_id is None else project_id
        return f"/api/project/{pid}/integration/api/session/{session_id}"

    async def search(
        self, body: Any, *, auth: str | None = None, project_id: int | str | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": auth if auth is not None else f"Bearer {self.key.secret}"}
        data = body if isinstance(body, bytes) else json.dumps(body)
        async with self.hub.client.post(
            self.search_url(project_id), data=data, headers=headers
        ) as response:
            return response.status, await response.json()

    async def get(
        self, session_id: str, *, auth: str | None = None, project_id: int | str | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": auth if auth is not None else f"Bearer {self.key.secret}"}
        async with self.hub.client.get(
            self.session_url(session_id, project_id), headers=headers
        ) as response:
            return response.status, await response.json()


@pytest.fixture
async def stored(make_hub: HubFactory) -> Stored:
    hub = await make_hub()
    project = await hub.project("shop")
    return Stored(hub, project, await hub.key(project.project_id))


async def save_seed_sessions(stored: Stored) -> None:
    for result in SEED_RESULTS:
        await stored.save(
            result["sessionId"], result["data"], ms(result["createdAt"]), ms(result["updatedAt"])
        )
    # Sessions that must not match: another user, and John Doe in another case.
    await stored.save("user-789", {"variables": {"userName": "Jane Roe"}, "messages": []}, 1, 2)
    await stored.save("user-790", {"variables": {"userName": "john doe"}, "messages": []}, 1, 3)


# The seed's example


async def test_the_seed_example_request_gets_the_seed_example_response(stored: Stored) -> None:
    await save_seed_sessions(stored)
    status, body = await stored.search({"search_string": "John Doe", "limit": 10, "offset": 0})
    assert status == 200
    assert body == {"results": SEED_RESULTS, "pagination": {"limit": 10, "offset": 0, "total": 2}}
    assert list(body) == ["results", "pagination"]
    assert [list(r) for r in body["results"]] == [
        ["sessionId", "data", "createdAt", "updatedAt"]
    ] * 2
    assert list(body["pagination"]) == ["limit", "offset", "total"]
    # The data keeps the order its keys were stored in.
    assert list(body["results"][0]["data"]) == ["variables", "messages"]


async def test_the_seed_example_on_postgresql(make_hub: HubFactory, postgres_url: str) -> None:
    hub = await make_hub(database_url=postgres_url)
    project = await hub.project("shop")
    stored = Stored(hub, project, await hub.key(None, "org"))
    await save_seed_sessions(stored)
    status, body = await stored.search({"search_string": "John Doe", "limit": 10, "offset": 0})
    assert status == 200
    assert body == {"results": SEED_RESULTS, "pagination": {"limit": 10, "offset": 0, "total": 2}}
    assert await stored.get("user-456-session-789") == (200, SEED_RESULTS[1])


async def test_the_response_is_utf8_json(stored: Stored) -> None:
    await stored.save("s1", {"variables": {"greeting": "こんにちは 👋 «ça»"}})
    async with stored.hub.client.post(
        stored.search_url(),
        json={"search_string": "👋 «ç"},
        headers={"Authorization": f"Bearer {stored.key.secret}"},
    ) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert response.charset == "utf-8"
        body = await response.json()
    assert body["results"][0]["data"] == {"variables": {"greeting": "こんにちは 👋 «ça»"}}


async def test_defaults_are_limit_50_offset_0(stored: Stored) -> None:
    for i in range(55):
        await stored.save(f"s{i:02d}", {"n": i, "tag": "hit"}, updated=i)
    status, body = await stored.search({"search_string": "hit"})
    assert status == 200
    assert body["pagination"] == {"limit": 50, "offset": 0, "total": 55}
    assert [r["sessionId"] for r in body["results"]] == [f"s{i:02d}" for i in range(54, 4, -1)]
    status, body = await stored.search({"search_string": "hit", "limit": None, "offset": None})
    assert body["pagination"] == {"limit": 50, "offset": 0, "total": 55}


async def test_limit_and_offset_page_through_every_match(stored: Stored) -> None:
    for i in range(7):
        await stored.save(f"s{i}", {"n": i, "tag": "hit"}, updated=1000 + i % 3)
    seen: list[str] = []
    for offset in range(0, 8, 3):
        status, body = await stored.search({"search_string": "hit", "limit": 3, "offset": offset})
        assert status == 200
        assert body["pagination"] == {"limit": 3, "offset": offset, "total": 7}
        seen += [r["sessionId"] for r in body["results"]]
    # updatedAt descending, then sessionId: no page overlaps or skips.
    assert seen == ["s2", "s5", "s1", "s4", "s0", "s3", "s6"]
    status, body = await stored.search({"search_string": "hit", "limit": 1000, "offset": 10**30})
    assert (status, body["results"], body["pagination"]["total"]) == (200, [], 7)


async def test_search_is_case_sensitive_and_literal(stored: Stored) -> None:
    await stored.save("s1", {"note": '50% off_now "quoted" back\\slash'})
    for needle, total in [
        ("50%", 1), ("%", 1), ("_", 1), ('\\"quoted\\"', 1), ("\\\\", 1), ("OFF", 0),
        ("5_%", 0), ('"note":"50', 1), ("\n", 0),
    ]:  # fmt: skip
        status, body = await stored.search({"search_string": needle})
        assert (status, body["pagination"]["total"]) == (200, total), needle


async def test_search_sees_only_the_project_of_the_url(stored: Stored) -> None:
    other = await stored.hub.project("other")
    await stored.save("mine", {"tag": "shared"})
    await stored.save("theirs", {"tag": "shared"}, project_id=other.project_id)
    org = await stored.hub.key(None, "org")
    status, body = await stored.search({"search_string": "shared"})
    assert [r["sessionId"] for r in body["results"]] == ["mine"]
    status, body = await stored.search(
        {"search_string": "shared"}, auth=f"Bearer {org.secret}", project_id=other.project_id
    )
    assert status == 200
    assert [r["sessionId"] for r in body["results"]] == ["theirs"]


# Authentication and the project


async def test_bearer_and_bare_keys_both_authenticate(stored: Stored) -> None:
    for auth in (f"Bearer {stored.key.secret}", stored.key.secret, f"bearer  {stored.key.secret}"):
        status, _ = await stored.search({"search_string": "x"}, auth=auth)
        assert status == 200, auth


async def test_bad_authentication_is_401_with_the_seed_body(stored: Stored) -> None:
    revoked = await stored.hub.key(stored.project.project_id, "old")
    await stored.hub.app[STORE].revoke_key(revoked.key_id)
    other = await stored.hub.project("other")
    other_key = await stored.hub.key(other.project_id, "theirs")
    for auth in (
        "",
        "Bearer",
        "Bearer nope",
        f"Bearer {stored.key.secret}x",
        f"Bearer {revoked.secret}",
        f"Bearer {other_key.secret}",  # valid, but for another project
        f"Basic {stored.key.secret}",
    ):
        assert await stored.search({"search_string": "x"}, auth=auth) == (401, INVALID_AUTH)
        assert await stored.get("s1", auth=auth) == (401, INVALID_AUTH)
    async with stored.hub.client.post(stored.search_url(), json={"search_string": "x"}) as r:
        assert (r.status, await r.json()) == (401, INVALID_AUTH)


async def test_authentication_comes_before_the_project_and_the_input(stored: Stored) -> None:
    for project_id in (999, "abc"):
        status, body = await stored.search(b"not json", auth="Bearer nope", project_id=project_id)
        assert (status, body) == (401, INVALID_AUTH)
    # A project key asking about a project it does not cover learns nothing of it.
    status, body = await stored.search({"search_string": "x"}, project_id=999)
    assert (status, body) == (401, INVALID_AUTH)


async def test_an_unknown_project_is_404(stored: Stored) -> None:
    org = await stored.hub.key(None, "org")
    auth = f"Bearer {org.secret}"
    for project_id in (999, "0", "abc", "-1", "01", "1.0", str(2**64)):
        status, body = await stored.search({"search_string": "x"}, auth=auth, project_id=project_id)
        assert (status, body) == (404, {"error": "project not found"}), project_id
        assert await stored.get("s1", auth=auth, project_id=project_id) == (
            404,
            {"error": "project not found"},
        )


# Input


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"search_string": ""},
        {"search_string": None},
        {"search_string": 42},
        {"search_string": ["John"]},
        {"search_string": {"q": "John"}},
        {"search_string": True},
        {"query": "John"},
        b"",
    ],
)
async def test_a_missing_or_invalid_search_string_is_400(stored: Stored, body: Any) -> None:
    assert await stored.search(body) == (400, {"error": "search_string is required"})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "invalid JSON body"),
        (b'{"search_string": NaN}', "invalid JSON body"),
        (b"\xff\xfe", "invalid JSON body"),
        (b'["search_string"]', "request body must be a JSON object"),
        (b'"John"', "request body must be a JSON object"),
    ],
)
async def test_a_body_that_is_not_a_json_object_is_400(
    stored: Stored, raw: bytes, message: str
) -> None:
    assert await stored.search(raw) == (400, {"error": message})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("limit", 0),
        ("limit", 1001),
        ("limit", -5),
        ("limit", "10"),
        ("limit", 10.0),
        ("limit", True),
        ("limit", [10]),
        ("offset", -1),
        ("offset", "0"),
        ("offset", 1.5),
        ("offset", False),
    ],
)
async def test_a_bad_limit_or_offset_is_400_naming_it(
    stored: Stored, field: str, value: Any
) -> None:
    status, body = await stored.search({"search_string": "x", field: value})
    assert status == 400
    assert body["error"].startswith(f"{field} must be"), body


async def test_limit_bounds_are_inclusive(stored: Stored) -> None:
    for limit in (1, 1000):
        status, body = await stored.search({"search_string": "x", "limit": limit})
        assert (status, body["pagination"]["limit"]) == (200, limit)


async def test_a_body_over_the_limit_is_413(stored: Stored) -> None:
    huge = io.BytesIO(json.dumps({"search_string": "x" * (1024 * 1024 + 10)}).encode())
    async with stored.hub.client.post(
        stored.search_url(), data=huge, headers={"Authorization": f"Bearer {stored.key.secret}"}
    ) as response:
        assert response.status == 413
        assert set(await response.json()) == {"error"}


async def test_a_store_that_fails_is_500_without_details(stored: Stored) -> None:
    await stored.hub.app[STORE].close()
    status, body = await stored.search({"search_string": "x"})
    assert (status, body) == (500, {"error": "internal server error"})
    assert await stored.get("s1") == (500, {"error": "internal server error"})


async def test_a_search_past_its_budget_is_422_and_the_store_goes_on(
    make_hub: HubFactory,
) -> None:
    hub = await make_hub(search_timeout=0.001)
    project = await hub.project("shop")
    stored = Stored(hub, project, await hub.key(project.project_id))
    sessions = [
        EndedSession(f"e{i}", project.project_id, project.project_key, f"s{i}",
                     {"page": f"/product/{i}", "note": "lorem ipsum " * 20}, i, i)
        for i in range(20_000)
    ]  # fmt: skip
    for first in range(0, len(sessions), 2_000):
        await hub.app[STORE].save_sessions(sessions[first : first + 2_000])
    # Two characters have no trigram: every row is read, which 1 ms does not allow.
    status, body = await stored.search({"search_string": "/p"})
    assert status == 422
    assert set(body) == {"error"} and "HUB_SEARCH_TIMEOUT" in body["error"]
    # The store goes on: its sessions are still read, and a new end is still stored.
    status, body = await stored.get("s123")
    assert status == 200 and body["sessionId"] == "s123"
    await stored.save("after", {"page": "/after"}, 1, 2)
    assert (await stored.get("after"))[0] == 200


# Reading one session


async def test_get_returns_the_latest_stored_end_of_a_session(stored: Stored) -> None:
    await stored.save("s1", {"v": "first"}, created=1000, updated=2000)
    await stored.save("s1", {"v": "second"}, created=1000, updated=3000)
    status, body = await stored.get("s1")
    assert status == 200
    assert body == {
        "sessionId": "s1",
        "data": {"v": "second"},
        "createdAt": "1970-01-01T00:00:01.000Z",
        "updatedAt": "1970-01-01T00:00:03.000Z",
    }


async def test_get_of_an_unknown_session_is_404(stored: Stored) -> None:
    other = await stored.hub.project("other")
    await stored.save("theirs", {"v": 1}, project_id=other.project_id)
    for session_id in ("nope", "theirs", "a%20b", "x" * 129, "%C3%A9"):
        assert await stored.get(session_id) == (404, {"error": "session not found"}), session_id


def test_times_are_iso_8601_utc_with_milliseconds() -> None:
    assert iso_time(0) == "1970-01-01T00:00:00.000Z"
    assert iso_time(1_705_314_600_000) == "2024-01-15T10:30:00.000Z"
    assert iso_time(1_705_314_600_007) == "2024-01-15T10:30:00.007Z"
    assert iso_time(1_705_314_659_999) == "2024-01-15T10:30:59.999Z"
    moment = datetime(2031, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)
    assert iso_time(int(moment.timestamp() * 1000)) == "2031-02-03T04:05:06.789Z"
