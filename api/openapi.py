"""The OpenAPI 3.1 document of every REST route, served at ``GET /openapi.json`` (SPEC §5.3).

The document is built here in Python, from the same constants the handlers validate with (limits,
record fields, filter types), so the two cannot drift apart silently; and the tests hold the
server to it: every REST response any test sees is validated against it
(``tests/openapi_validation.py``), and schemathesis fuzzes a real node with it
(``tests/e2e/test_schemathesis.py``).
"""

from __future__ import annotations

import functools
import json
from typing import Any

from aiohttp import web

from api.openapi_schemas import SORT_FIELDS, Schema, ref, schemas
from hub import __version__
from hub.query import MAX_LIMIT, MAX_PAGE
from hub.records import FILTER_TYPES

routes = web.RouteTableDef()


# Why each error status happens, by API.
_ASSIST_ERRORS = {
    "400": "invalid input; the message names the field",
    "401": "no, unknown or revoked API key",
    "403": "the API key does not cover this project",
    "404": "no such project (or session)",
    "503": "the registry or the store does not answer",
}
_STORED_ERRORS = {
    "400": "search_string missing or invalid, or another field invalid",
    "401": "bad authentication, or a key that does not cover this project",
    "404": "no such project (or stored session)",
    "500": "the store failed (no details)",
}


def _response(description: str, schema: Schema, media: str = "application/json") -> Schema:
    return {
        "description": description,
        "headers": {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}},
        "content": {media: {"schema": schema}},
    }


def _errors(reasons: dict[str, str], *, body: bool, stored: bool = False) -> dict[str, Schema]:
    out = {code: _response(why, ref("Error")) for code, why in reasons.items()}
    if stored:
        out["401"] = _response(reasons["401"], ref("StoredAuthError"))
    if body:
        out["413"] = _response("the body is over HUB_MAX_REQUEST_BODY", ref("Error"))
    return out


def _path_param(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": description,
    }


def _query_param(name: str, schema: Schema, description: str, required: bool = False) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


_SECURED: list[dict[str, list[str]]] = [{"apiKey": []}, {"bearer": []}]
_PROJECT_KEY = _path_param("projectKey", {"type": "string"}, "the project's key (public)")
_SESSION_ID = _path_param(
    "sessionId",
    {"type": "string", "pattern": r"^[A-Za-z0-9._:-]{1,128}$"},
    "a session id (SPEC §4.1); any other is 404 (400 for agent-token)",
)
_PROJECT_ID = _path_param("projectId", {"type": "integer", "minimum": 1}, "the project's id")


def _assist_paths() -> dict[str, Schema]:
    page = _response("one page of live sessions, newest first by default", ref("SessionPage"))
    list_params = [
        _PROJECT_KEY,
        _query_param("page", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}, "page"),
        _query_param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "per page"),
        _query_param("sort", {"type": "string", "enum": SORT_FIELDS}, "a record field, any case"),
        _query_param("order", {"type": "string", "enum": ["ASC", "DESC", "asc", "desc"]}, ""),
    ]
    base = "/api/v1/{projectKey}/assist"
    return {
        f"{base}/sessions": {
            "get": {
                "operationId": "listLiveSessions",
                "tags": ["assist"],
                "summary": "One page of the project's live sessions",
                "security": _SECURED,
                "parameters": list_params,
                "responses": {"200": page, **_errors(_ASSIST_ERRORS, body=False)},
            },
            "post": {
                "operationId": "searchLiveSessions",
                "tags": ["assist"],
                "summary": "One page of the project's live sessions that match the filters",
                "security": _SECURED,
                "parameters": [_PROJECT_KEY],
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": ref("SessionSearch")}},
                },
                "responses": {"200": page, **_errors(_ASSIST_ERRORS, body=True)},
            },
        },
        f"{base}/sessions/{{sessionId}}": {
            "get": {
                "operationId": "getLiveSession",
                "tags": ["assist"],
                "summary": "One live session",
                "security": _SECURED,
                "parameters": [_PROJECT_KEY, _SESSION_ID],
                "responses": {
                    "200": _response("the live session", ref("OneSession")),
                    **_errors(_ASSIST_ERRORS, body=False),
                },
            },
        },
        f"{base}/sessions/{{sessionId}}/agent-token": {
            "post": {
                "operationId": "mintAgentToken",
                "tags": ["assist"],
                "summary": "A JWT (HS256, 1 h) for an agent of this project and session",
                "security": _SECURED,
                "parameters": [_PROJECT_KEY, _SESSION_ID],
                "responses": {
                    "200": _response("the token", ref("AgentToken")),
                    **_errors(_ASSIST_ERRORS, body=True),
                },
            },
        },
        f"{base}/autocomplete": {
            "get": {
                "operationId": "autocomplete",
                "tags": ["assist"],
                "summary": "Distinct values of one filter type among the live sessions",
                "security": _SECURED,
                "parameters": [
                    _PROJECT_KEY,
                    _query_param(
                        "type",
                        {"type": "string", "enum": sorted(FILTER_TYPES)},
                        "a filter type, any case",
                        required=True,
                    ),
                    _query_param("q", {"type": "string", "maxLength": 256}, "contained text"),
                    _query_param("source", {"type": "string"}, "the metadata key (METADATA)"),
                ],
                "responses": {
                    "200": _response("at most 10 values", ref("Autocomplete")),
                    **_errors(_ASSIST_ERRORS, body=False),
                },
            },
        },
    }


