"""GET /openapi.json (SPEC §5.3): the document, its coverage of the routes, and the checker that
holds every REST response of the tests to it (tests/openapi_validation.py)."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator

from api.openapi import build_document
from hub.typedefs import SETTINGS
from tests.api.conftest import Assist
from tests.conftest import Hub
from tests.openapi_validation import OpenApiValidator, resolve, validate_responses

Client = TestClient[web.Request, web.Application]

JSON = {"Content-Type": "application/json; charset=utf-8", "X-Request-Id": "r1"}


def documented_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item}


def served_operations(hub: Hub) -> set[tuple[str, str]]:
    socket_path = hub.app[SETTINGS].socket_path.rstrip("/")
    served = set()
    for route in hub.app.router.routes():
        resource = route.resource
        assert resource is not None
        path = resource.canonical
        if path.rstrip("/") == socket_path or route.method in ("HEAD", "OPTIONS"):
            continue
        served.add((route.method, path))
    return served


async def test_the_document_is_served(hub: Hub) -> None:
    response = await hub.client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    document = await response.json()
    assert document == json.loads(json.dumps(build_document()))
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] == "livehub"


async def test_every_route_is_documented_and_every_documented_route_is_served(hub: Hub) -> None:
    assert served_operations(hub) == documented_operations(build_document())


def test_every_schema_is_valid_json_schema_2020_12() -> None:
    document = build_document()
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(resolve(document, schema))
    for item in document["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                Draft202012Validator.check_schema(parameter["schema"])
                assert parameter["in"] in ("path", "query")
                if parameter["in"] == "path":
                    assert parameter["required"] is True
            for status, response in operation["responses"].items():
                assert status.isdigit(), status
                for media in response.get("content", {}).values():
                    Draft202012Validator.check_schema(resolve(document, media["schema"]))


def test_both_authorization_forms_are_modelled() -> None:
    document = build_document()
    schemes = document["components"]["securitySchemes"]
    assert schemes["apiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "Authorization: <key>",
    }
    assert schemes["bearer"]["type"] == "http" and schemes["bearer"]["scheme"] == "bearer"
    for path, item in document["paths"].items():
        for operation in item.values():
            if path.startswith("/api/"):
                assert operation["security"] == [{"apiKey": []}, {"bearer": []}], path
            else:
                assert operation["security"] == [], path


def test_error_bodies_are_documented_per_api() -> None:
    document = build_document()
    error = {"$ref": "#/components/schemas/Error"}
    stored_401 = {"$ref": "#/components/schemas/StoredAuthError"}
    for path, item in document["paths"].items():
        if not path.startswith("/api/"):
            continue
        for operation in item.values():
            responses = operation["responses"]
            for status in ("400", "401", "404"):
                schema = responses[status]["content"]["application/json"]["schema"]
                if path.startswith("/api/project/") and status == "401":
                    assert schema == stored_401
                else:
                    assert schema == error, (path, status)
    body = resolve(document, stored_401)
    Draft202012Validator(body).validate({"error": {"message": "Invalid authentication"}})
    assert not Draft202012Validator(body).is_valid({"error": "Invalid authentication"})


# -- the checker itself: it must be able to fail -----------------------------------------------


def test_the_checker_refuses_what_the_document_does_not_allow() -> None:
    checker = OpenApiValidator()
    session_path = "/api/v1/abc/assist/sessions"
    ok = json.dumps({"data": {"total": 0, "sessions": []}}).encode()
    checker.check("GET", session_path, 200, JSON, ok)
    checker.check("HEAD", session_path, 200, JSON, b"")
    cases: list[tuple[str, str, int, dict[str, str], bytes, str]] = [
        ("GET", session_path, 418, JSON, ok, "status not documented"),
        ("GET", session_path, 200, {**JSON, "Content-Type": "text/html"}, ok, "media type"),
        ("GET", session_path, 200, {"Content-Type": "application/json"}, ok, "X-Request-Id"),
        ("GET", session_path, 200, JSON, b"{", "not JSON"),
        ("GET", session_path, 200, JSON, b'{"data": {"total": -1, "sessions": []}}', "match"),
        ("GET", session_path, 401, JSON, b'{"error": {"message": "x"}}', "match"),
        (
            "POST",
            "/api/project/1/integration/api/session/search",
            401,
            JSON,
            b'{"error": "x"}',
            "match",
        ),
        ("GET", "/health", 200, JSON, b'{"status": "ok", "extra": 1}', "match"),
    ]
    for method, path, status, headers, body, problem in cases:
        with pytest.raises(AssertionError, match=problem):
            checker.check(method, path, status, headers, body)
    # What the document does not list is left to the tests of those answers.
    checker.check("DELETE", session_path, 405, JSON, b'{"error": "method not allowed"}')
    checker.check("GET", "/nope", 404, JSON, b'{"error": "not found"}')


def test_literal_paths_win_over_templates() -> None:
    checker = OpenApiValidator()
    token = checker.operation("POST", "/api/v1/k/assist/sessions/s1/agent-token")
    assert token is not None and token.template.endswith("/agent-token")
    one = checker.operation("GET", "/api/v1/k/assist/sessions/s1")
    assert one is not None and one.template.endswith("{sessionId}")
    assert checker.operation("GET", "/api/v1/k/assist/autocomplete") is not None
    assert checker.operation("GET", "/api/v1/k/assist/sessions/a/b") is None


async def test_the_test_clients_check_every_response(
    hub: Hub, aiohttp_client: Callable[..., Awaitable[Client]]
) -> None:
    # The hub fixture's client is checked: a document that disagrees with the server fails it.
    document = build_document()
    strict = copy.deepcopy(document)
    strict["components"]["schemas"]["Health"]["properties"]["status"] = {"const": "healthy"}
    client = await aiohttp_client(hub.app.__class__())  # a bare app: nothing to serve
    validate_responses(client, OpenApiValidator(strict))
    with pytest.raises(AssertionError, match="GET /health"):
        # 404 is not documented for /health: the bare app has no such route.
        await client.get("/health")
    validate_responses(hub.client, OpenApiValidator(strict))
    with pytest.raises(AssertionError, match="does not match"):
        await hub.client.get("/health")


# -- every operation, with good and bad input: the hook checks each answer ----------------------


async def test_every_assist_answer_is_documented(assist: Assist) -> None:
    await assist.add("s1", userID="ada", userOs="Mac OS", metadata={"plan": "trial"})
    org = assist.org_key.secret
    other = await assist.hub.project("other")
    expected = [
        (await assist.get(), 200),
        (await assist.get(key="Bearer " + org, params={"page": "2", "limit": "1"}), 200),
        (await assist.get(params={"limit": "0"}), 400),
        (await assist.get(key=None), 401),
        (await assist.get(key="lh_nope_nope"), 401),
        (await assist.get(project_key="NoSuchProject1234567"), 404),
        (await assist.post({"filters": [{"type": "USEROS", "value": ["mac"]}]}), 200),
        (await assist.post({"filters": [{"type": "nope"}]}), 400),
        (await assist.post(data=b"{"), 400),
        (await assist.get("/sessions/s1"), 200),
        (await assist.get("/sessions/none"), 404),
        (await assist.get("/autocomplete", params={"type": "USEROS", "q": "ma"}), 200),
        (await assist.get("/autocomplete", params={"type": "METADATA"}), 400),
        (await assist.post(suffix="/sessions/s1/agent-token"), 200),
        (await assist.post(suffix="/sessions/gone/agent-token"), 404),
    ]
    too_large = io.BytesIO(b"[" * 2_000_000)
    headers = {"Authorization": assist.key.secret}
    expected.append(
        (await assist.hub.client.post(assist.path(), data=too_large, headers=headers), 413)
    )
    other_key = await assist.hub.key(other.project_id)
    expected.append((await assist.get(key=other_key.secret), 403))
    for response, status in expected:
        assert response.status == status, (response.url, await response.text())
        assert response.headers["X-Request-Id"]


async def test_every_stored_and_ops_answer_is_documented(hub: Hub) -> None:
    project = await hub.project()
    key = (await hub.key(project.project_id)).secret
    base = f"/api/project/{project.project_id}/integration/api/session"
    bearer = {"Authorization": f"Bearer {key}"}
    answers = [
        (await hub.client.post(f"{base}/search", json={"search_string": "x"}, headers=bearer), 200),
        (await hub.client.post(f"{base}/search", json={}, headers=bearer), 400),
        (await hub.client.post(f"{base}/search", json={"search_string": "x"}), 401),
        (await hub.client.get(f"{base}/nope", headers=bearer), 404),
        (await hub.client.get("/api/project/99/integration/api/session/x", headers=bearer), 401),
        (await hub.client.get("/health"), 200),
        (await hub.client.get("/ready"), 200),
        (await hub.client.get("/metrics"), 200),
        (await hub.client.get("/openapi.json"), 200),
    ]
    for response, status in answers:
        assert response.status == status, (response.url, await response.text())
    unauthorized = await hub.client.post(f"{base}/search", json={"search_string": "x"})
    assert await unauthorized.json() == {"error": {"message": "Invalid authentication"}}
