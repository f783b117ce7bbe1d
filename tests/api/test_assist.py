"""The Assist API through HTTP (SPEC §5.1, seed 000): list, search, read, autocomplete, auth."""

from __future__ import annotations

import io
import json
from functools import partial
from typing import Any

import pytest

from api.validation import json_response
from hub.records import FILTER_TYPES, blank_record
from hub.typedefs import REGISTRY, STORE
from tests.api.conftest import SEED_TIMESTAMP, Assist
from tests.conftest import HubFactory

# The session of the seed's GET example, less projectKey and projectId (the test project's).
SEED_GET_SESSION: dict[str, Any] = {
    "pageTitle": "OpenReplay Blog",
    "sessionID": "6975518573799938",
    "metadata": {},
    "userID": "",
    "userUUID": "8998545b-553c-4f41-a39d-d7cba7fac2d1",
    "revID": "",
    "timestamp": SEED_TIMESTAMP,
    "trackerVersion": "3.5.11",
    "isSnippet": True,
    "userOs": "Mac OS",
    "userBrowser": "Chrome",
    "userBrowserVersion": "103.0.0.0",
    "userDevice": None,
    "userDeviceType": "desktop",
    "userCountry": "FR",
    "active": False,
    "live": True,
}
# The order of the seed's example, with userCity and userState (SPEC §4.1) after userCountry.
SEED_FIELD_ORDER = [
    "pageTitle", "sessionID", "metadata", "userID", "userUUID", "projectKey", "revID",
    "timestamp", "trackerVersion", "isSnippet", "userOs", "userBrowser", "userBrowserVersion",
    "userDevice", "userDeviceType", "userCountry", "userCity", "userState", "active", "live",
    "projectId",
]  # fmt: skip


# -- the seed's two examples ---------------------------------------------------------------------


async def test_seed_get_example_lists_the_session_with_the_documented_fields(
    assist: Assist,
) -> None:
    fields = {k: v for k, v in SEED_GET_SESSION.items() if k != "sessionID"}
    await assist.add("6975518573799938", **fields)
    response = await assist.hub.client.get(
        assist.path(),
        headers={"content-type": "application/json", "Authorization": assist.org_key.secret},
    )
    assert response.status == 200
    assert response.content_type == "application/json"
    body = await response.json()
    assert list(body) == ["data"]
    assert list(body["data"]) == ["total", "sessions"]
    assert body["data"]["total"] == 1
    [session] = body["data"]["sessions"]
    assert list(session) == SEED_FIELD_ORDER
    assert session == {
        **SEED_GET_SESSION,
        "projectKey": assist.project.project_key,
        "projectId": assist.project.project_id,
        "userCity": None,
        "userState": None,
    }


async def test_seed_post_example_finds_exactly_the_documented_session(assist: Assist) -> None:
    seed = {**SEED_GET_SESSION, "metadata": {"plan": "trial"}, "userID": "dev@openreplay.com"}
    del seed["sessionID"]
    await assist.add("6975518573799185", **seed)
    # Decoys: each fails one filter, or belongs to another project.
    await assist.add("1", metadata={"plan": "paid"}, userID="dev@openreplay.com")
    await assist.add("2", metadata={"plan": "trial"}, userID="dev@example.com")
    await assist.add("3", metadata={}, userID="openreplay")
    await assist.add("4", metadata={"plan": "free"}, userID="")
    await assist.add("5", metadata={"tier": "free"}, userID="ops@openreplay.com")
    other = await assist.hub.project("other")
    await assist.add("6", project=other, metadata={"plan": "free"}, userID="x@openreplay.com")
    # A second match, older, to show the sort and limit: it is on the page too.
    await assist.add(
        "7", timestamp=SEED_TIMESTAMP - 1, metadata={"plan": "FREE"}, userID="OpenReplay-bot"
    )
    body = {
        "filters": [
            {"value": ["trial", "free"], "type": "METADATA", "source": "plan"},
            {"value": ["openreplay"], "type": "USERID"},
        ],
        "sort": "timestamp",
        "order": "DESC",
        "limit": 10,
        "page": 1,
    }
    response = await assist.post(body, key=assist.org_key.secret)
    assert response.status == 200
    data = (await response.json())["data"]
    assert data["total"] == 2
    assert [s["sessionID"] for s in data["sessions"]] == ["6975518573799185", "7"]
    assert data["sessions"][0] == {
        **seed,
        "sessionID": "6975518573799185",
        "projectKey": assist.project.project_key,
        "projectId": assist.project.project_id,
        "userCity": None,
        "userState": None,
    }


