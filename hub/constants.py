"""Every Redis key prefix and channel name, in one place.

All keys live under ``lh:``. Keys of one session use a ``{projectKey:sessionID}`` hash tag so a
cluster-aware deployment keeps them in one slot. The Lua scripts of the Redis registry build the
keys of a session from its tag with the same prefixes (``hub/registry/redis_scripts.py`` formats
them in), so this module stays the one place where a key is spelled. docs/registry.md describes
what each key holds.
"""

from __future__ import annotations

PREFIX = "lh:"

# python-socketio's AsyncRedisManager channel (cross-node Socket.IO emits).
SOCKETIO_CHANNEL = PREFIX + "socketio"

# -- the presence registry (hub/registry/redis.py) -------------------------------------------

# STREAM of every change to the set of live sessions, in apply order (fields k, p, s, n, r).
CHANGES_STREAM = PREFIX + "changes"
# Approximate MAXLEN of the stream: a node further behind than this resyncs from the hashes.
CHANGES_MAXLEN = 100_000
# STRING: a random token set when the registry's data is first written; a missing or different
# token tells a node that Redis lost its data.
EPOCH_KEY = PREFIX + "epoch"
# SET of the tags of every live session.
SESSIONS_SET = PREFIX + "sessions"
# ZSET tag → deadline (ms since the epoch, Redis clock) of the sessions with no tab connected.
GRACE_ZSET = PREFIX + "grace"
# ZSET nodeId → last heartbeat (ms, Redis clock).
NODES_ZSET = PREFIX + "nodes"
# LIST of ended sessions not yet stored (JSON, pushed left, taken right).
OUTBOX_LIST = PREFIX + "outbox"
# LIST of outbox entries that could not be read back (never dropped silently).
OUTBOX_BAD_LIST = PREFIX + "outbox:bad"

# Per-session keys: prefix + "{" + tag + "}".
SESSION_HASH_PREFIX = PREFIX + "s:"  # HASH rec, vars, pk, sid, created, updated, sizes, dv, ver
MESSAGES_PREFIX = PREFIX + "m:"  # LIST of message JSON texts, in arrival order
TABS_PREFIX = PREFIX + "t:"  # LIST of connected tabIds, in join order
TAB_NODES_PREFIX = PREFIX + "tn:"  # HASH tabId → nodeId holding it

# Per-node keys: prefix + nodeId + suffix.
NODE_PREFIX = PREFIX + "n:"
NODE_TABS_SUFFIX = ":tabs"  # SET of "<tag>\n<tabId>" connected to that node
NODE_PROCESSING_SUFFIX = ":outbox"  # LIST of outbox entries that node is storing right now


def session_tag(project_key: str, session_id: str) -> str:
    """The name of a session inside Redis keys and sets (project keys never hold ``:``)."""
    return f"{project_key}:{session_id}"


def session_key(project_key: str, session_id: str) -> str:
    """Hash of one live session: record, variables, times, sizes, revision."""
    return SESSION_HASH_PREFIX + "{" + session_tag(project_key, session_id) + "}"


def session_keys(tag: str) -> tuple[str, str, str, str]:
    """The keys of one session: its hash, messages, tab order and tab owners."""
    braced = "{" + tag + "}"
    return (
        SESSION_HASH_PREFIX + braced,
        MESSAGES_PREFIX + braced,
        TABS_PREFIX + braced,
        TAB_NODES_PREFIX + braced,
    )


def node_tabs_key(node_id: str) -> str:
    """Set of the tabs a node holds."""
    return NODE_PREFIX + node_id + NODE_TABS_SUFFIX


def node_processing_key(node_id: str) -> str:
    """List of the outbox entries a node has taken and is storing."""
    return NODE_PREFIX + node_id + NODE_PROCESSING_SUFFIX


# -- the agent directory (hub/registry/agents_redis.py) --------------------------------------

# Per-session HASH: prefix + "{" + tag + "}"; agent socket id → "<nodeId>\n<agent JSON>".
AGENTS_PREFIX = PREFIX + "ag:{"
# Per-node SET (NODE_PREFIX + nodeId + suffix) of "<tag>\n<agent socket id>" that node holds.
NODE_AGENTS_SUFFIX = ":agents"
# SET of the node ids that hold (or held) agents, so entries of dead nodes can be found.
AGENT_NODES_SET = PREFIX + "agent-nodes"


def agents_key(project_key: str, session_id: str) -> str:
    """Hash of the agents of one session, across the cluster."""
    return AGENTS_PREFIX + session_tag(project_key, session_id) + "}"


def node_agents_key(node_id: str) -> str:
    """Set of the agents a node holds."""
    return NODE_PREFIX + node_id + NODE_AGENTS_SUFFIX
