"""Agent tokens (SPEC §4.4): short-lived HS256 JWTs that let an agent join one live session.

The REST route ``POST /api/v1/{projectKey}/assist/sessions/{sessionId}/agent-token``
(api/agent_token.py) mints them for a holder of an API key; an agent then connects to ``/`` with
``auth={"token": …}`` and never needs the API key itself. The signing secret is the store's
(``HUB_JWT_SECRET``, else made once and kept in the database), so every node of a cluster accepts a
token any node minted.

Claims: ``projectId`` (int), ``projectKey``, ``sessionId``, ``iat`` and ``exp`` (``iat`` + 1 h).
Verification enforces the signature, HS256 and nothing else (``alg: none`` and every other
algorithm are refused), the expiry with no leeway, the presence and type of every claim, and that
the token is for the project and the session the agent asked for.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import jwt

from hub.errors import Forbidden, Unauthorized

ALGORITHM = "HS256"
TOKEN_LIFETIME = 3600  # seconds (SPEC §4.4: 1 h)
_REQUIRED = ("exp", "iat", "projectId", "projectKey", "sessionId")


@dataclass(frozen=True)
class AgentClaims:
    """What a valid agent token says."""

    project_id: int
    project_key: str
    session_id: str
    issued_at: int
    expires_at: int


class AgentTokens:
    """Mints and verifies agent tokens; the secret is read once from ``secret`` and kept.

    ``clock`` dates the tokens minted (tests mint expired ones with a clock in the past);
    verification always checks ``exp`` against the real time, with no leeway.
    """

    def __init__(
        self,
        secret: Callable[[], Awaitable[str]],
        *,
        lifetime: int = TOKEN_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._read_secret = secret
        self._secret: str | None = None
        self.lifetime = lifetime
        self._clock = clock

    async def secret(self) -> str:
        """The signing secret (read from the store on first use, then cached)."""
        if self._secret is None:
            self._secret = await self._read_secret()
        return self._secret

    async def mint(self, project_id: int, project_key: str, session_id: str) -> str:
        """A token for one session of one project, valid for ``lifetime`` seconds from now."""
        now = int(self._clock())
        claims = {
            "projectId": project_id,
            "projectKey": project_key,
            "sessionId": session_id,
            "iat": now,
            "exp": now + self.lifetime,
        }
        return jwt.encode(claims, await self.secret(), algorithm=ALGORITHM)

    async def verify(self, token: str, project_key: str, session_id: str) -> AgentClaims:
        """The claims of ``token`` when it is valid for that project and session.

        Raises Unauthorized for a token that is malformed, badly signed, of another algorithm,
        expired or missing a claim, and Forbidden for a valid token of another project or session.
        """
        token = strip_bearer(token)
        if not token:
            raise Unauthorized("missing token")
        try:
            claims = jwt.decode(
                token,
                await self.secret(),
                algorithms=[ALGORITHM],
                options={"require": list(_REQUIRED)},
            )
        except jwt.ExpiredSignatureError as e:
            raise Unauthorized("the token has expired") from e
        except jwt.InvalidTokenError as e:
            raise Unauthorized(f"invalid token: {e}") from e
        parsed = _claims(claims)
        if parsed.project_key != project_key:
            raise Forbidden("the token is for another project")
        if parsed.session_id != session_id:
            raise Forbidden("the token is for another session")
        return parsed


def strip_bearer(token: str) -> str:
    """``token`` without a leading ``Bearer `` (any case) and surrounding spaces."""
    token = token.strip()
    scheme, _, rest = token.partition(" ")
    if scheme.lower() == "bearer":
        return rest.strip()
    return token


def _claims(claims: dict[str, object]) -> AgentClaims:
    project_id, project_key = claims["projectId"], claims["projectKey"]
    session_id, iat, exp = claims["sessionId"], claims["iat"], claims["exp"]
    if isinstance(project_id, bool) or not isinstance(project_id, int):
        raise Unauthorized("invalid token: projectId must be an integer")
    if not isinstance(project_key, str) or not isinstance(session_id, str):
        raise Unauthorized("invalid token: projectKey and sessionId must be strings")
    if not isinstance(iat, int) or not isinstance(exp, int):
        raise Unauthorized("invalid token: iat and exp must be integers")
    return AgentClaims(project_id, project_key, session_id, iat, exp)
