"""Unit tests of hub.useragent: the record's user-agent fields from real browser headers."""

from __future__ import annotations

import pytest

from hub.useragent import MAX_USER_AGENT_CHARS, UserAgentInfo, UserAgentParser
from tests.hub.conftest import (
    UA_ANDROID_PHONE,
    UA_ANDROID_TABLET,
    UA_IPAD,
    UA_IPHONE,
    UA_MAC_CHROME,
    UA_WINDOWS_FIREFOX,
)


@pytest.fixture(scope="module")
def parser() -> UserAgentParser:
    return UserAgentParser()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        # The Assist API document's example: "Mac OS", "Chrome", "103.0.0.0", no device.
        (UA_MAC_CHROME, UserAgentInfo("Mac OS", "Chrome", "103.0.0.0", None, "desktop")),
        (UA_WINDOWS_FIREFOX, UserAgentInfo("Windows", "Firefox", "115.0", None, "desktop")),
        (UA_IPHONE, UserAgentInfo("iOS", "Mobile Safari", "16.5", "iPhone", "mobile")),
        (
            UA_ANDROID_PHONE,
            UserAgentInfo("Android", "Chrome Mobile", "116.0.0.0", "Pixel 7", "mobile"),
        ),
        (UA_IPAD, UserAgentInfo("iOS", "Mobile Safari", "16.5", "iPad", "tablet")),
        (UA_ANDROID_TABLET, UserAgentInfo("Android", "Chrome", "112.0.0.0", "SM-X700", "tablet")),
    ],
)
def test_real_browsers(parser: UserAgentParser, header: str, expected: UserAgentInfo) -> None:
    assert parser.parse(header) == expected


@pytest.mark.parametrize(
    ("header", "device_type"),
    [
        (
            "Mozilla/5.0 (Android 13; Mobile; rv:109.0) Gecko/115.0 Firefox/115.0",
            "mobile",
        ),
        (
            "Mozilla/5.0 (Android 13; Tablet; rv:109.0) Gecko/115.0 Firefox/115.0",
            "tablet",
        ),
        (
            "Mozilla/5.0 (Linux; U; Android 4.0.3; en-us; KFTT Build/IML74K) AppleWebKit/534.30 "
            "(KHTML, like Gecko) Silk/3.4 Mobile Safari/534.30",
            "tablet",
        ),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/116.0.0.0 Safari/537.36",
            "desktop",
        ),
    ],
)
def test_device_types(parser: UserAgentParser, header: str, device_type: str) -> None:
    assert parser.parse(header).device_type == device_type


@pytest.mark.parametrize("header", [None, "", "   ", "x" * 3000, "¯\\_(ツ)_/¯"])
def test_nothing_known_gives_nothing(parser: UserAgentParser, header: str | None) -> None:
    assert parser.parse(header) == UserAgentInfo()


def test_non_browser_client_is_a_desktop_without_os(parser: UserAgentParser) -> None:
    info = parser.parse("Python/3.11 aiohttp/3.14.5")
    assert info.browser == "Python aiohttp"
    assert info.os is None and info.device is None
    assert info.device_type == "desktop"


def test_long_headers_are_cut_before_parsing(parser: UserAgentParser) -> None:
    padded = UA_WINDOWS_FIREFOX + " " + "x" * (MAX_USER_AGENT_CHARS * 4)
    assert parser.parse(padded).browser == "Firefox"
