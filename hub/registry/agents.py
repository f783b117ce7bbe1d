"""The agent directory: which agents are connected to each live session, across the cluster.

The assist relay (hub/agent.py) needs it to tell a joining tab which agents are there
(``AGENTS_CONNECTED``), to tell the tabs when the last agent left (``NO_AGENT``) and to skip
relaying a tracker's events when nobody watches. Two implementations behind one interface:
:class:`MemoryAgentDirectory` (one node) and
:class:`hub.registry.agents_redis.RedisAgentDirectory` (a cluster sharing one Redis).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from hub.settings import Settings


@dataclass(frozen=True)
class Agent:
    """One connected agent: its Socket.IO id and the ``agentInfo`` it connected with."""

    sid: str
    info: dict[str, Any]


class AgentDirectory(Protocol):
    """The agents of each session, in the order they joined."""

    async def start(self) -> None:
        """Connect and start the background work (the Redis directory's cleaning)."""

    async def close(self) -> None:
        """Forget every agent of this node and stop."""

    async def add(self, project_key: str, session_id: str, agent: Agent) -> None:
        """List an agent of this node under a session."""

    async def remove(self, project_key: str, session_id: str, sid: str) -> list[Agent]:
        """Unlist an agent of this node; the agents of the session that remain."""

    async def agents(self, project_key: str, session_id: str) -> list[Agent]:
        """The agents of a session, on every live node, in the order they joined."""

    async def has_agents(self, project_key: str, session_id: str) -> bool:
        """Whether a session may have agents: a cheap check made for every relayed event.

        False only when the session surely has none; True may be a second or so stale, which
        costs at most a relay nobody receives.
        """


class MemoryAgentDirectory:
    """The directory of a single node (no Redis)."""

    def __init__(self) -> None:
        self._sessions: dict[tuple[str, str], dict[str, Agent]] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._sessions.clear()

    async def add(self, project_key: str, session_id: str, agent: Agent) -> None:
        self._sessions.setdefault((project_key, session_id), {})[agent.sid] = agent

    async def remove(self, project_key: str, session_id: str, sid: str) -> list[Agent]:
        key = (project_key, session_id)
        agents = self._sessions.get(key)
        if agents is None:
            return []
        agents.pop(sid, None)
        if not agents:
            del self._sessions[key]
        return list(agents.values())

    async def agents(self, project_key: str, session_id: str) -> list[Agent]:
        return list(self._sessions.get((project_key, session_id), {}).values())

    async def has_agents(self, project_key: str, session_id: str) -> bool:
        return (project_key, session_id) in self._sessions


def create_agent_directory(settings: Settings) -> AgentDirectory:
    """The in-process directory when ``settings.redis_url`` is unset, else the Redis one."""
    if settings.redis_url is None:
        return MemoryAgentDirectory()
    from hub.registry.agents_redis import RedisAgentDirectory

    return RedisAgentDirectory(settings)
