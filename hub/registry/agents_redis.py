"""The agent directory of a cluster: the agents of every session in Redis (docs/protocol.md).

Keys (spelled in :mod:`hub.constants`):

- ``lh:ag:{projectKey:sessionID}``, a hash: agent socket id → ``<nodeId>\\n<joined µs>\\n<agentInfo
  JSON>``;
- ``lh:n:<nodeId>:agents``, a set of ``<tag>\\n<agent socket id>`` the node holds;
- ``lh:agent-nodes``, a set of the node ids that hold agents.

An agent is listed only while its node is alive: its node beats in the registry's ``lh:nodes``
zset, and a listing skips entries of a node whose beat is older than ``HUB_NODE_TIMEOUT``. A
cleaning loop on every node then deletes the entries of such dead nodes, so a node killed with its
agents leaves nothing behind. A node that was only stalled (and so cleaned away) notices that its
set is short and writes its agents back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from string import Template

from redis.exceptions import RedisError

from hub import constants as c
from hub.errors import RegistryUnavailable
from hub.registry.agents import Agent
from hub.registry.redis_batch import ScriptBatcher
from hub.registry.redis_conn import open_redis, stop_task
from hub.settings import Settings

log = logging.getLogger(__name__)

POSITIVE_TTL = 1.0  # seconds a "this session has agents" answer is reused
MAX_BACKOFF = 5.0

_PRELUDE = """
local function cutoff_ms(timeout)
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(timeout)
end
local function node_of(value)
  return string.sub(value, 1, string.find(value, '\\n', 1, true) - 1)
end
"""

# KEYS: the session's agents hash. ARGV: node timeout ms. → {sid, value, …} of live nodes only.
_LIST = """
local cutoff = cutoff_ms(ARGV[1])
local alive = {}
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local node = node_of(all[i + 1])
  if alive[node] == nil then
    local beat = redis.call('ZSCORE', '${NODES}', node)
    alive[node] = beat ~= false and tonumber(beat) >= cutoff
  end
  if alive[node] then
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
  end
end
return out
"""

# ARGV: node timeout ms, a node to clean whatever its beat ("" for none). Deletes the entries of
# every node that holds agents and is silent. → how many entries were deleted.
_PURGE = """
local cutoff = cutoff_ms(ARGV[1])
local purged = 0
for _, node in ipairs(redis.call('SMEMBERS', '${AGENT_NODES}')) do
  local dead = node == ARGV[2]
  if not dead then
    local beat = redis.call('ZSCORE', '${NODES}', node)
    dead = beat == false or tonumber(beat) < cutoff
  end
  if dead then
    local set = '${NP}' .. node .. '${NA}'
    for _, member in ipairs(redis.call('SMEMBERS', set)) do
      local cut = string.find(member, '\\n', 1, true)
      local key = '${AG}' .. string.sub(member, 1, cut - 1) .. '}'
      local sid = string.sub(member, cut + 1)
      local value = redis.call('HGET', key, sid)
      if value and node_of(value) == node then
        redis.call('HDEL', key, sid)
        purged = purged + 1
      end
    end
    redis.call('DEL', set)
    redis.call('SREM', '${AGENT_NODES}', node)
  end
