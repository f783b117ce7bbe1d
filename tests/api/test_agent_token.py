"""``POST /api/v1/{projectKey}/assist/sessions/{sessionId}/agent-token`` (SPEC §4.4)."""

from __future__ import annotations

import json
import time

import jwt
import socketio

from hub.typedefs import AGENT_TOKENS, STORE
from tests.api.conftest import Assist
from tests.conftest import ClientFactory


def token_path(session_id: str = "s1") -> str:
    return f"/sessions/{session_id}/agent-token"


async def test_a_token_for_a_live_session(assist: Assist) -> None:
    await assist.add("s1")
    before = int(time.time())
    response = await assist.post(suffix=token_path())
    assert response.status == 200, await response.text()
    body = await response.json()
    assert list(body) == ["data"] and list(body["data"]) == ["token"]
    secret = await assist.hub.app[STORE].jwt_secret()
    claims = jwt.decode(body["data"]["token"], secret, algorithms=["HS256"])
    assert claims["projectId"] == assist.project.project_id
    assert claims["projectKey"] == assist.project.project_key
    assert claims["sessionId"] == "s1"
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] == claims["iat"] + 3600


async def test_bearer_and_organization_keys_work(assist: Assist) -> None:
    await assist.add("s1")
    for key in (f"Bearer {assist.key.secret}", assist.org_key.secret):
        response = await assist.post(suffix=token_path(), key=key)
        assert response.status == 200, await response.text()


async def test_the_checks_in_order(assist: Assist) -> None:
    await assist.add("s1")
    other = await assist.hub.project("other")
    other_key = await assist.hub.key(other.project_id)
    revoked = await assist.hub.key(assist.project.project_id, "revoked")
    await assist.hub.app[STORE].revoke_key(revoked.key_id)
    unknown_project = "A1b2C3d4E5f6G7h8I9j0"
    cases = [
        # No valid key: 401 whatever else is wrong.
        (None, None, "s1", 401),
        ("lh_nope", None, "s1", 401),
        (revoked.secret, None, "s1", 401),
        (None, unknown_project, "bad%20id", 401),
        # A valid key: an unknown project is 404, before the 403 of a key of another project.
        (other_key.secret, unknown_project, "s1", 404),
        (other_key.secret, None, "s1", 403),
        (other_key.secret, None, "bad%20id", 403),
        # Then the sessionId (400), then whether the session is live (404).
        (assist.key.secret, None, "x" * 129, 400),
        (assist.key.secret, None, "bad%20id", 400),
        (assist.key.secret, None, "s2", 404),
    ]
    for key, project_key, session_id, status in cases:
        response = await assist.post(
            suffix=token_path(session_id), key=key, project_key=project_key
        )
        assert response.status == status, (key, project_key, session_id, await response.text())
        assert "error" in await response.json()


async def test_a_bad_session_id_names_the_field(assist: Assist) -> None:
    response = await assist.post(suffix=token_path("x" * 129))
    assert response.status == 400
    assert (await response.json())["error"].startswith("sessionId ")


async def test_only_post_is_allowed(assist: Assist) -> None:
    await assist.add("s1")
    response = await assist.get(token_path())
    assert response.status == 405


async def test_the_token_lets_an_agent_in(assist: Assist, sio_connect: ClientFactory) -> None:
    await assist.add("s1")
    await assist.add("s2")
    response = await assist.post(suffix=token_path())
    token = (await response.json())["data"]["token"]
    query = {
        "identity": "agent",
        "peerId": f"{assist.project.project_key}-s1",
        "agentInfo": json.dumps({"id": "a1"}),
    }
    watcher = await sio_connect(assist.hub.url, query=query, auth={"token": f"Bearer {token}"})
    assert watcher.connected
    # The same token does not open another session of the project.
    errors: list[object] = []
    query["peerId"] = f"{assist.project.project_key}-s2"
    try:
        await sio_connect(
            assist.hub.url,
            query=query,
            auth={"token": token},
            handlers={"connect_error": errors.append},
        )
    except socketio.exceptions.ConnectionError:
        pass
    else:
        raise AssertionError("a token of s1 opened s2")
    assert errors == [{"message": "the token is for another session"}]


async def test_every_node_of_a_cluster_signs_with_the_same_secret(assist: Assist) -> None:
    await assist.add("s1")
    response = await assist.post(suffix=token_path())
    token = (await response.json())["data"]["token"]
    verified = await assist.hub.app[AGENT_TOKENS].verify(token, assist.project.project_key, "s1")
    assert verified.session_id == "s1"