# -- filters ---------------------------------------------------------------------------------------


def _matching_fields(type_name: str, text: str) -> dict[str, Any]:
    """Record fields under which a session matches a ``contains text`` filter of ``type_name``."""
    field = FILTER_TYPES[type_name]
    if type_name == "METADATA":
        return {"metadata": {"plan": f"x-{text}-y"}}
    if type_name == "ACTIVE":
        return {"active": text == "true"}
    if type_name == "SESSIONID":
        return {}
    return {field: f"x-{text}-y"}


@pytest.mark.parametrize("type_name", sorted(FILTER_TYPES))
async def test_every_filter_type(assist: Assist, type_name: str) -> None:
    hit, miss = ("true", "false") if type_name == "ACTIVE" else ("Alpha", "beta")
    hit_id, miss_id = ("s-alpha-1", "s-beta-2") if type_name == "SESSIONID" else ("1", "2")
    await assist.add(hit_id, **_matching_fields(type_name, hit))
    await assist.add(miss_id, **_matching_fields(type_name, miss))
    # Values of other fields, or of other metadata keys, are not looked at.
    decoy: dict[str, Any] = {"metadata": {"other": "alpha"}, "active": False}
    decoy["revID" if FILTER_TYPES[type_name] != "revID" else "pageTitle"] = "alpha"
    await assist.add("3", **decoy)
    flt = {"type": type_name.lower(), "value": [hit.upper()], "source": "plan"}
    data = await assist.search({"filters": [flt]})
    assert [s["sessionID"] for s in data["sessions"]] == [hit_id]
    assert data["total"] == 1


OPERATOR_USERS = {
    "1": "dev@openreplay.com",
    "2": "ops@openreplay.com",
    "3": "Dev@Example.org",
    "4": "",
}


@pytest.mark.parametrize(
    ("operator", "values", "expected"),
    [
        (None, ["OPENREPLAY"], {"1", "2"}),
        ("contains", ["openreplay"], {"1", "2"}),
        ("contains", ["example", "ops@"], {"2", "3"}),
        ("is", ["DEV@openreplay.com"], {"1"}),
        ("is", ["dev@openreplay.com", "dev@example.org"], {"1", "3"}),
        ("is", ["dev"], set()),
        ("isNot", ["dev@openreplay.com"], {"2", "3", "4"}),
        ("isNot", ["dev@openreplay.com", "ops@openreplay.com"], {"3", "4"}),
        ("notContains", ["openreplay"], {"3", "4"}),
        ("notContains", ["openreplay", "example"], {"4"}),
        ("startsWith", ["DEV"], {"1", "3"}),
        ("startsWith", ["openreplay"], set()),
        ("endsWith", [".ORG"], {"3"}),
        ("endsWith", [".com", ".org"], {"1", "2", "3"}),
        ("isnot", ["dev@openreplay.com"], {"2", "3", "4"}),  # operator names ignore case
        ("STARTSWITH", ["ops"], {"2"}),
        # No value: the attribute is set and not empty (the negative operators: the rest).
        ("contains", [], {"1", "2", "3"}),
        ("is", [], {"1", "2", "3"}),
        ("notContains", [], {"4"}),
    ],
)
async def test_every_operator(
    assist: Assist, operator: str | None, values: list[str], expected: set[str]
) -> None:
    for sid, user_id in OPERATOR_USERS.items():
        await assist.add(sid, userID=user_id)
    flt: dict[str, Any] = {"type": "USERID", "value": values}
    if operator is not None:
        flt["operator"] = operator
    data = await assist.search({"filters": [flt]})
    assert {s["sessionID"] for s in data["sessions"]} == expected
    assert data["total"] == len(expected)


