"""Agent tokens (hub/tokens.py): what is minted, and every way a token is refused."""

from __future__ import annotations

import base64
import json
import time
import warnings
from typing import Any

import jwt
import pytest

from hub.errors import Forbidden, Unauthorized
from hub.tokens import TOKEN_LIFETIME, AgentTokens, strip_bearer

SECRET = "s" * 43
PK = "A1b2C3d4E5f6G7h8I9j0"


def tokens(clock: float | None = None, secret: str = SECRET) -> AgentTokens:
    async def read() -> str:
        return secret

    if clock is None:
        return AgentTokens(read)
    return AgentTokens(read, clock=lambda: clock)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "projectId": 3,
        "projectKey": PK,
        "sessionId": "s1",
        "iat": now,
        "exp": now + 60,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():  # HS384/HS512 want longer keys than the test's
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(payload, secret, algorithm=algorithm)


async def test_a_minted_token_carries_the_claims_and_lasts_an_hour() -> None:
    minted = await tokens(clock=1_700_000_000.5).mint(3, PK, "s1")
    header = json.loads(base64.urlsafe_b64decode(minted.split(".")[0] + "=="))
    assert header["alg"] == "HS256"
    body = jwt.decode(minted, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert body == {
        "projectId": 3,
        "projectKey": PK,
        "sessionId": "s1",
        "iat": 1_700_000_000,
        "exp": 1_700_000_000 + TOKEN_LIFETIME,
    }
    assert TOKEN_LIFETIME == 3600


async def test_a_fresh_token_verifies_for_its_session() -> None:
    issuer = tokens()
    minted = await issuer.mint(3, PK, "s1")
    for presented in (minted, f"Bearer {minted}", f"  bearer   {minted} "):
        verified = await issuer.verify(presented, PK, "s1")
        assert (verified.project_id, verified.project_key, verified.session_id) == (3, PK, "s1")
        assert verified.expires_at - verified.issued_at == TOKEN_LIFETIME


async def test_an_expired_token_is_refused() -> None:
    old = await tokens(clock=time.time() - TOKEN_LIFETIME - 1).mint(3, PK, "s1")
    with pytest.raises(Unauthorized, match="expired"):
        await tokens().verify(old, PK, "s1")
    with pytest.raises(Unauthorized, match="expired"):
        await tokens().verify(sign(claims(exp=int(time.time()) - 1)), PK, "s1")


async def test_a_token_of_another_session_or_project_is_forbidden() -> None:
    minted = await tokens().mint(3, PK, "s1")
    with pytest.raises(Forbidden, match="another session"):
        await tokens().verify(minted, PK, "s2")
    with pytest.raises(Forbidden, match="another project"):
        await tokens().verify(minted, "Z1b2C3d4E5f6G7h8I9j0", "s1")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "   ",
        "Bearer ",
        "garbage",
        "a.b.c",
        sign(claims(), secret="t" * 43),  # another secret
        sign(claims(), algorithm="HS384"),  # the right secret, another algorithm
        sign(claims(), algorithm="HS512"),
        jwt.encode(claims(), None, algorithm="none"),
        sign(claims(exp=None)),  # every claim is required
        sign(claims(iat=None)),
        sign(claims(projectId=None)),
        sign(claims(projectKey=None)),
        sign(claims(sessionId=None)),
        sign(claims(projectId="3")),  # and of its type
        sign(claims(projectId=True)),
        sign(claims(projectKey=5)),
        sign(claims(sessionId=["s1"])),
        sign(claims(iat="now")),
        sign(claims(exp="later")),
    ],
)
async def test_bad_tokens_are_unauthorized(token: str) -> None:
    with pytest.raises(Unauthorized):
        await tokens().verify(token, PK, "s1")


async def test_a_token_with_a_future_iat_is_refused() -> None:
    with pytest.raises(Unauthorized):
        await tokens().verify(sign(claims(iat=int(time.time()) + 3600)), PK, "s1")


async def test_the_secret_is_read_once() -> None:
    reads = 0

    async def read() -> str:
        nonlocal reads
        reads += 1
        return SECRET

    issuer = AgentTokens(read)
    minted = await issuer.mint(1, PK, "s")
    await issuer.verify(minted, PK, "s")
    await issuer.mint(1, PK, "s")
    assert reads == 1


def test_strip_bearer() -> None:
    assert strip_bearer("Bearer abc") == "abc"
    assert strip_bearer("BEARER  abc ") == "abc"
    assert strip_bearer(" abc ") == "abc"
    assert strip_bearer("Bearerabc") == "Bearerabc"
