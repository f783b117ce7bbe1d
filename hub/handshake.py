"""The tracker handshake (SPEC §4.1): query parameters → :class:`Handshake` → the live record.

``peerId`` is ``<projectKey>-<sessionID>[-<tabId>]`` and is split exactly as docs/protocol.md
says:

- projectKey is everything before the first ``-``;
- without ``sessionInfo.sessionID``: the sessionID is what lies between the first and the second
  ``-`` (so it cannot hold a ``-``), and everything after the second ``-`` is the tabId;
- with ``sessionInfo.sessionID``: that is the sessionID; when the rest of peerId (after the
  first ``-``) starts with ``<sessionID>-``, what follows is the tabId, else what follows the
  second ``-``;
- the ``tabId`` parameter beats any tabId in peerId; with neither, one is made up.

An empty tabId (parameter or part) counts as absent.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from hub.errors import InvalidInput, ProjectNotFound, TooLarge
from hub.geo import GeoInfo
from hub.payloads import json_size, timestamp_ms, validate_metadata
from hub.records import Record, blank_record
from hub.settings import Limits
from hub.useragent import DEVICE_TYPES, UserAgentInfo

ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
ID_RULE = "1 to 128 characters of A-Z a-z 0-9 . _ : -"
# Project keys are made of letters and digits (SPEC §3); anything else is unknown without asking
# the store.
PROJECT_KEY_PATTERN = re.compile(r"[A-Za-z0-9]{1,64}\Z")

# sessionInfo fields the record takes, by kind; every other field is ignored.
STRING_FIELDS = ("pageTitle", "userID", "userUUID", "revID", "trackerVersion")
USER_AGENT_FIELDS = ("userOs", "userBrowser", "userBrowserVersion", "userDevice", "userDeviceType")


@dataclass(frozen=True)
class Handshake:
    """A validated tracker handshake."""

    project_key: str
    session_id: str
    tab_id: str
    tab_id_made_up: bool
    # The sessionInfo fields the record takes, validated; absent ones are left out.
    info: dict[str, Any]


def parse_query(query_string: str) -> dict[str, str]:
    """The query parameters of a request; a repeated parameter keeps its first value."""
    parsed = parse_qs(query_string, keep_blank_values=True, errors="replace")
    return {name: values[0] for name, values in parsed.items()}


def make_tab_id() -> str:
    """A tabId for a tracker that gave none."""
    return "tab-" + secrets.token_hex(8)


def parse_handshake(
    query: Mapping[str, str], limits: Limits, new_tab_id: Callable[[], str] = make_tab_id
) -> Handshake:
    """Validate the query of a tracker connection.

    Raises ProjectNotFound for a project key that cannot exist, InvalidInput (or TooLarge) naming
    what is wrong otherwise. The project key is not looked up here.
    """
    peer_id = query.get("peerId", "")
    if not peer_id:
        raise InvalidInput("peerId is required", "peerId")
    project_key, _, rest = peer_id.partition("-")
    if not PROJECT_KEY_PATTERN.match(project_key):
        raise ProjectNotFound("unknown project key")
    info = parse_session_info(query.get("sessionInfo"), limits)

    given_id = info.pop("sessionID", None)
    if given_id is not None:
        session_id = given_id
        if rest == session_id:
            peer_tab = ""
        elif rest.startswith(session_id + "-"):
            peer_tab = rest[len(session_id) + 1 :]
        else:
            peer_tab = rest.partition("-")[2]
    else:
        session_id, _, peer_tab = rest.partition("-")
        if not session_id:
            raise InvalidInput(
                "sessionID is missing: peerId must be <projectKey>-<sessionID>[-<tabId>]",
                "sessionID",
            )
    if not ID_PATTERN.match(session_id):
        raise InvalidInput(f"bad sessionID: it must be {ID_RULE}", "sessionID")

    tab_id = query.get("tabId") or peer_tab
    if not tab_id:
        return Handshake(project_key, session_id, new_tab_id(), True, info)
    if not ID_PATTERN.match(tab_id):
        raise InvalidInput(f"bad tabId: it must be {ID_RULE}", "tabId")
    return Handshake(project_key, session_id, tab_id, False, info)


def parse_json_object_param(raw: str, name: str, limits: Limits) -> dict[str, Any]:
    """A query parameter holding a JSON object, within the sessionInfo size limit."""
    size = len(raw.encode("utf-8", "surrogatepass"))
    if size > limits.session_info_bytes:
        raise TooLarge(
            f"{name} is {size} bytes, over the limit of {limits.session_info_bytes}", name
        )
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise InvalidInput(f"{name} is not valid JSON", name) from e
    if not isinstance(value, dict):
        raise InvalidInput(f"{name} must be a JSON object", name)
    json_size(value)  # refuses unpaired surrogates, which cannot travel as UTF-8
    return value


def parse_session_info(raw: str | None, limits: Limits) -> dict[str, Any]:
    """The fields of ``sessionInfo`` the record takes, validated; null counts as absent."""
    if raw is None or raw == "":
        return {}
    value = parse_json_object_param(raw, "sessionInfo", limits)

    info: dict[str, Any] = {}
    for name in ("sessionID", *STRING_FIELDS, *USER_AGENT_FIELDS):
        if value.get(name) is not None:
            if not isinstance(value[name], str):
                raise InvalidInput(f"sessionInfo.{name} must be a string", f"sessionInfo.{name}")
            info[name] = value[name]
    if "userDeviceType" in info:
        device_type = info["userDeviceType"].lower()
        if device_type not in DEVICE_TYPES:
            raise InvalidInput(
                "sessionInfo.userDeviceType must be desktop, mobile or tablet",
                "sessionInfo.userDeviceType",
            )
        info["userDeviceType"] = device_type
    for name in ("isSnippet", "active"):
        if value.get(name) is not None:
            if not isinstance(value[name], bool):
                raise InvalidInput(
                    f"sessionInfo.{name} must be true or false", f"sessionInfo.{name}"
                )
            info[name] = value[name]
    if value.get("timestamp") is not None:
        info["timestamp"] = timestamp_ms(value["timestamp"], "sessionInfo.timestamp")
    if value.get("metadata") is not None:
        info["metadata"] = validate_metadata(value["metadata"], limits, "sessionInfo.metadata")
    return info


def build_record(
    handshake: Handshake, project_id: int, now_ms: int, agent: UserAgentInfo, geo: GeoInfo
) -> Record:
    """The record a new session starts with (SPEC §4.1's table), fields in RECORD_FIELDS order."""
    info = handshake.info
    record = blank_record(
        handshake.project_key, project_id, handshake.session_id, info.get("timestamp", now_ms)
    )
    for name in (*STRING_FIELDS, "isSnippet", "active", "metadata"):
        if name in info:
            record[name] = info[name]
    parsed = {
        "userOs": agent.os,
        "userBrowser": agent.browser,
        "userBrowserVersion": agent.browser_version,
        "userDevice": agent.device,
        "userDeviceType": agent.device_type,
    }
    # The header wins; sessionInfo fills what the header does not tell.
    for name, from_header in parsed.items():
        record[name] = from_header if from_header is not None else info.get(name)
    if record["userDeviceType"] is None:
        record["userDeviceType"] = "desktop"
    record["userCountry"] = geo.country
    record["userCity"] = geo.city
    record["userState"] = geo.state
    return record


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
