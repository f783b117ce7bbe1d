"""The User-Agent header → userOs, userBrowser, userBrowserVersion, userDevice, userDeviceType.

Parsing uses ua-parser (the uap-core rules shipped in ua-parser-builtins). uap-core has no notion of
a device *type*, so desktop / mobile / tablet is decided here from the OS, the device and the usual
markers of the header (docs/protocol.md lists the rules).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ua_parser import BasicResolver, Cache, CachingResolver, Parser, load_lazy_builtins

DeviceType = Literal["desktop", "mobile", "tablet"]
DEVICE_TYPES: tuple[DeviceType, ...] = ("desktop", "mobile", "tablet")

# uap-core's regular expressions are not written for huge inputs; no real browser sends more.
MAX_USER_AGENT_CHARS = 1024

# Names the Assist API document uses where uap-core says otherwise.
_OS_NAMES = {"Mac OS X": "Mac OS"}

_MOBILE_OSES = frozenset(
    {
        "iOS",
        "Android",
        "Windows Phone",
        "BlackBerry OS",
        "KaiOS",
        "Firefox OS",
        "Symbian OS",
        "webOS",
        "Tizen",
        "HarmonyOS",
        "Sailfish",
    }
)
_TABLET_MARKERS = (
    "ipad",
    "tablet",
    "kindle",
    "silk/",
    "playbook",
    "nexus 7",
    "nexus 9",
    "nexus 10",
)
_MOBILE_MARKERS = ("mobile", "iphone", "ipod", "phone", "opera mini")


@dataclass(frozen=True)
class UserAgentInfo:
    """What a User-Agent header tells; None where it tells nothing."""

    os: str | None = None
    browser: str | None = None
    browser_version: str | None = None
    device: str | None = None
    device_type: DeviceType | None = None


class UserAgentParser:
    """A parser with a cache of recent headers; one per application."""

    def __init__(self, cache_size: int = 4096) -> None:
        # Lazy rules compile each regular expression on first use: building costs milliseconds,
        # not the quarter second of compiling every rule up front.
        self._parser = Parser(
            CachingResolver(BasicResolver(load_lazy_builtins()), Cache(cache_size))
        )

    def parse(self, header: str | None) -> UserAgentInfo:
        """Parse a User-Agent header; an absent or unknown one gives an all-None result."""
        if not header or not header.strip():
            return UserAgentInfo()
        header = header.strip()[:MAX_USER_AGENT_CHARS]
        result = self._parser.parse(header)
        agent, os, device = result.user_agent, result.os, result.device
        os_name = _OS_NAMES.get(os.family, os.family) if os else None
        browser = agent.family if agent else None
        version = (
            _version(agent.major, agent.minor, agent.patch, agent.patch_minor) if agent else None
        )
        device_name: str | None = None
        if device is not None and device.family not in ("Other", "Spider"):
            device_name = device.model or device.family
        if os_name is None and browser is None and device_name is None:
            return UserAgentInfo()
        device_type = _device_type(
            header, os_name, device.family if device else None, device.brand if device else None
        )
        if device_type == "desktop":
            # The Assist API document shows no device for desktops (uap-core would say "Mac").
            device_name = None
        return UserAgentInfo(os_name, browser, version, device_name, device_type)


def _version(*parts: str | None) -> str | None:
    present: list[str] = []
    for part in parts:
        if part is None:
            break
        present.append(part)
    return ".".join(present) or None


def _device_type(
    header: str, os_name: str | None, family: str | None, brand: str | None
) -> DeviceType:
    lowered = header.lower()
    family_lowered = (family or "").lower()
    if (
        brand == "Generic_Android_Tablet"
        or any(marker in family_lowered for marker in ("ipad", "tablet", "kindle"))
        or any(marker in lowered for marker in _TABLET_MARKERS)
    ):
        return "tablet"
    if os_name == "Android":
        # Android's convention: phones say "Mobile", tablets do not.
        return "mobile" if "mobile" in lowered else "tablet"
    if (
        os_name in _MOBILE_OSES
        or family_lowered in ("iphone", "ipod", "generic smartphone", "generic feature phone")
        or any(marker in lowered for marker in _MOBILE_MARKERS)
    ):
        return "mobile"
    return "desktop"
