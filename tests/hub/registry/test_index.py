"""SessionIndex: the Assist query engine (SPEC §5.1) and autocomplete."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, get_args
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.errors import InvalidInput
from hub.records import Record
from hub.registry import index as index_module
from hub.registry.base import Filter, Operator, SessionQuery
from hub.registry.index import SessionIndex, copy_record
from hub.registry.merge import dumps_compact
from tests.hub.registry.conftest import OTHER_KEY, PROJECT_KEY, make_record

OPERATORS: tuple[Operator, ...] = get_args(Operator)


def sample() -> list[Record]:
    return [
        make_record(
            "a1",
            timestamp=3,
            userID="Ann@Example.com",
            userOs="Mac OS",
            metadata={"plan": "trial"},
            userCountry="FR",
        ),
        make_record(
            "b2",
            timestamp=1,
            userID="bob",
            userOs="Windows",
            metadata={"plan": "free", "team": "x"},
            active=False,
        ),
        make_record("c3", timestamp=3, userOs=None, userCountry="fr"),
        make_record(
            "d4",
            timestamp=2,
            userID="carol",
            userOs="mac os x",
            metadata={"plan": "Enterprise"},
            active=False,
            userCountry="DE",
        ),
    ]


@pytest.fixture
def index() -> SessionIndex:
    index = SessionIndex()
    for record in sample():
        index.upsert(record)
    index.upsert(make_record("a1", project_key=OTHER_KEY, userOs="Mac OS"))
    return index


def ids(index: SessionIndex, query: SessionQuery, project_key: str = PROJECT_KEY) -> list[str]:
    return [r["sessionID"] for r in index.query(project_key, query).sessions]


def matching(index: SessionIndex, *filters: Filter) -> list[str]:
    """The ids matching the filters, in sessionID order."""
    return sorted(ids(index, SessionQuery(filters=filters, sort="sessionID", order="ASC")))


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (Filter("userOs", ("mac",)), ["a1", "d4"]),
        (Filter("userOs", ("MAC OS",), "is"), ["a1"]),
        (Filter("userOs", ("mac os",), "isNot"), ["b2", "c3", "d4"]),
        (Filter("userOs", ("MAC",), "notContains"), ["b2", "c3"]),
        (Filter("userOs", ("Ma",), "startsWith"), ["a1", "d4"]),
        (Filter("userOs", ("OS",), "endsWith"), ["a1"]),
        (Filter("userOs", ("os x", "win"), "endsWith"), ["d4"]),
        (Filter("userOs", ("os x", "win"), "startsWith"), ["b2"]),
        (Filter("userOs", ("windows", "mac os"), "is"), ["a1", "b2"]),
        (Filter("userOs", ("windows", "mac os"), "isNot"), ["c3", "d4"]),
        (Filter("userOs", ("win", "x"), "notContains"), ["a1", "c3"]),
        (Filter("userOs", ("nothing",)), []),
        (Filter("userID", ("EXAMPLE",)), ["a1"]),
        (Filter("userCountry", ("fr",), "is"), ["a1", "c3"]),
        (Filter("sessionID", ("B2",), "is"), ["b2"]),
    ],
)
def test_each_operator_ignores_case_and_ors_its_values(
    index: SessionIndex, flt: Filter, expected: list[str]
) -> None:
    assert matching(index, flt) == expected


@pytest.mark.parametrize(
    ("operator", "expected"),
    [
        ("contains", ["a1", "b2", "d4"]),
        ("is", ["a1", "b2", "d4"]),
        ("startsWith", ["a1", "b2", "d4"]),
        ("endsWith", ["a1", "b2", "d4"]),
        ("isNot", ["c3"]),
        ("notContains", ["c3"]),
    ],
)
def test_no_values_means_set_and_not_empty_or_its_negation(
    index: SessionIndex, operator: Operator, expected: list[str]
) -> None:
    # userID is "" on c3 (empty) and set elsewhere; userOs is None on c3 (unset).
    assert matching(index, Filter("userID", (), operator)) == expected
    assert matching(index, Filter("userOs", (), operator)) == expected


def test_an_unset_attribute_matches_only_negative_operators(index: SessionIndex) -> None:
    for operator in OPERATORS:
        hit = "c3" in matching(index, Filter("userOs", ("",), operator))
        assert hit is (operator in ("isNot", "notContains")), operator


def test_metadata_filters_read_the_named_key(index: SessionIndex) -> None:
    assert matching(index, Filter("metadata", ("TRIAL", "free"), source="plan")) == ["a1", "b2"]
    assert matching(index, Filter("metadata", ("enterprise",), "is", "plan")) == ["d4"]
    assert matching(index, Filter("metadata", (), source="team")) == ["b2"]
    assert matching(index, Filter("metadata", (), "isNot", "team")) == ["a1", "c3", "d4"]
    assert matching(index, Filter("metadata", ("x",), "notContains", "team")) == [
        "a1",
        "c3",
        "d4",
    ]
    assert matching(index, Filter("metadata", ("trial",), source="Plan")) == []  # keys exact
    assert matching(index, Filter("metadata", (), source="nokey")) == []


def test_a_metadata_filter_without_source_is_refused(index: SessionIndex) -> None:
    with pytest.raises(InvalidInput):
        index.query(PROJECT_KEY, SessionQuery(filters=(Filter("metadata", ("x",)),)))


def test_an_unknown_operator_is_refused(index: SessionIndex) -> None:
    bad = Filter("userOs", ("x",), "like")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        index.query(PROJECT_KEY, SessionQuery(filters=(bad,)))


def test_active_compares_true_and_false_against_the_bool(index: SessionIndex) -> None:
    assert matching(index, Filter("active", ("TRUE",), "is")) == ["a1", "c3"]
    assert matching(index, Filter("active", ("false",), "is")) == ["b2", "d4"]
    assert matching(index, Filter("active", ("true", "false"), "is")) == ["a1", "b2", "c3", "d4"]
    assert matching(index, Filter("active", ("true",), "isNot")) == ["b2", "d4"]
    assert matching(index, Filter("active", ("yes",), "is")) == []


def test_filters_are_anded(index: SessionIndex) -> None:
    mac = Filter("userOs", ("mac",))
    assert matching(index, mac, Filter("active", ("false",), "is")) == ["d4"]
    assert matching(index, mac, Filter("userCountry", ("fr",), "isNot")) == ["d4"]
    assert matching(index, mac, Filter("userOs", ("x",), "notContains")) == ["a1"]
    assert matching(index, mac, Filter("userID", ("bob",))) == []


@pytest.mark.parametrize(
    ("sort", "asc"),
    [
        ("timestamp", ["b2", "d4", "a1", "c3"]),  # a1 and c3 tie on 3
        ("userOs", ["c3", "a1", "d4", "b2"]),  # unset lowest
        ("userID", ["c3", "a1", "b2", "d4"]),  # "" lowest, case ignored
        ("active", ["b2", "d4", "a1", "c3"]),
        ("isSnippet", ["a1", "b2", "c3", "d4"]),  # all equal: sessionID only
        ("userCountry", ["b2", "d4", "a1", "c3"]),  # FR and fr tie
        ("metadata", ["d4", "b2", "a1", "c3"]),  # compact JSON text
        ("projectId", ["a1", "b2", "c3", "d4"]),
        ("notAField", ["a1", "b2", "c3", "d4"]),
    ],
)
def test_sort_on_any_field_both_ways_with_ties_on_session_id(
    index: SessionIndex, sort: str, asc: list[str]
) -> None:
    assert ids(index, SessionQuery(sort=sort, order="ASC")) == asc
    assert ids(index, SessionQuery(sort=sort, order="DESC")) == asc[::-1]


def test_default_query_lists_newest_first(index: SessionIndex) -> None:
    result = index.query(PROJECT_KEY, SessionQuery())
    assert result.total == 4
    assert [r["sessionID"] for r in result.sessions] == ["c3", "a1", "d4", "b2"]
    assert result.sessions[0] == sample()[2]


@pytest.mark.parametrize("sort", ["timestamp", "userOs", "active", "metadata"])
@pytest.mark.parametrize("order", ["ASC", "DESC"])
def test_pages_never_overlap_or_skip(sort: str, order: Any) -> None:
    index = SessionIndex()
    for i in range(57):
        index.upsert(
            make_record(
                f"s{i:02}", timestamp=i % 5, userOs=["a", "B", None][i % 3], active=i % 2 == 0
            )
        )
    whole = ids(index, SessionQuery(sort=sort, order=order, limit=1000))
    assert sorted(whole) == sorted(f"s{i:02}" for i in range(57))
    for limit in (1, 7, 20, 57, 100):
        pages: list[str] = []
        page = 1
        while True:
            result = index.query(
                PROJECT_KEY, SessionQuery(sort=sort, order=order, page=page, limit=limit)
            )
            assert result.total == 57
            if not result.sessions:
                break
            assert len(result.sessions) <= limit
            pages += [r["sessionID"] for r in result.sessions]
            page += 1
        assert pages == whole, limit


def test_total_counts_every_match_whatever_the_page(index: SessionIndex) -> None:
    mac = (Filter("userOs", ("mac",)),)
    assert index.query(PROJECT_KEY, SessionQuery(filters=mac, limit=1)).total == 2
    far = index.query(PROJECT_KEY, SessionQuery(filters=mac, page=9, limit=1))
    assert (far.total, far.sessions) == (2, [])
    assert index.query("noSuchProject", SessionQuery()).total == 0


@pytest.mark.parametrize(("page", "limit"), [(0, 10), (1, 0), (-1, 5)])
def test_bad_paging_is_refused(index: SessionIndex, page: int, limit: int) -> None:
    with pytest.raises(InvalidInput):
        index.query(PROJECT_KEY, SessionQuery(page=page, limit=limit))


def test_projects_are_apart(index: SessionIndex) -> None:
    assert ids(index, SessionQuery(), OTHER_KEY) == ["a1"]
    assert len(index) == 5
    assert index.get(OTHER_KEY, "b2") is None


def test_upsert_replaces_and_reindexes(index: SessionIndex) -> None:
    index.upsert(make_record("b2", timestamp=9, userOs="Linux", metadata={"plan": "trial"}))
    assert ids(index, SessionQuery(limit=1)) == ["b2"]
    assert matching(index, Filter("userOs", ("windows",))) == []
    assert matching(index, Filter("userOs", ("linux",))) == ["b2"]
    assert matching(index, Filter("metadata", (), source="team")) == []
    assert matching(index, Filter("metadata", ("trial",), source="plan")) == ["a1", "b2"]
    assert index.autocomplete(PROJECT_KEY, "userOs", "", 10) == [
        "Linux",
        "Mac OS",
        "mac os x",
    ]
    assert len(index) == 5


def test_remove_forgets_everything_of_a_session(index: SessionIndex) -> None:
    removed = index.remove(PROJECT_KEY, "a1")
    assert removed is not None and removed["userID"] == "Ann@Example.com"
    assert index.remove(PROJECT_KEY, "a1") is None
    assert index.remove("noSuchProject", "a1") is None
    assert index.get(PROJECT_KEY, "a1") is None
    assert "a1" not in ids(index, SessionQuery())
    assert matching(index, Filter("metadata", ("trial",), source="plan")) == []
    assert index.autocomplete(PROJECT_KEY, "userOs", "mac", 10) == ["mac os x"]
    assert ids(index, SessionQuery(), OTHER_KEY) == ["a1"]
    assert len(index) == 4


def test_clear_and_records(index: SessionIndex) -> None:
    assert sorted(r["sessionID"] for r in index.records()) == ["a1", "a1", "b2", "c3", "d4"]
    index.clear()
    assert len(index) == 0
    assert list(index.records()) == []
    assert index.query(PROJECT_KEY, SessionQuery()).total == 0


def test_nothing_handed_in_or_out_changes_the_index() -> None:
    index = SessionIndex()
    record = make_record("s1", metadata={"plan": "free"})
    index.upsert(record)
    record["metadata"]["plan"] = "changed"
    record["userOs"] = "changed"
    for got in (
        index.get(PROJECT_KEY, "s1"),
        index.query(PROJECT_KEY, SessionQuery()).sessions[0],
        next(index.records()),
    ):
        assert got is not None
        got["metadata"]["plan"] = "changed"
    assert index.get(PROJECT_KEY, "s1") == make_record("s1", metadata={"plan": "free"})
    assert matching(index, Filter("metadata", ("changed",), source="plan")) == []


def test_an_index_changed_step_by_step_equals_one_built_from_the_final_records() -> None:
    """Replacing records (fields unchanged, changed, unset, of another type) keeps every column
    and count as a fresh index of the final records would have them."""
    index = SessionIndex()
    steps = [
        make_record("s1", userOs="Mac OS", active=True, metadata={"plan": "free"}),
        make_record("s2", userOs="Windows", userID="Bob", metadata={"team": "x"}),
        make_record("s1", userOs="Mac OS", active=1, metadata={"plan": "free"}),
        make_record("s2", userOs=None, userID="bob", metadata={"team": "x", "plan": 3}),
        make_record("s1", userOs="mac os", active=1, metadata={}),
    ]
    for record in steps:
        index.upsert(record)
    fresh = SessionIndex()
    for record in steps[-2:]:
        fresh.upsert_owned(copy_record(record))
    for field in ("userOs", "userID", "active", "metadata.plan", "metadata.team"):
        assert index.autocomplete(PROJECT_KEY, field, "", 10) == fresh.autocomplete(
            PROJECT_KEY, field, "", 10
        ), field
    for flt in (
        Filter("active", ("1",), "is"),
        Filter("userOs", ("MAC",)),
        Filter("userID", ("bob",), "is"),
        Filter("metadata", ("3",), "is", "plan"),
    ):
        assert matching(index, flt) == matching(fresh, flt), flt


def test_upsert_owned_keeps_the_record_and_copy_record_shares_nothing_mutable() -> None:
    record = make_record("s1", metadata={"plan": "free", "tags": ["a"]})
    copied = copy_record(record)
    assert copied == record
    assert copied["metadata"] is not record["metadata"]
    assert copied["metadata"]["tags"] is not record["metadata"]["tags"]
    index = SessionIndex()
    index.upsert_owned(copied)
    assert index.peek(PROJECT_KEY, "s1") is copied
    index.upsert(record)
    assert index.peek(PROJECT_KEY, "s1") is not record


def test_autocomplete_most_frequent_first_then_alphabetical() -> None:
    index = SessionIndex()
    for i, name in enumerate(["Mac OS", "Windows", "Mac OS", "mac os x", "", "Ubuntu", "Mac OS"]):
        index.upsert(make_record(f"s{i}", userOs=name or None, userID=name, metadata={"m": name}))
    assert index.autocomplete(PROJECT_KEY, "userOs", "MAC", 10) == ["Mac OS", "mac os x"]
    assert index.autocomplete(PROJECT_KEY, "userOs", "", 3) == ["Mac OS", "mac os x", "Ubuntu"]
    assert index.autocomplete(PROJECT_KEY, "userID", "", 10) == [
        "Mac OS",
        "mac os x",
        "Ubuntu",
        "Windows",
    ]  # "" is never a value
    assert index.autocomplete(PROJECT_KEY, "metadata.m", "dow", 10) == ["Windows"]
    assert index.autocomplete(PROJECT_KEY, "metadata.none", "", 10) == []
    assert index.autocomplete(PROJECT_KEY, "userOs", "linux", 10) == []
    assert index.autocomplete(PROJECT_KEY, "userOs", "", 0) == []
    assert index.autocomplete(OTHER_KEY, "userOs", "", 10) == []
    assert index.autocomplete(PROJECT_KEY, "projectKey", "ayy", 10) == [PROJECT_KEY]


def test_filtered_timestamp_pages_agree_when_matches_are_sparse_or_dense() -> None:
    index = SessionIndex()
    records = [
        make_record(f"s{i:03}", timestamp=i // 4, userOs="rare" if i % 20 == 0 else "common")
        for i in range(200)
    ]
    for record in records:
        index.upsert(record)
    for needle, count in (("rare", 10), ("common", 190)):
        flt = (Filter("userOs", (needle,), "is"),)
        for order in ("ASC", "DESC"):
            expected = sorted(
                (r for r in records if r["userOs"] == needle),
                key=lambda r: (r["timestamp"], r["sessionID"]),
                reverse=order == "DESC",
            )
            got = index.query(PROJECT_KEY, SessionQuery(filters=flt, order=order, page=2, limit=4))
            assert got.total == count
            assert got.sessions == expected[4:8]


# -- the index against a plain reference implementation ---------------------------------------


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def reference(records: list[Record], query: SessionQuery) -> tuple[int, list[str]]:
    """SPEC §5.1 written the obvious, slow way."""

    def holds(record: Record, flt: Filter) -> bool:
        raw = record["metadata"].get(flt.source) if flt.field == "metadata" else record[flt.field]
        text = _text(raw)
        positive = {"isNot": "is", "notContains": "contains"}.get(flt.operator, flt.operator)
        if text is None:
            hit = False
        elif not flt.values:
            hit = text != ""
        else:
            low = text.lower()
            tests: dict[str, Callable[[str], bool]] = {
                "contains": lambda v: v in low,
                "is": lambda v: v == low,
                "startsWith": low.startswith,
                "endsWith": low.endswith,
            }
            hit = any(tests[positive](v.lower()) for v in flt.values)
        return hit != (flt.operator in ("isNot", "notContains"))

    def key(record: Record) -> tuple[Any, ...]:
        value = record.get(query.sort)
        if value is None:
            rank: tuple[Any, ...] = (0, 0)
        elif isinstance(value, bool | int):
            rank = (1, value)
        elif isinstance(value, str):
            rank = (2, value.lower())
        else:
            rank = (3, dumps_compact(value))
        return (*rank, record["sessionID"])

    matches = [r for r in records if all(holds(r, f) for f in query.filters)]
    matches.sort(key=key, reverse=query.order == "DESC")
    start = (query.page - 1) * query.limit
    return len(matches), [r["sessionID"] for r in matches[start : start + query.limit]]


SESSION_IDS = [f"s{i}" for i in range(20)]
# The index picks how to answer by size; these force each choice both ways.
STRATEGIES: list[dict[str, int]] = [
    {},
    # test distinct values, look candidates up, walk the time order: always
    {"_DISTINCT_FRACTION": 0, "_RESTRICT_FRACTION": 0, "_DENSE_FRACTION": 10**9},
    # never
    {"_DISTINCT_FRACTION": 10**9, "_RESTRICT_FRACTION": 10**9, "_DENSE_FRACTION": 0},
]
texts = st.sampled_from(["Mac OS", "mac os", "Windows", "", "os", "Ü"])
records_st = st.builds(
    lambda sid, ts, os_name, uid, active, meta: make_record(
        sid, timestamp=ts, userOs=os_name, userID=uid, active=active, metadata=meta
    ),
    sid=st.sampled_from(SESSION_IDS),
    ts=st.integers(0, 3),
    os_name=st.one_of(st.none(), texts),
    uid=texts,
    active=st.booleans(),
    meta=st.dictionaries(st.sampled_from(["plan", "team"]), texts, max_size=2),
)
filters_st = st.builds(
    Filter,
    field=st.sampled_from(["userOs", "userID", "active", "metadata", "sessionID"]),
    values=st.lists(
        st.sampled_from(["", "mac", "OS", "true", "s1", "ü", "windows"]), max_size=3
    ).map(tuple),
    operator=st.sampled_from(OPERATORS),
    source=st.sampled_from(["plan", "team"]),
)
queries_st = st.builds(
    SessionQuery,
    filters=st.lists(filters_st, max_size=3).map(tuple),
    sort=st.sampled_from(["timestamp", "userOs", "userID", "active", "metadata", "sessionID"]),
    order=st.sampled_from(["ASC", "DESC"]),
    page=st.integers(1, 4),
    limit=st.integers(1, 5),
)


@settings(max_examples=400, deadline=None)
@given(
    first=st.lists(records_st, min_size=6, max_size=30),
    later=st.lists(st.one_of(records_st, st.sampled_from(SESSION_IDS)), max_size=10),
    query=queries_st,
)
def test_the_index_agrees_with_the_reference(
    first: list[Record], later: list[Record | str], query: SessionQuery
) -> None:
    steps = [*first, *later]
    index = SessionIndex()
    live: dict[str, Record] = {}
    for step in steps:  # upserts (new or replacing) and removals, in any order
        if isinstance(step, str):
            assert (index.remove(PROJECT_KEY, step) is not None) is (
                live.pop(step, None) is not None
            )
        else:
            index.upsert(step)
            live[step["sessionID"]] = step
    expected = reference(list(live.values()), query)
    for strategy in STRATEGIES:  # every way the index may take must give the same answer
        with contextlib.ExitStack() as stack:
            for name, value in strategy.items():
                stack.enter_context(mock.patch.object(index_module, name, value))
            result = index.query(PROJECT_KEY, query)
        assert (result.total, [r["sessionID"] for r in result.sessions]) == expected, strategy
    assert len(index) == len(live)
