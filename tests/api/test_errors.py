"""api.errors: every error becomes JSON with the right status, and nothing leaks a traceback.

Unit tests on a small application that carries only the middleware and handlers that raise.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from api.errors import error_middleware, read_json_object, status_of
from hub import errors

Client = TestClient[web.Request, web.Application]
MAX_BODY = 1024 * 1024
ClientFactory = Callable[..., Awaitable[Client]]

RAISED: dict[str, Exception] = {
    "invalid": errors.InvalidInput("page must be an integer", "page"),
    "too-large": errors.TooLarge("sessionInfo is over 16384 bytes"),
    "unauthorized": errors.Unauthorized("invalid or missing API key"),
    "fixed-body": errors.Unauthorized(
        "bad auth", body={"error": {"message": "Invalid authentication"}}
    ),
    "forbidden": errors.Forbidden("this API key does not cover this project"),
    "not-found": errors.ProjectNotFound("project not found"),
    "session-not-found": errors.SessionNotFound("session not found"),
    "unavailable": errors.RegistryUnavailable("registry unavailable"),
    "store-unavailable": errors.StoreUnavailable("store unavailable"),
    "rate-limited": errors.RateLimited("slow down"),
    "conflict": errors.TabAlreadyConnected("tab 1 is already connected"),
    "empty-message": errors.Forbidden(),
    "hub-internal": errors.HubError("secret detail /etc/passwd"),
    "settings": errors.SettingsError("HUB_PORT: secret detail"),
    "bug": KeyError("secret detail"),
    "zero": ZeroDivisionError("division by zero"),
}


async def raising(request: web.Request) -> web.Response:
    raise RAISED[request.match_info["name"]]


async def echo(request: web.Request) -> web.Response:
    return web.json_response({"body": await read_json_object(request)})


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/elsewhere")


async def teapot(request: web.Request) -> web.Response:
    raise web.HTTPBadRequest(text="<html>some text</html>")


async def fine(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@pytest.fixture
async def client(aiohttp_client: ClientFactory) -> Client:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[error_middleware])
    app.router.add_get("/raise/{name}", raising)
    app.router.add_post("/echo", echo)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/bad", teapot)
    app.router.add_get("/fine", fine)
    return await aiohttp_client(app)


@pytest.mark.parametrize(
    ("name", "status", "body"),
    [
        ("invalid", 400, {"error": "page must be an integer"}),
        ("too-large", 413, {"error": "sessionInfo is over 16384 bytes"}),
        ("unauthorized", 401, {"error": "invalid or missing API key"}),
        ("fixed-body", 401, {"error": {"message": "Invalid authentication"}}),
        ("forbidden", 403, {"error": "this API key does not cover this project"}),
        ("not-found", 404, {"error": "project not found"}),
        ("session-not-found", 404, {"error": "session not found"}),
        ("unavailable", 503, {"error": "registry unavailable"}),
        ("store-unavailable", 503, {"error": "store unavailable"}),
        ("rate-limited", 429, {"error": "slow down"}),
        ("conflict", 409, {"error": "tab 1 is already connected"}),
        ("empty-message", 403, {"error": "forbidden"}),
    ],
)
async def test_hub_errors_become_their_status_and_json(
    client: Client, name: str, status: int, body: dict[str, Any]
) -> None:
    response = await client.get(f"/raise/{name}")
    assert response.status == status
    assert response.content_type == "application/json"
    assert await response.json() == body


@pytest.mark.parametrize("name", ["hub-internal", "settings", "bug", "zero"])
async def test_failures_are_500_without_details_and_logged(
    client: Client, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="api.errors"):
        response = await client.get(f"/raise/{name}")
    assert response.status == 500
    text = await response.text()
    assert "secret" not in text
    assert "Traceback" not in text
    assert await response.json() == {"error": "internal server error"}
    # The operator gets the traceback in the log instead.
    records = [r for r in caplog.records if r.name == "api.errors"]
    assert records
    assert records[0].exc_info is not None
    assert records[0].exc_info[1] is RAISED[name]


def test_status_of_every_kind() -> None:
    assert status_of(errors.SessionDataTooLarge("x")) == 413
    assert status_of(errors.KeyNotFound("x")) == 404
    assert status_of(errors.HubError("x")) == 500


async def test_unknown_route_is_json_404(client: Client) -> None:
    response = await client.get("/nowhere")
    assert response.status == 404
    assert await response.json() == {"error": "not found"}


async def test_wrong_method_is_json_405_with_allow(client: Client) -> None:
    response = await client.delete("/fine")
    assert response.status == 405
    assert await response.json() == {"error": "method not allowed"}
    assert "GET" in response.headers["Allow"]


async def test_aiohttp_errors_raised_by_handlers_answer_json(client: Client) -> None:
    response = await client.get("/bad")
    assert response.status == 400
    assert await response.json() == {"error": "bad request"}


async def test_redirects_pass_through(client: Client) -> None:
    response = await client.get("/redirect", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "/elsewhere"


async def test_success_passes_through(client: Client) -> None:
    response = await client.get("/fine")
    assert response.status == 200
    assert await response.json() == {"ok": True}


async def test_body_at_client_max_size_is_read(client: Client) -> None:
    raw = b'{"a": "' + b"x" * (MAX_BODY - 10) + b'"}'
    assert len(raw) == MAX_BODY - 1
    response = await client.post("/echo", data=raw)
    assert response.status == 200


async def test_body_over_client_max_size_is_json_413(client: Client) -> None:
    raw = b'{"a": "' + b"x" * MAX_BODY + b'"}'
    response = await client.post("/echo", data=io.BytesIO(raw))
    assert response.status == 413
    assert await response.json() == {"error": "request body too large"}


@pytest.mark.parametrize(
    ("raw", "body"),
    [
        (b"", {}),
        (b"  \n", {}),
        (b'{"a": [1, "\\u00e9"]}', {"a": [1, "é"]}),
        ('{"a": "é"}'.encode(), {"a": "é"}),
    ],
)
async def test_json_objects_are_read(client: Client, raw: bytes, body: dict[str, Any]) -> None:
    response = await client.post("/echo", data=raw, headers={"Content-Type": "text/plain"})
    assert response.status == 200
    assert await response.json() == {"body": body}


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"{'a': 1}",
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": -Infinity}',
        b'{"a": 1} trailing',
        b"\xff\xfe{}",
        b'{"a": "\xe9"}',  # Latin-1, not UTF-8
        b"\xef\xbb\xbf{}",  # a byte order mark
        b"[" * 100_000,  # deep enough to exhaust the recursion limit
        b'{"a":' * 50_000,
    ],
)
async def test_invalid_json_is_400(client: Client, raw: bytes) -> None:
    response = await client.post("/echo", data=raw)
    assert response.status == 400
    assert await response.json() == {"error": "invalid JSON body"}


@pytest.mark.parametrize("raw", [b"[]", b"[{}]", b"1", b'"{}"', b"null", b"true"])
async def test_json_that_is_not_an_object_is_400(client: Client, raw: bytes) -> None:
    response = await client.post("/echo", data=raw)
    assert response.status == 400
    assert await response.json() == {"error": "request body must be a JSON object"}