async def test_empty_value_matches_sessions_where_the_attribute_is_set(assist: Assist) -> None:
    await assist.add("1", metadata={"plan": "trial"}, userOs="Mac OS")
    await assist.add("2", metadata={"plan": ""}, userOs=None)
    await assist.add("3", metadata={"tier": "gold"}, userOs="")
    await assist.add("4", metadata={}, userOs="Linux")
    meta = {"filters": [{"type": "METADATA", "source": "plan", "value": []}]}
    assert await assist.ids(meta) == ["1"]
    assert sorted(await assist.ids({"filters": [{"type": "USEROS", "value": []}]})) == ["1", "4"]
    assert sorted(await assist.ids({"filters": [{"type": "USEROS"}]})) == ["1", "4"]


async def test_filters_are_anded_and_other_projects_are_invisible(assist: Assist) -> None:
    await assist.add("1", userOs="Mac OS", userBrowser="Chrome")
    await assist.add("2", userOs="Mac OS", userBrowser="Firefox")
    await assist.add("3", userOs="Windows", userBrowser="Chrome")
    other = await assist.hub.project("other")
    await assist.add("4", project=other, userOs="Mac OS", userBrowser="Chrome")
    body = {
        "filters": [
            {"type": "userOs", "value": ["mac"]},
            {"type": "USERBROWSER", "value": ["chrome"], "operator": "is"},
        ]
    }
    assert await assist.ids(body) == ["1"]
    assert (await assist.search({}))["total"] == 3


async def test_metadata_source_is_the_exact_key(assist: Assist) -> None:
    await assist.add("1", metadata={"plan": "trial"})
    await assist.add("2", metadata={"Plan": "trial"})
    assert await assist.ids({"filters": [{"type": "METADATA", "source": "Plan"}]}) == ["2"]


# -- sort, order, pages ----------------------------------------------------------------------------


async def test_default_order_is_newest_first(assist: Assist) -> None:
    for i, ts in enumerate([300, 100, 200]):
        await assist.add(f"s{i}", timestamp=ts)
    response = await assist.get()
    assert [s["timestamp"] for s in (await response.json())["data"]["sessions"]] == [300, 200, 100]
    assert [s["timestamp"] for s in (await assist.search({}))["sessions"]] == [300, 200, 100]


@pytest.mark.parametrize(
    ("sort", "order", "expected"),
    [
        ("timestamp", "ASC", ["a", "c", "b"]),
        ("timestamp", "desc", ["b", "c", "a"]),
        ("TIMESTAMP", "asc", ["a", "c", "b"]),
        ("userOs", "ASC", ["c", "a", "b"]),  # unset sorts lowest, text ignores case
        ("useros", "DESC", ["b", "a", "c"]),
        ("userID", "asc", ["a", "b", "c"]),  # ties ("" twice) break on sessionID
        ("userID", "desc", ["c", "b", "a"]),
        ("active", "ASC", ["b", "a", "c"]),
        ("sessionID", "DESC", ["c", "b", "a"]),
    ],
)
async def test_sort_fields_and_orders(
    assist: Assist, sort: str, order: str, expected: list[str]
) -> None:
    await assist.add("a", timestamp=1, userOs="mac OS", userID="", active=True)
    await assist.add("b", timestamp=3, userOs="Windows", userID="", active=False)
    await assist.add("c", timestamp=2, userOs=None, userID="z", active=True)
    assert await assist.ids({"sort": sort, "order": order}) == expected
    response = await assist.get(params={"sort": sort, "order": order})
    assert [s["sessionID"] for s in (await response.json())["data"]["sessions"]] == expected


@pytest.mark.parametrize(("sort", "order"), [("timestamp", "DESC"), ("userOs", "ASC")])
async def test_pages_never_overlap_or_skip(assist: Assist, sort: str, order: str) -> None:
    # Many ties in both sort fields: only the sessionID tie-break keeps the pages apart.
    for i in range(23):
        await assist.add(f"s{i:02d}", timestamp=1000 + i % 3, userOs=f"os{i % 2}")
    everything = await assist.ids({"sort": sort, "order": order, "limit": 1000})
    assert sorted(everything) == [f"s{i:02d}" for i in range(23)]
    pages = []
    for page in range(1, 6):
        data = await assist.search({"sort": sort, "order": order, "page": page, "limit": 5})
        assert data["total"] == 23
        pages.append([s["sessionID"] for s in data["sessions"]])
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [sid for p in pages for sid in p] == everything
    # The same through GET.
    response = await assist.get(params={"sort": sort, "order": order, "page": "2", "limit": "5"})
    assert [s["sessionID"] for s in (await response.json())["data"]["sessions"]] == pages[1]


