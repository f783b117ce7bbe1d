"""The JSON Schemas of the OpenAPI document (``api/openapi.py``): bodies in and out.

Built from the constants the handlers validate with (limits, record fields, filter types), so the
document follows the code. Where a rule cannot be written as JSON Schema (a limit in UTF-8 bytes,
``sort`` in any case) the schema is the stricter, always valid subset and the description says
the rest.
"""

from __future__ import annotations

from typing import Any

from api.stored import MAX_LIMIT as STORED_MAX_LIMIT
from hub.query import MAX_FILTERS, MAX_LIMIT, MAX_PAGE, MAX_VALUES, UNSORTABLE_FIELDS
from hub.records import FILTER_TYPES, RECORD_FIELDS

Schema = dict[str, Any]

OPERATORS = ["contains", "is", "isNot", "notContains", "startsWith", "endsWith"]
# Record fields whose value may be null (nothing parsed from the User-Agent, no GeoIP).
_NULLABLE_TEXT = (
    "userOs",
    "userBrowser",
    "userBrowserVersion",
    "userDevice",
    "userDeviceType",
    "userCountry",
    "userCity",
    "userState",
)
SORT_FIELDS = [name for name in RECORD_FIELDS if name not in UNSORTABLE_FIELDS]
_ISO_TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$"


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _record_schema() -> Schema:
    types: dict[str, Schema] = {name: {"type": "string"} for name in RECORD_FIELDS}
    types.update({name: {"type": ["string", "null"]} for name in _NULLABLE_TEXT})
    types["metadata"] = {"type": "object", "additionalProperties": {"type": "string"}}
    types["timestamp"] = {"type": "integer", "minimum": 0, "description": "ms since the epoch"}
    types["isSnippet"] = {"type": "boolean"}
    types["active"] = {"type": "boolean"}
    types["live"] = {"const": True}
    types["projectId"] = {"type": "integer", "minimum": 1}
    return {
        "type": "object",
        "description": "A live session (SPEC §4.1), fields in this order.",
        "properties": {name: types[name] for name in RECORD_FIELDS},
        "required": list(RECORD_FIELDS),
        "additionalProperties": False,
    }


