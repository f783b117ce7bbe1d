"""RecordMatcher gives, record by record, exactly the answer of SessionIndex.query's filtering."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.errors import InvalidInput
from hub.records import FILTER_TYPES, Record
from hub.registry.base import Filter, Operator, SessionQuery
from hub.registry.index import SessionIndex
from hub.registry.match import RecordMatcher, filters_key
from tests.hub.registry.conftest import PROJECT_KEY, make_record

OPERATORS: tuple[Operator, ...] = get_args(Operator)
# Every field a filter type reads, plus two without an index column (built on demand).
FIELDS = sorted(set(FILTER_TYPES.values()) | {"isSnippet", "timestamp"})
# Texts that contain, start or end one another in several cases and scripts.
WORDS = ["", "mac", "Mac OS", "OS", "windows", "Ünïcode", "ü", "true", "false", "1", "s1", "İ"]

texts = st.sampled_from(WORDS)
records_st = st.builds(
    lambda sid, ts, fields, meta, active, snippet: make_record(
        sid, timestamp=ts, metadata=meta, active=active, isSnippet=snippet, **fields
    ),
    sid=st.sampled_from(["s1", "S1x", "mac", "a.b", "os:1", "z"]),
    ts=st.integers(0, 12),
    fields=st.dictionaries(
        st.sampled_from([f for f in FIELDS if f not in {"metadata", "active", "sessionID"}]),
        st.one_of(st.none(), texts),
    ).map(lambda d: {k: v for k, v in d.items() if k not in {"timestamp", "isSnippet"}}),
    meta=st.dictionaries(st.sampled_from(["plan", "team", "Plan"]), texts, max_size=3),
    active=st.booleans(),
    snippet=st.booleans(),
)
filters_st = st.builds(
    Filter,
    field=st.sampled_from(FIELDS),
    values=st.lists(st.one_of(texts, texts.map(str.upper)), max_size=3).map(tuple),
    operator=st.sampled_from(OPERATORS),
    source=st.sampled_from(["plan", "team", "Plan", "absent"]),
)


@settings(max_examples=600, deadline=None)
@given(
    records=st.lists(records_st, min_size=1, max_size=25, unique_by=lambda r: r["sessionID"]),
    filters=st.lists(filters_st, max_size=3).map(tuple),
)
def test_the_matcher_agrees_with_the_index(
    records: list[Record], filters: tuple[Filter, ...]
) -> None:
    index = SessionIndex()
    for record in records:
        index.upsert(record)
    result = index.query(PROJECT_KEY, SessionQuery(filters=filters, limit=len(records)))
    expected = {r["sessionID"] for r in result.sessions}
    matcher = RecordMatcher(filters)
    assert {r["sessionID"] for r in records if matcher(r)} == expected


@settings(max_examples=200, deadline=None)
@given(
    records=st.lists(records_st, min_size=1, max_size=10),
    filters=st.lists(filters_st, min_size=1, max_size=4).map(tuple),
    data=st.data(),
)
def test_equal_keys_select_the_same_sessions(
    records: list[Record], filters: tuple[Filter, ...], data: Any
) -> None:
    # The same filters in another order, with values shuffled, repeated and in another case.
    shuffled = data.draw(st.permutations(filters))
    rewritten = tuple(
        Filter(
            f.field, tuple(data.draw(st.permutations(f.values))) + f.values, f.operator, f.source
        )
        for f in shuffled
    )
    rewritten = tuple(
        Filter(f.field, tuple(v.upper() for v in f.values), f.operator, f.source) for f in rewritten
    )
    assert filters_key(rewritten) == filters_key(filters)
    one, other = RecordMatcher(filters), RecordMatcher(rewritten)
    assert [one(r) for r in records] == [other(r) for r in records]


def test_different_filters_have_different_keys() -> None:
    keys = {
        filters_key(()),
        filters_key((Filter("userOs", ("mac",)),)),
        filters_key((Filter("userOs", ("mac",), "is"),)),
        filters_key((Filter("userOs", ("mac", "os")),)),
        filters_key((Filter("userBrowser", ("mac",)),)),
        filters_key((Filter("metadata", ("mac",), source="plan"),)),
        filters_key((Filter("metadata", ("mac",), source="team"),)),
        filters_key((Filter("userOs", ("mac",)), Filter("userID", ("a",)))),
    }
    assert len(keys) == 8


def test_unset_and_empty_fields() -> None:
    record = make_record("s1", userOs=None, userID="", metadata={"plan": ""})
    assert not RecordMatcher([Filter("userOs", ())])(record)
    assert RecordMatcher([Filter("userOs", (), "isNot")])(record)
    assert not RecordMatcher([Filter("userID", ())])(record)
    assert RecordMatcher([Filter("userID", ("",), "is")])(record)
    assert not RecordMatcher([Filter("metadata", (), source="plan")])(record)
    assert RecordMatcher([Filter("metadata", ("x",), "notContains", source="team")])(record)
    assert RecordMatcher([Filter("active", ("TRUE",), "is")])(record)


@pytest.mark.parametrize(
    "flt",
    [
        Filter("userOs", ("mac",), "like"),  # type: ignore[arg-type]
        Filter("metadata", ("x",)),
    ],
)
def test_bad_filters_are_refused_as_by_the_index(flt: Filter) -> None:
    index = SessionIndex()
    index.upsert(make_record("s1", metadata={"plan": "x"}))
    with pytest.raises(InvalidInput):
        index.query(PROJECT_KEY, SessionQuery(filters=(flt,)))
    with pytest.raises(InvalidInput):
        RecordMatcher([flt])