async def test_page_past_the_end_is_empty_with_the_total(assist: Assist) -> None:
    for i in range(3):
        await assist.add(f"s{i}")
    assert await assist.search({"page": 2, "limit": 3}) == {"total": 3, "sessions": []}
    assert await assist.search({"page": 1_000_000, "limit": 1000}) == {"total": 3, "sessions": []}


async def test_total_counts_every_match_and_limit_cuts_the_page(assist: Assist) -> None:
    for i in range(12):
        await assist.add(f"s{i:02d}", userOs="Mac OS" if i % 3 else "Windows")
    data = await assist.search({"limit": 2, "filters": [{"type": "USEROS", "value": ["mac"]}]})
    assert data["total"] == 8
    assert len(data["sessions"]) == 2


async def test_default_limit_is_200(assist: Assist) -> None:
    for i in range(201):
        await assist.add(f"s{i:03d}", timestamp=i)
    data = await assist.search({})
    assert data["total"] == 201
    assert len(data["sessions"]) == 200
    assert data["sessions"][-1]["sessionID"] == "s001"


async def test_an_empty_project_lists_nothing(assist: Assist) -> None:
    response = await assist.get()
    assert response.status == 200
    assert await response.json() == {"data": {"total": 0, "sessions": []}}


async def test_an_empty_post_body_is_the_default_search(assist: Assist) -> None:
    await assist.add("s1")
    response = await assist.post(data=b"")
    assert response.status == 200
    assert [s["sessionID"] for s in (await response.json())["data"]["sessions"]] == ["s1"]


# -- one session -----------------------------------------------------------------------------------


async def test_get_one_session(assist: Assist) -> None:
    record = await assist.add("6975518573799938", userOs="Mac OS", metadata={"plan": "trial"})
    response = await assist.get("/sessions/6975518573799938")
    assert response.status == 200
    assert await response.json() == {"data": record}


async def test_pages_are_strict_utf8_json_with_every_character(assist: Assist) -> None:
    """Pages are encoded by orjson: any text a tracker sent comes back exactly."""
    text = 'naïve ✓ \u2028 "quoted" \\ \x00 😀'
    await assist.add("s1", userCity="Zürich", metadata={"note": text})
    await assist.add("s2", metadata={"plan": "ünïcode ✓"})
    for response in (await assist.get(), await assist.get("/sessions/s1")):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/json")
        json.loads(await response.text(encoding="utf-8"))  # strict JSON
    body = await (await assist.get("/sessions/s1")).json()
    assert body["data"]["metadata"]["note"] == text and body["data"]["userCity"] == "Zürich"
    listed = (await (await assist.get()).json())["data"]["sessions"]
    assert {s["sessionID"] for s in listed} == {"s1", "s2"}


def test_what_orjson_cannot_hold_exactly_is_encoded_by_the_standard_library() -> None:
    huge = 2**70 + 1  # past 64 bits: orjson refuses it rather than round it
    response = json_response({"data": {"big": huge, "text": "✓"}}, status=201)
    assert response.status == 201 and response.content_type == "application/json"
    assert isinstance(response.body, bytes)
    assert json.loads(response.body) == {"data": {"big": huge, "text": "✓"}}


@pytest.mark.parametrize("sid", ["nope", "6975518573799938x", "a%20b", "x" * 129, "%E2%9C%93"])
async def test_get_unknown_session_is_404(assist: Assist, sid: str) -> None:
    await assist.add("6975518573799938")
    response = await assist.get(f"/sessions/{sid}")
    assert response.status == 404
    assert await response.json() == {"error": "session not found"}