def schemas() -> dict[str, Schema]:
    nullable_int = {"type": ["integer", "null"]}
    return {
        "Error": {
            "type": "object",
            "properties": {"error": {"type": "string"}},
            "required": ["error"],
            "additionalProperties": False,
        },
        "StoredAuthError": {
            "type": "object",
            "description": "The stored-session API's 401 body (its document fixes it).",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {"message": {"const": "Invalid authentication"}},
                    "required": ["message"],
                    "additionalProperties": False,
                }
            },
            "required": ["error"],
            "additionalProperties": False,
        },
        "LiveSession": _record_schema(),
        "SessionPage": {
            "type": "object",
            "properties": {
                "data": {
                    "type": "object",
                    "properties": {
                        "total": {"type": "integer", "minimum": 0},
                        "sessions": {"type": "array", "items": ref("LiveSession")},
                    },
                    "required": ["total", "sessions"],
                    "additionalProperties": False,
                }
            },
            "required": ["data"],
            "additionalProperties": False,
        },
        "OneSession": {
            "type": "object",
            "properties": {"data": ref("LiveSession")},
            "required": ["data"],
            "additionalProperties": False,
        },
        "Filter": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "enum": sorted(FILTER_TYPES), "description": "any case"},
                "value": {
                    "type": ["array", "null"],
                    "items": {"type": "string", "maxLength": 256},
                    "maxItems": MAX_VALUES,
                    "description": "OR-ed; [] matches sessions where the attribute is set",
                },
                "operator": {"type": ["string", "null"], "enum": [*OPERATORS, None]},
                "source": {
                    "type": ["string", "null"],
                    "maxLength": 256,
                    "description": "the metadata key; required (non-empty) for METADATA",
                },
            },
            "required": ["type"],
            "allOf": [
                {
                    "if": {"properties": {"type": {"const": "METADATA"}}},
                    "then": {
                        "properties": {"source": {"type": "string", "minLength": 1}},
                        "required": ["source"],
                    },
                },
                {
                    "if": {"properties": {"type": {"const": "ACTIVE"}}},
                    "then": {
                        "properties": {
                            "value": {
                                "type": ["array", "null"],
                                "items": {"enum": ["true", "false", "TRUE", "FALSE"]},
                            }
                        }
                    },
                },
            ],
        },
        "SessionSearch": {
            "type": "object",
            "properties": {
                "sort": {
                    "type": ["string", "null"],
                    "enum": [*SORT_FIELDS, None],
                    "description": "a record field, any case; default timestamp",
                },
                "order": {"type": ["string", "null"], "enum": ["ASC", "DESC", "asc", "desc", None]},
                "page": {**nullable_int, "minimum": 1, "maximum": MAX_PAGE},
                "limit": {**nullable_int, "minimum": 1, "maximum": MAX_LIMIT},
                "filters": {
                    "type": ["array", "null"],
                    "items": ref("Filter"),
                    "maxItems": MAX_FILTERS,
                },
            },
        },
        "Autocomplete": {
            "type": "object",
            "properties": {
                "data": {
                    "type": "array",
                    "maxItems": 10,
                    "items": {
                        "type": "object",
                        "properties": {"type": {"type": "string"}, "value": {"type": "string"}},
                        "required": ["type", "value"],
                        "additionalProperties": False,
                    },
                }
            },
            "required": ["data"],
            "additionalProperties": False,
        },
        "AgentToken": {
            "type": "object",
            "properties": {
                "data": {
                    "type": "object",
                    "properties": {"token": {"type": "string", "minLength": 1}},
                    "required": ["token"],
                }
            },
            "required": ["data"],
        },
        "StoredSearch": {
            "type": "object",
            "properties": {
                "search_string": {"type": "string", "minLength": 1},
                "limit": {"type": "integer", "minimum": 1, "maximum": STORED_MAX_LIMIT},
                "offset": {"type": "integer", "minimum": 0},
            },
            "required": ["search_string"],
        },
        "StoredSession": {
            "type": "object",
            "properties": {
                "sessionId": {"type": "string"},
                "data": {
                    "type": "object",
                    "properties": {
                        "sessionInfo": {"type": "object"},
                        "variables": {"type": "object"},
                        "messages": {"type": "array", "items": {"type": "object"}},
                    },
                    "description": "what the hub stores has all three (SPEC §5.2)",
                },
                "createdAt": {"type": "string", "pattern": _ISO_TIME},
                "updatedAt": {"type": "string", "pattern": _ISO_TIME},
            },
            "required": ["sessionId", "data", "createdAt", "updatedAt"],
            "additionalProperties": False,
        },
        "StoredPage": {
            "type": "object",
            "properties": {
                "results": {"type": "array", "items": ref("StoredSession")},
                "pagination": {
                    "type": "object",
                    "properties": {
                        "limit": {"type": "integer"},
                        "offset": {"type": "integer"},
                        "total": {"type": "integer", "minimum": 0},
                    },
                    "required": ["limit", "offset", "total"],
                    "additionalProperties": False,
                },
            },
            "required": ["results", "pagination"],
            "additionalProperties": False,
        },
        "Health": {
            "type": "object",
            "properties": {"status": {"const": "ok"}},
            "required": ["status"],
            "additionalProperties": False,
        },
        "Readiness": {
            "type": "object",
            "properties": {
                "status": {"enum": ["ready", "unavailable"]},
                "error": {"type": "string"},
                "checks": {
                    "type": "object",
                    "additionalProperties": {"enum": ["ok", "unavailable"]},
                },
            },
            "required": ["status", "checks"],
            "additionalProperties": False,
        },
    }
