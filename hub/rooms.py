"""Socket.IO room names, in one place.

A live session's tabs (and, with the assist relay, its agents) share one room, so an emit to the
room reaches every one of them on every node.
"""

from __future__ import annotations


def session_room(project_key: str, session_id: str) -> str:
    """The room of one live session.

    Project keys are letters and digits only, so the first ``:`` always ends the key even though
    session IDs may hold ``:``.
    """
    return f"session:{project_key}:{session_id}"