async def test_a_session_of_another_project_is_404(assist: Assist) -> None:
    other = await assist.hub.project("other")
    await assist.add("s1", project=other)
    response = await assist.get("/sessions/s1", key=assist.org_key.secret)
    assert response.status == 404
    response = await assist.get("/sessions/s1", key=assist.org_key.secret,
                                project_key=other.project_key)  # fmt: skip
    assert response.status == 200


# -- autocomplete ----------------------------------------------------------------------------------


async def test_autocomplete(assist: Assist) -> None:
    for i, os_name in enumerate(["Mac OS", "Mac OS", "Windows", "Ubuntu", "macOS", "Android"]):
        await assist.add(f"s{i}", userOs=os_name)
    response = await assist.get("/autocomplete", params={"type": "USEROS", "q": "ma"})
    assert response.status == 200
    body = await response.json()
    # Most frequent first, then alphabetically.
    assert body == {
        "data": [{"type": "USEROS", "value": "Mac OS"}, {"type": "USEROS", "value": "macOS"}]
    }
    response = await assist.get("/autocomplete", params={"type": "useros", "q": "MA"})
    assert await response.json() == body
    response = await assist.get("/autocomplete", params={"type": "useros", "q": "zzz"})
    assert await response.json() == {"data": []}


async def test_autocomplete_without_q_lists_the_most_common_values(assist: Assist) -> None:
    for i, browser in enumerate(["Chrome", "Firefox", "Chrome", "Safari", "Chrome", "Firefox"]):
        await assist.add(f"s{i}", userBrowser=browser)
    response = await assist.get("/autocomplete", params={"type": "USERBROWSER"})
    values = [item["value"] for item in (await response.json())["data"]]
    assert values == ["Chrome", "Firefox", "Safari"]


async def test_autocomplete_answers_at_most_ten_distinct_values(assist: Assist) -> None:
    for i in range(15):
        await assist.add(f"s{i}", pageTitle=f"Page {i:02d}")
        await assist.add(f"t{i}", pageTitle=f"Page {i:02d}")
    response = await assist.get("/autocomplete", params={"type": "PAGETITLE", "q": "page"})
    data = (await response.json())["data"]
    assert len(data) == 10
    assert len({item["value"] for item in data}) == 10


async def test_autocomplete_metadata_and_aliases(assist: Assist) -> None:
    await assist.add("s1", metadata={"plan": "trial", "tier": "gold"}, userDeviceType="desktop")
    await assist.add("s2", metadata={"plan": "free"}, userDeviceType="mobile")
    response = await assist.get("/autocomplete", params={"type": "metadata", "source": "plan"})
    assert await response.json() == {
        "data": [{"type": "METADATA", "value": "free"}, {"type": "METADATA", "value": "trial"}]
    }
    response = await assist.get("/autocomplete", params={"type": "platform", "q": "mob"})
    assert await response.json() == {"data": [{"type": "PLATFORM", "value": "mobile"}]}


