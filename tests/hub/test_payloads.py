"""Unit tests of hub.payloads: sizes, UPDATE_SESSION, SESSION_MESSAGE, metadata, rate limit."""

from __future__ import annotations

from typing import Any

import pytest

from hub.errors import InvalidInput, TooLarge
from hub.payloads import (
    TokenBucket,
    check_event_size,
    check_merged_metadata,
    json_size,
    timestamp_ms,
    validate_message,
    validate_metadata,
    validate_update,
)
from hub.settings import Limits

LIMITS = Limits()


def test_json_size_is_compact_utf8() -> None:
    assert json_size({"a": [1, 2]}) == len(b'{"a":[1,2]}')
    assert json_size("é") == len('"é"'.encode())
    assert json_size([b"\x00" * 10]) == len(b"[null]") + 10


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {"x": object()}, "\ud800"])
def test_json_size_refuses_what_json_cannot_carry(value: Any) -> None:
    with pytest.raises(InvalidInput):
        json_size(value)


def test_event_size_limit() -> None:
    limits = Limits(event_bytes=20)
    check_event_size(({"a": "x" * 10},), limits)  # [{"a":"xxxxxxxxxx"}] is 20 bytes
    with pytest.raises(TooLarge, match="over the limit of 20"):
        check_event_size(({"a": "x" * 11},), limits)


def test_update_keeps_known_fields_and_ignores_others() -> None:
    update = validate_update(
        {
            "pageTitle": "Cart",
            "userID": "u1",
            "userUUID": "uu",
            "revID": "r2",
            "active": False,
            "metadata": {"plan": "pro"},
            "variables": {"cart": {"items": 2}},
            "sessionID": "other",
            "live": False,
            "userCountry": "XX",
        },
        LIMITS,
    )
    assert update.changes == {
        "pageTitle": "Cart",
        "userID": "u1",
        "userUUID": "uu",
        "revID": "r2",
        "active": False,
        "metadata": {"plan": "pro"},
    }
    assert update.variables == {"cart": {"items": 2}}
    assert update


def test_update_with_nothing_known_is_empty() -> None:
    update = validate_update({"foo": 1}, LIMITS)
    assert not update
    assert update.changes == {} and update.variables is None


def test_update_unwraps_openreplay_form() -> None:
    update = validate_update({"meta": {"tabId": "t1"}, "data": {"active": True}}, LIMITS)
    assert update.changes == {"active": True}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"pageTitle": 3}, "pageTitle"),
        ({"userID": None}, "userID"),
        ({"userUUID": ["a"]}, "userUUID"),
        ({"revID": {}}, "revID"),
        ({"active": "yes"}, "active"),
        ({"active": 1}, "active"),
        ({"metadata": "plan"}, "metadata"),
        ({"metadata": {"plan": 1}}, "metadata"),
        ({"variables": [1]}, "variables"),
    ],
)
def test_update_wrong_types_name_the_field(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_update(payload, LIMITS)
    assert caught.value.field == field
    assert field in str(caught.value)


@pytest.mark.parametrize("payload", [None, [], "x", 3, True])
def test_update_must_be_an_object(payload: Any) -> None:
    with pytest.raises(InvalidInput, match="JSON object"):
        validate_update(payload, LIMITS)


def test_update_refuses_binary() -> None:
    with pytest.raises(InvalidInput, match="binary"):
        validate_update({"variables": {"blob": b"\x01"}}, LIMITS)


def test_metadata_limits() -> None:
    limits = Limits(metadata_keys=2, metadata_key_chars=4, metadata_value_bytes=4)
    assert validate_metadata({"ab": "é", "abcd": "1234"}, limits) == {"ab": "é", "abcd": "1234"}
    with pytest.raises(TooLarge, match="3 keys"):
        validate_metadata({"a": "", "b": "", "c": ""}, limits)
    with pytest.raises(TooLarge, match="over 4 characters"):
        validate_metadata({"abcde": ""}, limits)
    with pytest.raises(TooLarge, match="over 4 bytes"):
        validate_metadata({"a": "ééé"}, limits)  # 6 bytes of UTF-8
    with pytest.raises(InvalidInput, match=r"sessionInfo\.metadata\.a must be a string"):
        validate_metadata({"a": 1}, limits, "sessionInfo.metadata")


def test_merged_metadata_limit() -> None:
    limits = Limits(metadata_keys=2)
    check_merged_metadata({"a": "1"}, {"a": "2", "b": "3"}, limits)
    with pytest.raises(TooLarge, match="would have 3 keys"):
        check_merged_metadata({"a": "1", "b": "2"}, {"c": "3"}, limits)


def test_message_gets_a_timestamp_when_absent() -> None:
    message = validate_message({"role": "user", "content": "hi", "lang": "en"}, lambda: 1234)
    assert message == {"role": "user", "content": "hi", "lang": "en", "timestamp": 1234}


def test_message_keeps_its_timestamp() -> None:
    message = validate_message({"role": "r", "content": "c", "timestamp": 99}, lambda: 1234)
    assert message["timestamp"] == 99


@pytest.mark.parametrize(
    "payload",
    [
        {"content": "c"},
        {"role": "r"},
        {"role": 1, "content": "c"},
        {"role": "r", "content": None},
        {"role": "r", "content": "c", "timestamp": -1},
        {"role": "r", "content": "c", "timestamp": "1"},
        {"role": "r", "content": "c", "timestamp": 1.5},
        {"role": "r", "content": "c", "timestamp": True},
        {"role": "r", "content": b"c"},
        ["role", "content"],
    ],
)
def test_bad_messages(payload: Any) -> None:
    with pytest.raises(InvalidInput):
        validate_message(payload, lambda: 1)


def test_timestamp_accepts_integral_floats_only() -> None:
    assert timestamp_ms(1656437966459.0, "t") == 1656437966459
    with pytest.raises(InvalidInput, match="between"):
        timestamp_ms(10**16, "t")


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.05  # half a token
    assert not bucket.take()
    now[0] += 0.05
    assert bucket.take()
    assert not bucket.take()
    now[0] += 100  # never more than the burst saved
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
