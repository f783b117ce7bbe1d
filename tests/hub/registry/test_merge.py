"""Merging session data and measuring it incrementally."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.records import stored_data
from hub.registry.merge import DataSize, copy_json, deep_merge, json_size
from tests.hub.registry.conftest import make_record


def test_nested_dicts_merge_and_everything_else_replaces() -> None:
    base = {"a": {"b": 1, "c": {"d": 2}}, "l": [1, 2], "s": "x", "n": 1}
    changes = {"a": {"c": {"e": 3}}, "l": [3], "s": None, "new": {"k": "v"}, "n": {"m": 1}}

    merged = deep_merge(base, changes)

    assert merged == {
        "a": {"b": 1, "c": {"d": 2, "e": 3}},
        "l": [3],
        "s": None,
        "n": {"m": 1},
        "new": {"k": "v"},
    }
    assert list(merged) == ["a", "l", "s", "n", "new"]  # old keys keep their place


def test_merging_changes_neither_input_nor_shares_with_them() -> None:
    base = {"a": {"b": 1}}
    changes: dict[str, Any] = {"a": {"c": [1]}, "d": {"e": [2]}}

    merged = deep_merge(base, changes)
    changes["a"]["c"].append(99)
    changes["d"]["e"].append(99)

    assert base == {"a": {"b": 1}}
    assert merged == {"a": {"b": 1, "c": [1]}, "d": {"e": [2]}}


def test_copy_json_is_deep() -> None:
    value = {"a": [{"b": 1}], "c": "d"}
    copy = copy_json(value)
    copy["a"][0]["b"] = 2
    assert value == {"a": [{"b": 1}], "c": "d"}


def test_json_size_counts_utf8_bytes_of_compact_json() -> None:
    assert json_size({"a": [1, "é"]}) == len('{"a":[1,"é"]}'.encode())
    assert json_size("✓") == 5


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)
steps_st = st.lists(
    st.one_of(
        st.tuples(
            st.just("record"),
            st.dictionaries(
                st.sampled_from(["pageTitle", "userID", "metadata"]),
                st.text(max_size=4),
                max_size=2,
            ),
        ),
        st.tuples(
            st.just("variables"), st.dictionaries(st.text(max_size=3), json_values, max_size=3)
        ),
        st.tuples(
            st.just("message"), st.dictionaries(st.text(max_size=3), json_values, max_size=3)
        ),
    ),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(steps=steps_st)
def test_the_running_size_equals_the_size_of_the_whole(steps: list[tuple[str, Any]]) -> None:
    record = make_record("s1", pageTitle="Ünïcode ✓")
    variables: dict[str, Any] = {}
    messages: list[Any] = []
    size = DataSize.of(record)
    for kind, payload in steps:
        if kind == "record":
            record = deep_merge(record, payload)
            size = size.after(record, None, ())
        elif kind == "variables":
            variables = deep_merge(variables, payload)
            size = size.after(None, variables, list(payload))
        else:
            messages.append(payload)
            size = size.with_message(payload)
        assert size.total == json_size(stored_data(record, variables, messages))
    assert DataSize.of(record, variables, messages).total == size.total