async def test_autocomplete_sees_only_its_project(assist: Assist) -> None:
    other = await assist.hub.project("other")
    await assist.add("s1", project=other, userOs="Mac OS")
    response = await assist.get("/autocomplete", params={"type": "USEROS"})
    assert await response.json() == {"data": []}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "type"),
        ({"type": ""}, "type"),
        ({"type": "USERNAME", "q": "a"}, "type"),
        ({"type": "METADATA", "q": "a"}, "source"),
        ({"type": "METADATA", "source": ""}, "source"),
        ({"type": "USEROS", "q": "a" * 1025}, "q"),
    ],
)
async def test_bad_autocomplete_is_400_naming_the_field(
    assist: Assist, params: dict[str, str], field: str
) -> None:
    response = await assist.get("/autocomplete", params=params)
    assert response.status == 400
    assert (await response.json())["error"].startswith(field + " ")


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"sort": "nope"}, "sort"),
        ({"sort": "metadata"}, "sort"),
        ({"sort": 1}, "sort"),
        ({"order": "up"}, "order"),
        ({"order": False}, "order"),
        ({"page": 0}, "page"),
        ({"page": "1"}, "page"),
        ({"page": 1.5}, "page"),
        ({"page": True}, "page"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "10"}, "limit"),
        ({"limit": [10]}, "limit"),
        ({"filters": {}}, "filters"),
        ({"filters": "USERID"}, "filters"),
        ({"filters": [1]}, "filters[0]"),
        ({"filters": [{"value": ["a"]}]}, "filters[0].type"),
        ({"filters": [{"type": "USERID"}, {"type": "nope"}]}, "filters[1].type"),
        ({"filters": [{"type": "USERID", "operator": "like"}]}, "filters[0].operator"),
        ({"filters": [{"type": "USERID", "operator": ["is"]}]}, "filters[0].operator"),
        ({"filters": [{"type": "METADATA", "value": ["x"]}]}, "filters[0].source"),
        ({"filters": [{"type": "METADATA", "source": ""}]}, "filters[0].source"),
        ({"filters": [{"type": "USERID", "value": "a"}]}, "filters[0].value"),
        ({"filters": [{"type": "USERID", "value": ["a", 2]}]}, "filters[0].value[1]"),
        ({"filters": [{"type": "ACTIVE", "value": ["maybe"]}]}, "filters[0].value[0]"),
        ({"filters": [{"type": "USERID"}] * 51}, "filters"),
        ({"filters": [{"type": "USERID", "value": ["v"] * 101}]}, "filters[0].value"),
        ({"filters": [{"type": "USERID", "value": ["v" * 1025]}]}, "filters[0].value[0]"),
    ],
)
async def test_bad_search_is_400_naming_the_field(
    assist: Assist, body: dict[str, Any], field: str
) -> None:
    await assist.add("s1")
    response = await assist.post(body)
    assert response.status == 400
    error = (await response.json())["error"]
    assert error.startswith(field + " "), error


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"page": "0"}, "page"),
        ({"page": "x"}, "page"),
        ({"page": "1.0"}, "page"),
        ({"limit": "1001"}, "limit"),
        ({"limit": ""}, "limit"),
        ({"sort": "nope"}, "sort"),
        ({"order": "sideways"}, "order"),
    ],
)
async def test_bad_list_params_are_400_naming_the_field(
    assist: Assist, params: dict[str, str], field: str
) -> None:
    response = await assist.get(params=params)
    assert response.status == 400
    assert (await response.json())["error"].startswith(field + " ")


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"{", "invalid JSON body"),
        (b'{"limit": NaN}', "invalid JSON body"),
        (b"\xff", "invalid JSON body"),
        (b"[" * 5000, "invalid JSON body"),
        (b"[]", "request body must be a JSON object"),
        (b"null", "request body must be a JSON object"),
    ],
)
async def test_bad_json_is_400(assist: Assist, raw: bytes, error: str) -> None:
    response = await assist.post(data=raw)
    assert response.status == 400
    assert await response.json() == {"error": error}


async def test_a_body_over_the_limit_is_413(assist: Assist) -> None:
    limit = assist.hub.settings.limits.request_body_bytes
    raw = b'{"filters": [], "pad": "' + b"x" * limit + b'"}'
    response = await assist.hub.client.post(
        assist.path(), data=io.BytesIO(raw), headers={"Authorization": assist.key.secret}
    )
    assert response.status == 413
    assert await response.json() == {"error": "request body too large"}


# -- authentication and projects -------------------------------------------------------------------


@pytest.mark.parametrize("form", ["{}", "Bearer {}", "bearer   {}", "  {}  "])
async def test_both_header_forms_authenticate(assist: Assist, form: str) -> None:
    await assist.add("s1")
    response = await assist.get(key=form.format(assist.key.secret))
    assert response.status == 200


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", "nope", "Bearer nope", "Basic dXNlcjpwYXNz"]
)
async def test_missing_or_unknown_key_is_401(assist: Assist, header: str | None) -> None:
    await assist.add("s1")
    for call in (
        partial(assist.get, key=header),
        partial(assist.post, {}, key=header),
        partial(assist.get, "/sessions/s1", key=header),
        partial(assist.get, "/autocomplete", key=header, params={"type": "USEROS"}),
    ):
        response = await call()
        assert response.status == 401
        assert await response.json() == {"error": "invalid or missing API key"}


