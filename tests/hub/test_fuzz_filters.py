"""Property: any Assist search body is answered 200 with exactly the sessions SPEC §5.1 says, or
400 naming the field; never a 500; and a search changes nothing (SPEC §5, §5.1).

Bodies are generated whole (filters of every shape and type, sort/order/page/limit of any JSON
type, non-object JSON, bytes that are no JSON) and POSTed to a real hub on each registry. Every
answer is also held to the OpenAPI document by the test client. A 200 is checked against a model
of the filter semantics written here from docs/api.md (not the index's code): the set of matches,
the total, the order, and that the page is that slice of the whole ordered result.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import strategies as st

from api.validation import parse_json_object
from hub.errors import InvalidInput
from hub.query import parse_query
from hub.records import FILTER_TYPES, RECORD_FIELDS, Record, blank_record
from hub.registry.base import Filter, SessionQuery
from hub.typedefs import REGISTRY
from tests.conftest import Hub, HubFactory
from tests.hub.fuzz import fuzz, json_values

EXAMPLES = 300

# Small pools of values, in several cases, so that filters match, tie and sort interestingly.
POOLS: dict[str, list[str | None]] = {
    "userID": ["ada@example.com", "Ada@Example.com", "bob", "Zoë", "İpek"],
    "userOs": ["Mac OS", "mac os", "Windows", "iOS", None],
    "userBrowser": ["Chrome", "Firefox", "Safari", None],
    "userBrowserVersion": ["103.0.0.0", "115.0", None],
    "userDevice": ["iPhone", "Mac", None],
    "userDeviceType": ["desktop", "mobile", "tablet"],
    "userCountry": ["FR", "DE", "JP", None],
    "userCity": ["Paris", "Zürich", None],
    "userState": ["Île-de-France", None],
    "pageTitle": ["OpenReplay Blog", "Checkout", "checkout: step 2"],
    "revID": ["r1", "r2"],
    "trackerVersion": ["3.5.11", "16.0.0"],
    "userUUID": ["8998545b-553c", "aaaa-bbbb"],
}
PLANS = ["trial", "free", "Pro", None]
OPERATORS = ["contains", "is", "isNot", "notContains", "startsWith", "endsWith"]


def make_sessions(project_key: str, project_id: int, count: int) -> list[Record]:
    rng = random.Random(20240115)  # the same sessions every run
    records = []
    for n in range(count):
        record = blank_record(
            project_key, project_id, f"s{n:02d}", 1_656_437_966_000 + rng.choice([0, 1, 2, n])
        )
        for name, pool in POOLS.items():
            record[name] = rng.choice(pool)
        plan = rng.choice(PLANS)
        record["metadata"] = {"plan": plan} if plan is not None else {}
        if rng.random() < 0.3:
            record["metadata"]["team"] = rng.choice(["a", "B"])
        record["active"] = rng.random() < 0.5
        record["isSnippet"] = rng.random() < 0.5
        records.append(record)
    return records


# -- the model of docs/api.md ----------------------------------------------------------------------


def text_of(record: Record, flt: Filter) -> str | None:
    value = record["metadata"].get(flt.source) if flt.field == "metadata" else record[flt.field]
    if isinstance(value, bool):
        return "true" if value else "false"
    return value.lower() if isinstance(value, str) and value != "" else None


def matches(record: Record, flt: Filter) -> bool:
    text = text_of(record, flt)
    negated = flt.operator in ("isNot", "notContains")
    positive = {"isNot": "is", "notContains": "contains"}.get(flt.operator, flt.operator)
    needles = [v.lower() for v in flt.values]
    if text is None:
        hit = False
    elif not needles:
        hit = True
    elif positive == "is":
        hit = text in needles
    elif positive == "startsWith":
        hit = any(text.startswith(n) for n in needles)
    elif positive == "endsWith":
        hit = any(text.endswith(n) for n in needles)
    else:
        hit = any(n in text for n in needles)
    return hit != negated


def ordered(records: list[Record], query: SessionQuery) -> list[str]:
    desc = query.order == "DESC"

    def key(record: Record) -> tuple[Any, ...]:
        value = record[query.sort]
        if value is None or value == "":
            return (0, "")
        if isinstance(value, str):
            return (1, value.lower())
        return (1, value)

    by_id = sorted(records, key=lambda r: r["sessionID"], reverse=desc)
    return [r["sessionID"] for r in sorted(by_id, key=key, reverse=desc)]


# -- generated bodies ----------------------------------------------------------------------------

pool_texts = st.sampled_from(
    sorted({v for pool in POOLS.values() for v in pool if v} | {"a", "O", "ö", ""})
)
needles = (
    pool_texts | pool_texts.map(str.upper) | pool_texts.map(lambda t: t[1:3]) | st.text(max_size=6)
)
types = st.sampled_from(sorted(FILTER_TYPES)) | st.sampled_from(sorted(FILTER_TYPES)).map(str.lower)


def either(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return good | good | good | json_values


filters = st.fixed_dictionaries(
    {"type": either(types | st.sampled_from(["USERNAME", ""]))},
    optional={
        "value": either(
            st.lists(needles, max_size=3) | st.sampled_from([["true"], ["FALSE"], ["yes"]])
        ),
        "operator": either(st.sampled_from([*OPERATORS, "isnot", "STARTSWITH", "like"])),
        "source": either(st.sampled_from(["plan", "team", "missing", ""])),
    },
)
sorts = st.sampled_from([*RECORD_FIELDS, "USERID", "metadata", "nope"])
bodies = st.fixed_dictionaries(
    {},
    optional={
        "filters": either(st.lists(filters, max_size=3)),
        "sort": either(sorts),
        "order": either(st.sampled_from(["ASC", "desc", "Desc", "up"])),
        "page": either(st.integers(-1, 4)),
        "limit": either(st.integers(-1, 12) | st.sampled_from([1000, 1001])),
        "extra": json_values,
    },
)


def valid_filter(type_name: str, values: list[str], operator: str, source: str) -> Any:
    if type_name == "ACTIVE":
        values = [v for v in values if v.lower() in ("true", "false")] or ["true"]
    return {"type": type_name, "value": values, "operator": operator, "source": source}


valid_filters = st.builds(
    valid_filter,
    st.sampled_from(sorted(FILTER_TYPES)),
    st.lists(needles | st.sampled_from(["true", "False"]), max_size=3),
    st.sampled_from(OPERATORS),
    st.sampled_from(["plan", "team", "missing"]),
)
valid_bodies = st.fixed_dictionaries(
    {},
    optional={
        "filters": st.lists(valid_filters, max_size=3),
        "sort": st.sampled_from([f for f in RECORD_FIELDS if f != "metadata"]),
        "order": st.sampled_from(["ASC", "DESC", "asc"]),
        "page": st.integers(1, 4),
        "limit": st.integers(1, 12),
    },
)


@dataclass(frozen=True)
class Body:
    raw: bytes
    parsed: Any  # the JSON value, or None when raw is no JSON


def garbage(raw: bytes) -> Body:
    """A body of random bytes after ``{``, parsed as the API parses bodies (unit-tested on its
    own): a few of them are JSON after all (``{}``, ``{"a":1}``), and those are searches too."""
    try:
        return Body(raw, parse_json_object(raw))
    except InvalidInput:
        return Body(raw, None)


raw_bodies = (
    valid_bodies.map(lambda b: Body(json.dumps(b).encode(), b))
    | bodies.map(lambda b: Body(json.dumps(b).encode(), b))
    | json_values.map(lambda v: Body(json.dumps(v).encode(), v))
    | st.binary(max_size=30).map(lambda b: garbage(b"{" + b))
    | st.sampled_from([b"{}", b'{"limit":3}']).map(garbage)  # the garbage that parses, for sure
)


@pytest.fixture(params=["memory", "redis"])
def registry_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "redis":
        return {"redis_url": request.getfixturevalue("redis_url")}
    return {}


async def test_any_search_body_is_answered_as_specified(
    make_hub: HubFactory, registry_settings: dict[str, Any]
) -> None:
    hub: Hub = await make_hub(session_grace=600.0, **registry_settings)
    project = await hub.project()
    other = await hub.project("other")
    key = await hub.key(project.project_id)
    registry = hub.app[REGISTRY]
    sessions = make_sessions(project.project_key, project.project_id, 30)
    for n, record in enumerate(sessions):
        await registry.join_tab(record, f"tab{n}")
    for n, record in enumerate(make_sessions(other.project_key, other.project_id, 5)):
        await registry.join_tab(record, f"other{n}")
    live = {
        r["sessionID"]: await registry.get(project.project_key, r["sessionID"]) for r in sessions
    }
    path = f"/api/v1/{project.project_key}/assist/sessions"
    headers = {"Authorization": key.secret}
    outcomes: dict[int, int] = {}

    async def post(raw: bytes) -> tuple[int, Any]:
        response = await hub.client.post(path, data=raw, headers=headers)
        return response.status, await response.json()

    async def check(body: Body) -> None:
        status, answer = await post(body.raw)
        outcomes[status] = outcomes.get(status, 0) + 1
        query: SessionQuery | None = None
        if isinstance(body.parsed, dict):
            try:
                query = parse_query(body.parsed)
            except InvalidInput:
                query = None
        if query is None:
            assert status == 400, (status, answer, body)
            assert set(answer) == {"error"} and answer["error"], answer
            return
        assert status == 200, (answer, body)
        records = [
            r for r in live.values() if r is not None and all(matches(r, f) for f in query.filters)
        ]
        expected = ordered(records, query)
        data = answer["data"]
        if query.filters and 0 < len(expected) < len(live):
            outcomes[0] = outcomes.get(0, 0) + 1  # 0: a 200 whose filters picked some sessions
        assert data["total"] == len(expected)
        start = (query.page - 1) * query.limit
        assert [s["sessionID"] for s in data["sessions"]] == expected[start : start + query.limit]
        for record in data["sessions"]:
            assert record == live[record["sessionID"]]

    ran = await fuzz(raw_bodies, check, examples=EXAMPLES)
    assert ran >= EXAMPLES // 2
    assert outcomes.get(0, 0) > 0 and outcomes.get(400, 0) > 0, outcomes
    assert set(outcomes) <= {0, 200, 400}, outcomes
    # Searching changed nothing.
    for session_id, kept in live.items():
        assert await registry.get(project.project_key, session_id) == kept
    page = await registry.query(project.project_key, SessionQuery(limit=1000))
    assert page.total == len(sessions)
    print(f"search examples: {ran} {outcomes}")
