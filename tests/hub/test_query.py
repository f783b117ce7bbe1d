"""hub.query: every Assist search input is parsed to a SessionQuery or refused naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from hub.errors import InvalidInput
from hub.query import (
    MAX_FILTERS,
    MAX_TEXT_BYTES,
    MAX_VALUES,
    autocomplete_field,
    filter_type,
    parse_filter,
    parse_filters,
    parse_query,
    parse_query_params,
    parse_text,
)
from hub.records import FILTER_TYPES, RECORD_FIELDS
from hub.registry.base import Filter, SessionQuery


def refused(body: dict[str, Any]) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        parse_query(body)
    return info.value


def test_empty_body_is_the_default_query() -> None:
    assert parse_query({}) == SessionQuery(
        filters=(), sort="timestamp", order="DESC", page=1, limit=200
    )


def test_null_fields_mean_absent() -> None:
    body = {"sort": None, "order": None, "page": None, "limit": None, "filters": None}
    assert parse_query(body) == SessionQuery()


def test_unknown_body_keys_are_ignored() -> None:
    assert parse_query({"foo": 1, "startDate": "x"}) == SessionQuery()


def test_the_seed_search_example() -> None:
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
    assert parse_query(body) == SessionQuery(
        filters=(
            Filter(field="metadata", values=("trial", "free"), source="plan"),
            Filter(field="userID", values=("openreplay",)),
        ),
        sort="timestamp",
        order="DESC",
        page=1,
        limit=10,
    )


@pytest.mark.parametrize("field", RECORD_FIELDS)
def test_every_record_field_but_metadata_sorts_in_any_case(field: str) -> None:
    if field == "metadata":
        assert refused({"sort": field}).field == "sort"
        return
    for spelling in (field, field.lower(), field.upper()):
        assert parse_query({"sort": spelling}).sort == field


@pytest.mark.parametrize("sort", ["", "nope", "metadata.plan", "USEROS_", " timestamp"])
def test_unknown_sort_is_refused_naming_sort(sort: str) -> None:
    error = refused({"sort": sort})
    assert error.field == "sort"
    assert str(error).startswith("sort ")


@pytest.mark.parametrize(("raw", "order"), [("asc", "ASC"), ("Desc", "DESC"), ("ASC", "ASC")])
def test_order_in_any_case(raw: str, order: str) -> None:
    assert parse_query({"order": raw}).order == order


@pytest.mark.parametrize("order", ["", "up", "ascending", 1, True, ["ASC"]])
def test_bad_order_is_refused(order: Any) -> None:
    assert refused({"order": order}).field == "order"


@pytest.mark.parametrize("sort", [1, True, ["timestamp"], {"a": 1}])
def test_sort_of_wrong_type_is_refused(sort: Any) -> None:
    assert "must be a string" in str(refused({"sort": sort}))


@pytest.mark.parametrize(("name", "low", "high"), [("page", 1, 1_000_000), ("limit", 1, 1000)])
def test_page_and_limit_ranges(name: str, low: int, high: int) -> None:
    assert getattr(parse_query({name: low}), name) == low
    assert getattr(parse_query({name: high}), name) == high
    for bad in (low - 1, high + 1, -5, 10**30):
        error = refused({name: bad})
        assert error.field == name
        assert f"between {low} and {high}" in str(error)


@pytest.mark.parametrize("name", ["page", "limit"])
@pytest.mark.parametrize("bad", [True, False, 1.0, 2.5, "2", "", [1], {"n": 1}])
def test_page_and_limit_must_be_json_integers(name: str, bad: Any) -> None:
    error = refused({name: bad})
    assert error.field == name
    assert str(error) == f"{name} must be an integer"


def test_query_params_take_numeric_strings() -> None:
    params = {"page": "3", "limit": "25", "sort": "userid", "order": "asc"}
    assert parse_query_params(params) == SessionQuery(sort="userID", order="ASC", page=3, limit=25)
    assert parse_query_params({}) == SessionQuery()
    assert parse_query_params({"page": "+2"}).page == 2


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"page": "0"}, "page"),
        ({"page": "-1"}, "page"),
        ({"page": "1.0"}, "page"),
        ({"page": ""}, "page"),
        ({"page": "one"}, "page"),
        ({"page": " 1"}, "page"),
        ({"page": "1" * 30}, "page"),
        ({"page": "\u0661"}, "page"),  # an Arabic-Indic digit one: not an ASCII number
        ({"limit": "1001"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "true"}, "limit"),
        ({"sort": "nope"}, "sort"),
        ({"order": "sideways"}, "order"),
    ],
)
def test_bad_query_params_name_their_field(params: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_query_params(params)
    assert info.value.field == field
    assert str(info.value).startswith(field + " ")


@pytest.mark.parametrize("type_name", sorted(FILTER_TYPES))
def test_every_filter_type_in_any_case(type_name: str) -> None:
    value = ["true"] if type_name == "ACTIVE" else ["X"]
    for spelling in (type_name, type_name.lower(), type_name.capitalize()):
        raw = {"type": spelling, "value": value, "source": "plan"}
        flt = parse_filter(raw)
        assert flt.field == FILTER_TYPES[type_name]
        assert flt.values == (value[0].lower(),)
        # source is kept for METADATA only: elsewhere it means nothing.
        assert flt.source == ("plan" if type_name == "METADATA" else None)


def test_aliases_read_the_same_field() -> None:
    assert parse_filter({"type": "USERANONYMOUSID"}).field == "userUUID"
    assert parse_filter({"type": "useruuid"}).field == "userUUID"
    assert parse_filter({"type": "PLATFORM"}).field == "userDeviceType"


@pytest.mark.parametrize(
    ("raw", "operator"),
    [
        ("contains", "contains"),
        ("is", "is"),
        ("isNot", "isNot"),
        ("isnot", "isNot"),
        ("notContains", "notContains"),
        ("NOTCONTAINS", "notContains"),
        ("startsWith", "startsWith"),
        ("startswith", "startsWith"),
        ("endsWith", "endsWith"),
        ("ENDSWITH", "endsWith"),
        (None, "contains"),
    ],
)
def test_operators_in_any_case(raw: str | None, operator: str) -> None:
    assert parse_filter({"type": "USEROS", "value": ["m"], "operator": raw}).operator == operator


def test_values_are_lower_cased_and_deduplicated_in_order() -> None:
    flt = parse_filter({"type": "USEROS", "value": ["Mac OS", "WINDOWS", "mac os", "Linux"]})
    assert flt.values == ("mac os", "windows", "linux")


def test_no_value_means_the_attribute_is_set() -> None:
    assert parse_filter({"type": "USERID"}).values == ()
    assert parse_filter({"type": "USERID", "value": []}).values == ()
    assert parse_filter({"type": "USERID", "value": None}).values == ()


def test_metadata_source_keeps_its_case() -> None:
    assert parse_filter({"type": "metadata", "source": "Plan"}).source == "Plan"


@pytest.mark.parametrize(
    ("filters", "field", "words"),
    [
        ("USERID", "filters", "must be a list"),
        ({"type": "USERID"}, "filters", "must be a list"),
        (["USERID"], "filters[0]", "must be an object"),
        ([None], "filters[0]", "must be an object"),
        ([{}], "filters[0].type", "is required"),
        ([{"type": None}], "filters[0].type", "is required"),
        ([{"type": 5}], "filters[0].type", "must be a string"),
        ([{"type": "USERID"}, {"type": "USERNAME"}], "filters[1].type", "unknown filter type"),
        ([{"type": ""}], "filters[0].type", "unknown filter type"),
        ([{"type": "userId", "operator": "like"}], "filters[0].operator", "unknown operator"),
        ([{"type": "userId", "operator": ""}], "filters[0].operator", "unknown operator"),
        ([{"type": "userId", "operator": 1}], "filters[0].operator", "must be a string"),
        ([{"type": "METADATA"}], "filters[0].source", "is required"),
        ([{"type": "METADATA", "source": ""}], "filters[0].source", "is required"),
        ([{"type": "METADATA", "source": 3}], "filters[0].source", "must be a string"),
        ([{"type": "userId", "source": ["x"]}], "filters[0].source", "must be a string"),
        ([{"type": "userId", "value": "a"}], "filters[0].value", "must be a list"),
        ([{"type": "userId", "value": {"a": 1}}], "filters[0].value", "must be a list"),
        ([{"type": "userId", "value": ["a", 1]}], "filters[0].value[1]", "must be a string"),
        ([{"type": "userId", "value": [None]}], "filters[0].value[0]", "must be a string"),
        ([{"type": "userId", "value": [True]}], "filters[0].value[0]", "must be a string"),
        ([{"type": "userId", "value": [["a"]]}], "filters[0].value[0]", "must be a string"),
        ([{"type": "ACTIVE", "value": ["yes"]}], "filters[0].value[0]", '"true" or "false"'),
        ([{"type": "ACTIVE", "value": ["TRUE", ""]}], "filters[0].value[1]", '"true" or "false"'),
    ],
)
def test_bad_filters_name_the_field(filters: Any, field: str, words: str) -> None:
    error = refused({"filters": filters})
    assert error.field == field
    assert str(error).startswith(field + " ")
    assert words in str(error)


def test_active_values_any_case() -> None:
    assert parse_filter({"type": "active", "value": ["TRUE", "False"]}).values == (
        "true",
        "false",
    )


def test_size_limits() -> None:
    many = [{"type": "USERID"}] * MAX_FILTERS
    assert len(parse_filters(many)) == MAX_FILTERS
    assert refused({"filters": [*many, {"type": "USERID"}]}).field == "filters"

    values = [f"v{i}" for i in range(MAX_VALUES)]
    assert len(parse_filter({"type": "USERID", "value": values}).values) == MAX_VALUES
    error = refused({"filters": [{"type": "USERID", "value": [*values, "x"]}]})
    assert error.field == "filters[0].value"

    longest = "a" * MAX_TEXT_BYTES
    assert parse_filter({"type": "USERID", "value": [longest]}).values == (longest,)
    error = refused({"filters": [{"type": "USERID", "value": ["ok", longest + "a"]}]})
    assert error.field == "filters[0].value[1]"
    # The limit is bytes: 400 two-byte characters fit, 600 do not.
    assert parse_filter({"type": "USERID", "value": ["é" * 400]}).values == ("é" * 400,)
    error = refused({"filters": [{"type": "USERID", "value": ["é" * 600]}]})
    assert error.field == "filters[0].value[0]"
    error = refused({"filters": [{"type": "METADATA", "source": "k" * (MAX_TEXT_BYTES + 1)}]})
    assert error.field == "filters[0].source"


def test_lone_surrogates_do_not_break_the_size_check() -> None:
    # json.loads accepts "\ud800"; measuring it must not raise UnicodeEncodeError.
    assert parse_filter({"type": "USERID", "value": ["\ud800"]}).values == ("\ud800",)


def test_long_unknown_names_are_cut_in_messages() -> None:
    error = refused({"sort": "x" * 5000})
    assert len(str(error)) < 200


def test_filter_path_is_configurable_for_other_edges() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_filters([{"type": "nope"}], path="auth.filters")
    assert info.value.field == "auth.filters[0].type"


def test_autocomplete_field() -> None:
    assert autocomplete_field("useros", None) == ("USEROS", "userOs")
    assert autocomplete_field("PLATFORM", "ignored") == ("PLATFORM", "userDeviceType")
    assert autocomplete_field("Metadata", "plan") == ("METADATA", "metadata.plan")
    for type_raw, source, field in [
        (None, None, "type"),
        ("", None, "type"),
        ("USERNAME", None, "type"),
        ("METADATA", None, "source"),
        ("METADATA", "", "source"),
    ]:
        with pytest.raises(InvalidInput) as info:
            autocomplete_field(type_raw, source)
        assert info.value.field == field


def test_filter_type_and_text() -> None:
    assert filter_type("userOs") == "USEROS"
    assert parse_text(None, "q") == ""
    assert parse_text("ma", "q") == "ma"
    for bad in (3, ["a"], "a" * (MAX_TEXT_BYTES + 1)):
        with pytest.raises(InvalidInput) as info:
            parse_text(bad, "q")
        assert info.value.field == "q"