@pytest.mark.parametrize("form", ["{}", "Bearer {}"])
async def test_a_revoked_key_is_401(assist: Assist, form: str) -> None:
    assert (await assist.get(key=form.format(assist.key.secret))).status == 200
    await assist.hub.app[STORE].revoke_key(assist.key.key_id)
    response = await assist.get(key=form.format(assist.key.secret))
    assert response.status == 401
    assert await response.json() == {"error": "invalid or missing API key"}


async def test_a_key_of_another_project_is_403(assist: Assist) -> None:
    other = await assist.hub.project("other")
    await assist.add("s1", project=other, userOs="Mac OS")
    other_key = other.project_key
    for call in (
        partial(assist.get, project_key=other_key),
        partial(assist.post, {}, project_key=other_key),
        partial(assist.get, "/sessions/s1", project_key=other_key),
        partial(assist.get, "/autocomplete", project_key=other_key, params={"type": "USEROS"}),
    ):
        response = await call()
        assert response.status == 403
        body = await response.json()
        assert body == {"error": "this API key does not cover this project"}
        assert "Mac OS" not in str(body)


async def test_an_organization_key_works_for_every_project(assist: Assist) -> None:
    other = await assist.hub.project("other")
    await assist.add("s1", project=other)
    await assist.add("s2")
    for project_key, sid in ((other.project_key, "s1"), (assist.project.project_key, "s2")):
        response = await assist.get(key=assist.org_key.secret, project_key=project_key)
        assert [s["sessionID"] for s in (await response.json())["data"]["sessions"]] == [sid]


@pytest.mark.parametrize("project_key", ["aYYaFHiagqdXKEmVlmvJ", "x", "é", "a" * 300])
async def test_an_unknown_project_is_404(assist: Assist, project_key: str) -> None:
    for key in (assist.org_key.secret, assist.key.secret):
        response = await assist.get(key=key, project_key=project_key)
        assert response.status == 404
        assert await response.json() == {"error": "project not found"}


async def test_401_comes_before_404_and_400(assist: Assist) -> None:
    # Without a valid key nothing is learnt: not whether the project exists, nor the input.
    response = await assist.get(key="nope", project_key="aYYaFHiagqdXKEmVlmvJ")
    assert response.status == 401
    response = await assist.post(data=b"{not json", key=None)
    assert response.status == 401
    response = await assist.get(key=None, params={"page": "0"})
    assert response.status == 401


async def test_403_comes_before_400(assist: Assist) -> None:
    other = await assist.hub.project("other")
    response = await assist.post(data=b"{not json", project_key=other.project_key)
    assert response.status == 403


async def test_unknown_routes_and_methods_answer_json(assist: Assist) -> None:
    response = await assist.get("/nothing-here")
    assert response.status == 404
    assert await response.json() == {"error": "not found"}
    response = await assist.hub.client.delete(
        assist.path(), headers={"Authorization": assist.key.secret}
    )
    assert response.status == 405
    assert await response.json() == {"error": "method not allowed"}


async def test_any_node_of_a_cluster_answers_the_same(make_hub: HubFactory, redis_url: str) -> None:
    node_a = await make_hub(redis_url=redis_url)
    node_b = await make_hub(redis_url=redis_url)  # same Redis, same database
    project = await node_a.project("cluster")
    key = await node_a.key(project.project_id)
    record = blank_record(project.project_key, project.project_id, "s1", SEED_TIMESTAMP)
    record["userOs"] = "Mac OS"
    await node_a.app[REGISTRY].join_tab(record, "tab-1")
    headers = {"Authorization": key.secret}
    path = f"/api/v1/{project.project_key}/assist"
    for node in (node_a, node_b):
        response = await node.client.post(
            f"{path}/sessions",
            json={"filters": [{"type": "USEROS", "value": ["mac"]}]},
            headers=headers,
        )
        assert await response.json() == {"data": {"total": 1, "sessions": [record]}}
        response = await node.client.get(f"{path}/sessions/s1", headers=headers)
        assert await response.json() == {"data": record}
        response = await node.client.get(
            f"{path}/autocomplete", params={"type": "USEROS"}, headers=headers
        )
        assert await response.json() == {"data": [{"type": "USEROS", "value": "Mac OS"}]}
