"""The live-session record (SPEC §4.1) and the stored session data (SPEC §5.2).

A record is a plain ``dict`` of JSON values with the keys of :data:`RECORD_FIELDS`, in that order
(the order of the Assist API document). It is what the Assist API lists, what subscribers receive,
and, less ``live`` and ``active``, the ``sessionInfo`` of a stored session.
"""

from __future__ import annotations

from typing import Any

Record = dict[str, Any]

RECORD_FIELDS: tuple[str, ...] = (
    "pageTitle",
    "sessionID",
    "metadata",
    "userID",
    "userUUID",
    "projectKey",
    "revID",
    "timestamp",
    "trackerVersion",
    "isSnippet",
    "userOs",
    "userBrowser",
    "userBrowserVersion",
    "userDevice",
    "userDeviceType",
    "userCountry",
    "userCity",
    "userState",
    "active",
    "live",
    "projectId",
)

# Fields a tracker may change with UPDATE_SESSION (SPEC §4.2); ``variables`` is kept beside the
# record, in the session's data, not in the record.
UPDATABLE_FIELDS: frozenset[str] = frozenset(
    {"pageTitle", "userID", "userUUID", "revID", "active", "metadata"}
)

# Fields left out of ``sessionInfo`` in the stored data.
NOT_STORED_FIELDS: frozenset[str] = frozenset({"live", "active"})


def blank_record(project_key: str, project_id: int, session_id: str, timestamp: int) -> Record:
    """A record with every field at its default."""
    return {
        "pageTitle": "",
        "sessionID": session_id,
        "metadata": {},
        "userID": "",
        "userUUID": "",
        "projectKey": project_key,
        "revID": "",
        "timestamp": timestamp,
        "trackerVersion": "",
        "isSnippet": False,
        "userOs": None,
        "userBrowser": None,
        "userBrowserVersion": None,
        "userDevice": None,
        "userDeviceType": None,
        "userCountry": None,
        "userCity": None,
        "userState": None,
        "active": True,
        "live": True,
        "projectId": project_id,
    }


def stored_data(
    record: Record, variables: dict[str, Any], messages: list[dict[str, Any]]
) -> dict[str, Any]:
    """The data kept for an ended session: ``{"sessionInfo", "variables", "messages"}``."""
    info = {k: v for k, v in record.items() if k not in NOT_STORED_FIELDS}
    return {"sessionInfo": info, "variables": variables, "messages": messages}


# Assist filter types (SPEC §5.1, matched case-insensitively) and the record field each reads.
# METADATA reads ``metadata[source]``.
FILTER_TYPES: dict[str, str] = {
    "USERID": "userID",
    "USERANONYMOUSID": "userUUID",
    "USERUUID": "userUUID",
    "SESSIONID": "sessionID",
    "USEROS": "userOs",
    "USERBROWSER": "userBrowser",
    "USERBROWSERVERSION": "userBrowserVersion",
    "USERDEVICE": "userDevice",
    "USERDEVICETYPE": "userDeviceType",
    "PLATFORM": "userDeviceType",
    "USERCOUNTRY": "userCountry",
    "USERCITY": "userCity",
    "USERSTATE": "userState",
    "PAGETITLE": "pageTitle",
    "REVID": "revID",
    "TRACKERVERSION": "trackerVersion",
    "ACTIVE": "active",
    "METADATA": "metadata",
}
