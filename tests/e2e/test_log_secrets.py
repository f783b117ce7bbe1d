"""A real ``livehub serve`` at debug level with JSON logs: no secret in any line, every line JSON.

The whole flow a deployment sees: keys made with the CLI, a tracker, the Assist and stored-session
APIs called with a key in both Authorization forms, a wrong key, an agent token minted and used,
an agent with an API key, a forged token, and a subscriber of ``/live``. Then the node's whole log
is read: every line must be one JSON object, and none may hold an API key's secret, a token (or a
half of one), or the JWT signing secret.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from tests.conftest import ClientFactory
from tests.e2e.conftest import NodeFactory
from tests.e2e.harness import run_cli

pytestmark = pytest.mark.e2e


async def test_no_secret_reaches_the_log(
    tmp_path: Path, start_node: NodeFactory, sio_connect: ClientFactory
) -> None:
    jwt_secret = "jwt-" + secrets.token_urlsafe(32)
    env = {
        "HUB_DATABASE_URL": f"sqlite:///{tmp_path / 'hub.db'}",
        "HUB_LOG_LEVEL": "debug",
        "HUB_LOG_FORMAT": "json",
        "HUB_JWT_SECRET": jwt_secret,
        "HUB_SESSION_GRACE": "0.2",
    }
    project = run_cli("project", "create", "--name", "secrets", env=env)
    org_key = run_cli("key", "create", "--name", "org", env=env)["key"]
    project_key_secret = run_cli("key", "create", "--project", str(project["projectId"]), env=env)[
        "key"
    ]
    wrong_key = "lh_aaaaaaaaaaaa_" + secrets.token_hex(20)
    node = await start_node(**env)
    pk, project_id = project["projectKey"], project["projectId"]
    # Even a tracker that sends an Authorization header (it has no business to) is not logged.
    tracker = await sio_connect(
        node.url,
        query={"identity": "session", "peerId": f"{pk}-s1-tab1"},
        headers={"Authorization": f"Bearer {org_key}"},
    )
    assert await tracker.call("UPDATE_SESSION", {"userID": "ada"}, timeout=5) == {"ok": True}
    assert (await tracker.call("UPDATE_SESSION", {"active": "no"}, timeout=5))["ok"] is False

    tokens: list[str] = []
    assist = f"{node.url}/api/v1/{pk}/assist"
    stored = f"{node.url}/api/project/{project_id}/integration/api/session"
    async with aiohttp.ClientSession() as http:

        async def call(method: str, url: str, key: str, body: Any = None) -> Any:
            async with http.request(method, url, json=body, headers={"Authorization": key}) as r:
                return r.status, await r.json()

        assert (await call("GET", f"{assist}/sessions", org_key))[0] == 200
        assert (await call("POST", f"{assist}/sessions", f"Bearer {project_key_secret}", {}))[
            0
        ] == 200
        assert (await call("GET", f"{assist}/sessions/s1", f"bearer {org_key}"))[0] == 200
        assert (await call("GET", f"{assist}/sessions", wrong_key))[0] == 401
        assert (await call("GET", f"{assist}/sessions", f"Bearer {wrong_key}"))[0] == 401
        search = {"search_string": org_key}  # a secret in a body is not logged either
        assert (await call("POST", f"{stored}/search", f"Bearer {org_key}", search))[0] == 200
        assert (await call("POST", f"{stored}/search", wrong_key, search))[0] == 401
        status, body = await call("POST", f"{assist}/sessions/s1/agent-token", org_key)
        assert status == 200, body
        tokens.append(body["data"]["token"])

    token = tokens[0]
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    agent_query = {"identity": "agent", "peerId": f"{pk}-s1", "agentInfo": '{"id": "a1"}'}
    agent = await sio_connect(node.url, query=agent_query, auth={"token": f"Bearer {token}"})
    agent_by_key = await sio_connect(node.url, query=agent_query, auth={"apiKey": org_key})
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio_connect(node.url, query=agent_query, auth={"token": forged})
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio_connect(node.url, query=agent_query, auth={"apiKey": wrong_key})
    subscriber = await sio_connect(
        node.url, namespaces=["/live"], auth={"apiKey": org_key, "projectKey": pk}
    )
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio_connect(
            node.url, namespaces=["/live"], auth={"apiKey": wrong_key, "projectKey": pk}
        )
    for client in (subscriber, agent_by_key, agent, tracker):
        await client.disconnect()
    assert await node.stop() == 0

    log = node.log_path.read_text()
    lines = [json.loads(line) for line in log.splitlines()]  # every line is one JSON object
    assert all(isinstance(line, dict) and line["message"] is not None for line in lines)
    # The level was debug for real, and the context was there.
    assert any(line["level"] == "debug" and "request_id" in line for line in lines)
    assert any("connection_id" in line for line in lines)
    _, payload, signature = token.split(".")
    for secret in (
        org_key,
        project_key_secret,
        wrong_key,
        org_key.split("_")[-1],
        token,
        forged,
        payload,
        signature,
        jwt_secret,
    ):
        assert secret not in log, f"a secret reached the log: {secret[:12]}…"
