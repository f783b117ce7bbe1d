"""Unit tests of hub.handshake: peerId splitting, sessionInfo validation and the record built."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hub.errors import InvalidInput, ProjectNotFound, TooLarge
from hub.geo import GeoInfo
from hub.handshake import Handshake, build_record, parse_handshake, parse_query
from hub.records import RECORD_FIELDS
from hub.settings import Limits
from hub.useragent import UserAgentInfo

LIMITS = Limits()
KEY = "aYYaFHiagqdXKEmVlmvJ"


def parse(**query: Any) -> Handshake:
    if isinstance(query.get("sessionInfo"), dict):
        query["sessionInfo"] = json.dumps(query["sessionInfo"])
    return parse_handshake(query, LIMITS, new_tab_id=lambda: "made-up")


@pytest.mark.parametrize(
    ("query", "session_id", "tab_id"),
    [
        ({"peerId": f"{KEY}-6975518573799938"}, "6975518573799938", "made-up"),
        ({"peerId": f"{KEY}-6975518573799938-tab1"}, "6975518573799938", "tab1"),
        # Everything after the second "-" is the tabId.
        ({"peerId": f"{KEY}-s1-tab-with-dashes"}, "s1", "tab-with-dashes"),
        # The tabId parameter beats the one in peerId.
        ({"peerId": f"{KEY}-s1-tab1", "tabId": "tab2"}, "s1", "tab2"),
        ({"peerId": f"{KEY}-s1", "tabId": "tab2"}, "s1", "tab2"),
        # Empty tabIds count as absent.
        ({"peerId": f"{KEY}-s1-", "tabId": ""}, "s1", "made-up"),
        # sessionInfo.sessionID beats peerId, and may hold "-".
        ({"peerId": f"{KEY}-a-b-tab1", "sessionInfo": {"sessionID": "a-b"}}, "a-b", "tab1"),
        ({"peerId": f"{KEY}-a-b", "sessionInfo": {"sessionID": "a-b"}}, "a-b", "made-up"),
        # A peerId whose second part is another ID: its tabId is after the second "-".
        ({"peerId": f"{KEY}-old-tab1", "sessionInfo": {"sessionID": "new"}}, "new", "tab1"),
        ({"peerId": KEY, "sessionInfo": {"sessionID": "s:1.x_y"}}, "s:1.x_y", "made-up"),
    ],
)
def test_peer_id_split(query: dict[str, Any], session_id: str, tab_id: str) -> None:
    handshake = parse(**query)
    assert handshake.project_key == KEY
    assert (handshake.session_id, handshake.tab_id) == (session_id, tab_id)
    assert handshake.tab_id_made_up == (tab_id == "made-up")


def test_made_up_tab_ids_differ() -> None:
    first = parse_handshake({"peerId": f"{KEY}-s1"}, LIMITS)
    second = parse_handshake({"peerId": f"{KEY}-s1"}, LIMITS)
    assert first.tab_id != second.tab_id
    assert first.tab_id_made_up


@pytest.mark.parametrize("peer_id", ["-s1", "ab$c-s1", "k" * 65 + "-s1"])
def test_impossible_project_keys(peer_id: str) -> None:
    with pytest.raises(ProjectNotFound, match="unknown project key"):
        parse(peerId=peer_id)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({}, "peerId is required"),
        ({"peerId": ""}, "peerId is required"),
        ({"peerId": KEY}, "sessionID is missing"),
        ({"peerId": f"{KEY}-"}, "sessionID is missing"),
        ({"peerId": f"{KEY}-s 1"}, "bad sessionID"),
        ({"peerId": f"{KEY}-s/1"}, "bad sessionID"),
        ({"peerId": f"{KEY}-" + "s" * 129}, "bad sessionID"),
        ({"peerId": KEY, "sessionInfo": {"sessionID": ""}}, "bad sessionID"),
        ({"peerId": KEY, "sessionInfo": {"sessionID": "é"}}, "bad sessionID"),
        ({"peerId": f"{KEY}-s1", "tabId": "t 1"}, "bad tabId"),
        ({"peerId": f"{KEY}-s1-t#1"}, "bad tabId"),
        ({"peerId": f"{KEY}-s1", "tabId": "t" * 129}, "bad tabId"),
        ({"peerId": f"{KEY}-s1", "sessionInfo": "{"}, "not valid JSON"),
        ({"peerId": f"{KEY}-s1", "sessionInfo": '{"a": NaN}'}, "not valid JSON"),
        ({"peerId": f"{KEY}-s1", "sessionInfo": "[1]"}, "must be a JSON object"),
        ({"peerId": f"{KEY}-s1", "sessionInfo": '"text"'}, "must be a JSON object"),
        ({"peerId": f"{KEY}-s1", "sessionInfo": '{"a": "\\ud800"}'}, "surrogate"),
    ],
)
def test_refusals(query: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse(**query)


def test_session_info_size_limit() -> None:
    limits = Limits(session_info_bytes=100)
    info = json.dumps({"pageTitle": "x" * 80})
    assert len(info) <= 100
    parse_handshake({"peerId": f"{KEY}-s1", "sessionInfo": info}, limits)
    too_big = json.dumps({"pageTitle": "é" * 45})  # 90 characters of 2 bytes each
    with pytest.raises(TooLarge, match="over the limit of 100"):
        parse_handshake({"peerId": f"{KEY}-s1", "sessionInfo": too_big}, limits)


@pytest.mark.parametrize(
    ("info", "field"),
    [
        ({"sessionID": 12}, "sessionInfo.sessionID"),
        ({"pageTitle": 1}, "sessionInfo.pageTitle"),
        ({"userID": ["u"]}, "sessionInfo.userID"),
        ({"userUUID": {}}, "sessionInfo.userUUID"),
        ({"revID": 2}, "sessionInfo.revID"),
        ({"trackerVersion": 3.5}, "sessionInfo.trackerVersion"),
        ({"isSnippet": "true"}, "sessionInfo.isSnippet"),
        ({"active": 0}, "sessionInfo.active"),
        ({"timestamp": "1656437966459"}, "sessionInfo.timestamp"),
        ({"timestamp": -5}, "sessionInfo.timestamp"),
        ({"timestamp": 1.5}, "sessionInfo.timestamp"),
        ({"metadata": []}, "sessionInfo.metadata"),
        ({"metadata": {"plan": 3}}, "sessionInfo.metadata"),
        ({"userOs": 1}, "sessionInfo.userOs"),
        ({"userDeviceType": "watch"}, "sessionInfo.userDeviceType"),
    ],
)
def test_wrong_field_types_name_the_field(info: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse(peerId=f"{KEY}-s1", sessionInfo=info)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_metadata_over_the_limits_is_refused() -> None:
    too_many = {f"k{i}": "v" for i in range(LIMITS.metadata_keys + 1)}
    with pytest.raises(TooLarge, match=r"sessionInfo\.metadata"):
        parse(peerId=f"{KEY}-s1", sessionInfo={"metadata": too_many})


def test_nulls_and_unknown_fields_are_ignored() -> None:
    handshake = parse(
        peerId=f"{KEY}-s1",
        sessionInfo={"pageTitle": None, "projectId": 99, "live": False, "userCountry": "XX"},
    )
    assert handshake.info == {}


AGENT = UserAgentInfo("Mac OS", "Chrome", "103.0.0.0", None, "desktop")
GEO = GeoInfo("FR", "Paris", "Île-de-France")


def test_record_from_everything() -> None:
    handshake = parse(
        peerId=f"{KEY}-6975518573799938-tab1",
        sessionInfo={
            "pageTitle": "OpenReplay Blog",
            "userID": "u@example.com",
            "userUUID": "8998545b-553c-4f41-a39d-d7cba7fac2d1",
            "revID": "r1",
            "trackerVersion": "3.5.11",
            "isSnippet": True,
            "timestamp": 1656437966459,
            "metadata": {"plan": "trial"},
            "active": False,
            "userOs": "ignored: the header tells",
            "userDevice": "kept: the header does not tell",
        },
    )
    record = build_record(handshake, 3, 1_700_000_000_000, AGENT, GEO)
    assert list(record) == list(RECORD_FIELDS)
    assert record == {
        "pageTitle": "OpenReplay Blog",
        "sessionID": "6975518573799938",
        "metadata": {"plan": "trial"},
        "userID": "u@example.com",
        "userUUID": "8998545b-553c-4f41-a39d-d7cba7fac2d1",
        "projectKey": KEY,
        "revID": "r1",
        "timestamp": 1656437966459,
        "trackerVersion": "3.5.11",
        "isSnippet": True,
        "userOs": "Mac OS",
        "userBrowser": "Chrome",
        "userBrowserVersion": "103.0.0.0",
        "userDevice": "kept: the header does not tell",
        "userDeviceType": "desktop",
        "userCountry": "FR",
        "userCity": "Paris",
        "userState": "Île-de-France",
        "active": False,
        "live": True,
        "projectId": 3,
    }


def test_record_defaults() -> None:
    record = build_record(parse(peerId=f"{KEY}-s1"), 7, 1234, UserAgentInfo(), GeoInfo())
    assert record == {
        "pageTitle": "",
        "sessionID": "s1",
        "metadata": {},
        "userID": "",
        "userUUID": "",
        "projectKey": KEY,
        "revID": "",
        "timestamp": 1234,
        "trackerVersion": "",
        "isSnippet": False,
        "userOs": None,
        "userBrowser": None,
        "userBrowserVersion": None,
        "userDevice": None,
        "userDeviceType": "desktop",
        "userCountry": None,
        "userCity": None,
        "userState": None,
        "active": True,
        "live": True,
        "projectId": 7,
    }


def test_user_agent_fields_fall_back_to_session_info() -> None:
    handshake = parse(
        peerId=f"{KEY}-s1",
        sessionInfo={
            "userOs": "Android",
            "userBrowser": "WebView",
            "userBrowserVersion": "1.2",
            "userDevice": "Pixel",
            "userDeviceType": "Mobile",
        },
    )
    record = build_record(handshake, 1, 1, UserAgentInfo(), GeoInfo())
    assert [record[f] for f in ("userOs", "userBrowser", "userBrowserVersion")] == [
        "Android",
        "WebView",
        "1.2",
    ]
    assert (record["userDevice"], record["userDeviceType"]) == ("Pixel", "mobile")


def test_parse_query_keeps_the_first_value_and_blanks() -> None:
    assert parse_query("identity=session&peerId=a-b&peerId=c-d&tabId=&x=%E2%82%AC") == {
        "identity": "session",
        "peerId": "a-b",
        "tabId": "",
        "x": "€",
    }