def _stored_paths() -> dict[str, Schema]:
    base = "/api/project/{projectId}/integration/api/session"
    return {
        f"{base}/search": {
            "post": {
                "operationId": "searchStoredSessions",
                "tags": ["stored"],
                "summary": "Stored sessions whose compact JSON holds search_string",
                "security": _SECURED,
                "parameters": [_PROJECT_ID],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ref("StoredSearch")}},
                },
                "responses": {
                    "200": _response("matches, most recently updated first", ref("StoredPage")),
                    **_errors(_STORED_ERRORS, body=True, stored=True),
                    "422": _response(
                        "the search ran past HUB_SEARCH_TIMEOUT and was stopped: the"
                        ' search_string is too broad (docs/store.md, "Bounded cost")',
                        ref("Error"),
                    ),
                },
            }
        },
        f"{base}/{{sessionId}}": {
            "get": {
                "operationId": "getStoredSession",
                "tags": ["stored"],
                "summary": "The most recently updated stored session with that id",
                "security": _SECURED,
                "parameters": [_PROJECT_ID, _SESSION_ID],
                "responses": {
                    "200": _response("the stored session", ref("StoredSession")),
                    **_errors(_STORED_ERRORS, body=False, stored=True),
                },
            }
        },
    }


def _ops_paths() -> dict[str, Schema]:
    def op(operation_id: str, summary: str, responses: dict[str, Schema]) -> Schema:
        return {
            "get": {
                "operationId": operation_id,
                "tags": ["operations"],
                "summary": summary,
                "security": [],
                "responses": responses,
            }
        }

    metrics_text = {"type": "string"}
    return {
        "/health": op("health", "Liveness", {"200": _response("running", ref("Health"))}),
        "/ready": op(
            "ready",
            "Readiness: the registry and the store answer",
            {
                "200": _response("ready", ref("Readiness")),
                "503": _response("not ready; error names what fails", ref("Readiness")),
            },
        ),
        "/metrics": op(
            "metrics",
            "Prometheus metrics of this node",
            {"200": _response("Prometheus text format 0.0.4", metrics_text, "text/plain")},
        ),
        "/openapi.json": op(
            "openapi",
            "This document",
            {"200": _response("OpenAPI 3.1", {"type": "object"})},
        ),
    }


def build_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the REST API, as a new dict."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "livehub",
            "version": __version__,
            "description": "Live sessions (Assist API), stored-session search and operations.",
        },
        "paths": {**_assist_paths(), **_stored_paths(), **_ops_paths()},
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "Authorization: <key>",
                },
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Authorization: Bearer <key>",
                },
            },
            "headers": {
                "RequestId": {
                    "description": "the request's id (the client's X-Request-Id when sane)",
                    "schema": {"type": "string"},
                    "required": True,
                }
            },
        },
    }


@functools.cache
def document_text() -> str:
    """The document as JSON text (built once: it depends on nothing that changes)."""
    return json.dumps(build_document(), ensure_ascii=False)


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of every REST route."""
    return web.Response(text=document_text(), content_type="application/json", charset="utf-8")