end
return purged
"""

_NAMES = {
    "NODES": c.NODES_ZSET,
    "AGENT_NODES": c.AGENT_NODES_SET,
    "NP": c.NODE_PREFIX,
    "NA": c.NODE_AGENTS_SUFFIX,
    "AG": c.AGENTS_PREFIX,
}


def _lua(body: str) -> str:
    return Template(_PRELUDE + body).substitute(_NAMES)


@dataclass(frozen=True)
class _Entry:
    """One agent of this node, as written to Redis (kept to write it back)."""

    session: tuple[str, str]
    hash_key: str
    member: str
    value: str


class RedisAgentDirectory:
    """The agents of every session of a cluster, in one Redis."""

    def __init__(self, settings: Settings, *, positive_ttl: float = POSITIVE_TTL) -> None:
        if settings.redis_url is None:
            raise ValueError("RedisAgentDirectory needs settings.redis_url")
        self.node_id = settings.node_id
        self._timeout_ms = round(settings.node_timeout * 1000)
        self._interval = min(1.0, settings.node_timeout / 4)
        self._positive_ttl = positive_ttl
        self._redis = open_redis(settings.redis_url)
        # Every tracker that joins asks for its session's agents: lookups made together share
        # one round trip.
        self._list = ScriptBatcher(self._redis, self._redis.register_script(_lua(_LIST)))
        self._purge = self._redis.register_script(_lua(_PURGE))
        self._node_key = c.node_agents_key(self.node_id)
        self._mine: dict[str, _Entry] = {}
        self._unremoved: dict[str, _Entry] = {}  # removals Redis refused, retried by the cleaner
        self._seen: dict[tuple[str, str], float] = {}  # session → until when "has agents" holds
        self._lock = asyncio.Lock()  # writes of this node's entries, one at a time
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Drop what an earlier life of this node id left, and start the cleaning loop."""
        try:
            await self._purge(args=[self._timeout_ms, self.node_id])
        except RedisError as e:
            raise RegistryUnavailable(f"Redis failed while starting the agents: {e}") from e
        self._task = asyncio.create_task(self._clean_loop(), name="agent directory cleaner")

    async def close(self) -> None:
        """Stop the loop and unlist every agent of this node."""
        if self._task is not None:
            await stop_task(self._task)
            self._task = None
        try:
            await self._purge(args=[self._timeout_ms, self.node_id])
        except RedisError:
            log.exception("node %s could not unlist its agents", self.node_id)
        self._mine.clear()
        await self._redis.aclose()

    async def add(self, project_key: str, session_id: str, agent: Agent) -> None:
        """List an agent of this node; RegistryUnavailable when Redis fails."""
        tag = c.session_tag(project_key, session_id)
        info = json.dumps(agent.info, separators=(",", ":"), ensure_ascii=False)
        entry = _Entry(
            session=(project_key, session_id),
            hash_key=c.agents_key(project_key, session_id),
            member=f"{tag}\n{agent.sid}",
            value=f"{self.node_id}\n{time.time_ns() // 1000}\n{info}",
        )
        async with self._lock:
            try:
                await self._write([entry])
            except RedisError as e:
                raise RegistryUnavailable(f"Redis failed while listing an agent: {e}") from e
            self._mine[agent.sid] = entry
        self._seen[entry.session] = time.monotonic() + self._positive_ttl

    async def remove(self, project_key: str, session_id: str, sid: str) -> list[Agent]:
        """Unlist an agent; a failed removal is retried by the cleaner. → the agents left."""
        async with self._lock:
            entry = self._mine.pop(sid, None)
            if entry is not None:
                try:
                    await self._delete(entry)
                except RedisError:
                    log.warning("could not unlist agent %s; retrying later", sid, exc_info=True)
                    self._unremoved[sid] = entry
        self._seen.pop((project_key, session_id), None)
        return await self.agents(project_key, session_id)

    async def agents(self, project_key: str, session_id: str) -> list[Agent]:
        """The agents of a session on live nodes, in join order."""
        try:
            flat = await self._list(
                keys=[c.agents_key(project_key, session_id)], args=[self._timeout_ms]
            )
        except RedisError as e:
            raise RegistryUnavailable(f"Redis failed while listing agents: {e}") from e
        found: list[tuple[int, str, dict[str, object]]] = []
        for i in range(0, len(flat), 2):
            _node, joined, info = flat[i + 1].split("\n", 2)
            found.append((int(joined), flat[i], json.loads(info)))
        found.sort(key=lambda item: (item[0], item[1]))
        return [Agent(sid, info) for _, sid, info in found]

    async def has_agents(self, project_key: str, session_id: str) -> bool:
        """True when the session's hash has an entry (live node or not), cached a moment."""
        key = (project_key, session_id)
        now = time.monotonic()
        if self._seen.get(key, 0.0) > now:
            return True
        try:
            present = bool(await self._redis.exists(c.agents_key(project_key, session_id)))
        except RedisError as e:
            raise RegistryUnavailable(f"Redis failed while looking for agents: {e}") from e
        if present:
            self._seen[key] = now + self._positive_ttl
        return present

    # -- background ----------------------------------------------------------------------------

    async def _write(self, entries: list[_Entry]) -> None:
        pipe = self._redis.pipeline(transaction=True)
        for entry in entries:
            pipe.hset(entry.hash_key, entry.member.rsplit("\n", 1)[1], entry.value)
            pipe.sadd(self._node_key, entry.member)
        pipe.sadd(c.AGENT_NODES_SET, self.node_id)
        await pipe.execute()

    async def _delete(self, entry: _Entry) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hdel(entry.hash_key, entry.member.rsplit("\n", 1)[1])
        pipe.srem(self._node_key, entry.member)
        await pipe.execute()

    async def _clean(self) -> None:
        purged = int(await self._purge(args=[self._timeout_ms, ""]))
        if purged:
            log.warning("unlisted %d agents of nodes that went silent", purged)
        async with self._lock:
            for sid, entry in list(self._unremoved.items()):
                await self._delete(entry)
                del self._unremoved[sid]
            # Fewer entries than agents: this node was taken for dead (or Redis lost its data).
            if self._mine and int(await self._redis.scard(self._node_key)) < len(self._mine):
                log.warning("node %s writes its %d agents back", self.node_id, len(self._mine))
                await self._write(list(self._mine.values()))
        now = time.monotonic()
        for key in [k for k, until in self._seen.items() if until <= now]:
            del self._seen[key]

    async def _clean_loop(self) -> None:
        backoff = 0.0
        while True:
            try:
                await self._clean()
                backoff = 0.0
                await asyncio.sleep(self._interval)
            except asyncio.CancelledError:
                raise
            except Exception:
                backoff = min(MAX_BACKOFF, max(0.1, backoff * 2))
                log.exception("agent directory cleaning failed on node %s", self.node_id)
                await asyncio.sleep(backoff)
