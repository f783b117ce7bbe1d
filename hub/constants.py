"""Every Redis key prefix and channel name, in one place.

All keys live under ``lh:``. Keys of one session use a ``{projectKey:sessionID}`` hash tag so a
cluster-aware deployment keeps them in one slot.
"""

from __future__ import annotations

PREFIX = "lh:"

# python-socketio's AsyncRedisManager channel (cross-node Socket.IO emits).
SOCKETIO_CHANNEL = PREFIX + "socketio"


def session_key(project_key: str, session_id: str) -> str:
    """Hash of one live session: record, tabs, data."""
    return f"{PREFIX}s:{{{project_key}:{session_id}}}"
