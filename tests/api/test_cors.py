"""HUB_CORS_ORIGINS (api/cors.py): browsers of the listed origins may call the REST API."""

from __future__ import annotations

import pytest

from tests.conftest import Hub, HubFactory

APP = "https://app.example.com"
EVIL = "https://evil.example.net"
PREFLIGHT = {"Access-Control-Request-Method": "POST"}


@pytest.fixture
async def cors_hub(make_hub: HubFactory) -> Hub:
    return await make_hub(cors_origins=(APP, "http://localhost:3000/"))


async def sessions_path(hub: Hub) -> tuple[str, str]:
    project = await hub.project()
    key = await hub.key(project.project_id)
    return f"/api/v1/{project.project_key}/assist/sessions", key.secret


async def test_a_preflight_from_an_allowed_origin_is_answered(cors_hub: Hub) -> None:
    path, _ = await sessions_path(cors_hub)
    headers = {
        "Origin": APP,
        **PREFLIGHT,
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    response = await cors_hub.client.options(path, headers=headers)
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == APP
    methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST"} <= methods
    allowed = {
        h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {"authorization", "content-type"} <= allowed
    assert int(response.headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in response.headers.getall("Vary")
    assert "Access-Control-Allow-Credentials" not in response.headers


async def test_a_preflight_from_another_origin_is_refused(cors_hub: Hub) -> None:
    path, _ = await sessions_path(cors_hub)
    for origin in (EVIL, "null", "https://app.example.com.evil.net", "http://app.example.com"):
        response = await cors_hub.client.options(path, headers={"Origin": origin, **PREFLIGHT})
        assert response.status == 403, origin
        assert await response.json() == {"error": "origin not allowed"}
        assert "Access-Control-Allow-Origin" not in response.headers
        assert "Access-Control-Allow-Methods" not in response.headers


async def test_origins_match_ignoring_case_and_a_trailing_slash(cors_hub: Hub) -> None:
    path, _ = await sessions_path(cors_hub)
    for origin in ("HTTPS://APP.example.com", "http://localhost:3000"):
        response = await cors_hub.client.options(path, headers={"Origin": origin, **PREFLIGHT})
        assert response.status == 204, origin
        assert response.headers["Access-Control-Allow-Origin"] == origin


async def test_answers_to_an_allowed_origin_carry_its_name(cors_hub: Hub) -> None:
    path, key = await sessions_path(cors_hub)
    ok = await cors_hub.client.get(path, headers={"Origin": APP, "Authorization": key})
    assert ok.status == 200
    assert ok.headers["Access-Control-Allow-Origin"] == APP
    assert ok.headers["Access-Control-Expose-Headers"] == "X-Request-Id"
    assert "Origin" in ok.headers.getall("Vary")
    # Errors too: the page must be able to read why it was refused.
    refused = await cors_hub.client.post(path, headers={"Origin": APP}, json={})
    assert refused.status == 401
    assert refused.headers["Access-Control-Allow-Origin"] == APP


async def test_answers_to_another_origin_carry_no_cors_header(cors_hub: Hub) -> None:
    path, key = await sessions_path(cors_hub)
    response = await cors_hub.client.get(path, headers={"Origin": EVIL, "Authorization": key})
    # Answered (CORS is for browsers; the key is the protection) but not readable by the page.
    assert response.status == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Origin" in response.headers.getall("Vary")
    plain = await cors_hub.client.get(path, headers={"Authorization": key})
    assert "Access-Control-Allow-Origin" not in plain.headers


async def test_a_preflight_for_an_unknown_path_is_404(cors_hub: Hub) -> None:
    response = await cors_hub.client.options("/nope", headers={"Origin": APP, **PREFLIGHT})
    assert response.status == 404
    assert await response.json() == {"error": "not found"}
    assert response.headers["Access-Control-Allow-Origin"] == APP


async def test_without_origins_there_is_no_cors(hub: Hub) -> None:
    path, key = await sessions_path(hub)
    preflight = await hub.client.options(path, headers={"Origin": APP, **PREFLIGHT})
    assert preflight.status == 405
    assert "Access-Control-Allow-Origin" not in preflight.headers
    response = await hub.client.get(path, headers={"Origin": APP, "Authorization": key})
    assert response.status == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Vary" not in response.headers


async def test_a_star_allows_every_origin(make_hub: HubFactory) -> None:
    hub = await make_hub(cors_origins=("*",))
    response = await hub.client.options("/health", headers={"Origin": EVIL, **PREFLIGHT})
    assert response.status == 204
    # The origin itself, not "*": the answer stays specific to the caller.
    assert response.headers["Access-Control-Allow-Origin"] == EVIL


async def test_the_socket_endpoint_keeps_its_own_cors(cors_hub: Hub) -> None:
    # Engine.IO answers its own preflights; the REST middleware leaves that path alone.
    response = await cors_hub.client.options(
        "/ws-assist/socket/?EIO=4&transport=polling", headers={"Origin": EVIL, **PREFLIGHT}
    )
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Methods"] == "OPTIONS, GET, POST"  # Engine.IO's
    # Nor does it give it a request id: its log lines carry the connection id instead.
    assert "X-Request-Id" not in response.headers
