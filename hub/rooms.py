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


def agents_room(project_key: str, session_id: str) -> str:
    """The room of a live session's agents only: what its tabs send is relayed here."""
    return f"agents:{project_key}:{session_id}"


def tab_room(project_key: str, session_id: str, tab_id: str) -> str:
    """The room of one tab of a session: what an agent sends to that tab goes here.

    Tab ids hold no newline (``[A-Za-z0-9._:-]``), so the newline keeps the session id and the
    tab id apart even though both may hold ``:``.
    """
    return f"tab:{project_key}:{session_id}\n{tab_id}"
