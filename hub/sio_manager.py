"""The rooms of each Socket.IO client, kept beside python-socketio's rooms of each namespace.

python-socketio's managers keep ``rooms[namespace][room]`` only: to find the rooms of one client,
a disconnect copies the namespace's whole room table and looks for the client in every room. A
node holds a room per client (its sid room) and one or two more per tracker (session, tab), so
every disconnect costs time linear in the clients connected, and N trackers leaving together cost
O(N²): 10,000 trackers closing at once took ~45 s of the event loop (docs/optimisations.md, P8).
:class:`RoomsBySid` also records the rooms of each client as it enters and leaves them, so a
disconnect leaves just the client's own rooms.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import socketio

Room = Hashable | None  # None is python-socketio's room of every connected client of a namespace


class RoomsBySid:
    """Mixin for a python-socketio manager: the rooms of a client without a scan of all rooms.

    Every change to the room table goes through ``basic_enter_room`` and ``basic_leave_room``
    (``basic_close_room`` and ``basic_disconnect`` leave through the latter), so the map below
    follows the table.
    """

    rooms: dict[str, dict[Room, Any]]
    callbacks: dict[str, Any]
    pending_connect: dict[str, list[str]]
    pending_disconnect: dict[str, list[str]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (namespace, sid) → the rooms the client is in, in the order it entered them.
        self.sid_rooms: dict[tuple[str, str], list[Room]] = {}

    def basic_enter_room(
        self, sid: str, namespace: str, room: Room, eio_sid: str | None = None
    ) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)  # type: ignore[misc]
        entered = self.sid_rooms.setdefault((namespace, sid), [])
        if room not in entered:
            entered.append(room)

    def basic_leave_room(self, sid: str, namespace: str, room: Room) -> None:
        super().basic_leave_room(sid, namespace, room)  # type: ignore[misc]
        key = (namespace, sid)
        entered = self.sid_rooms.get(key)
        if entered is not None and room in entered:
            entered.remove(room)
            if not entered:
                del self.sid_rooms[key]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        """Leave the client's rooms and forget its callbacks and pending states."""
        for room in list(self.sid_rooms.get((namespace, sid), ())):
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            sids = pending.get(namespace)
            if sids is not None and sid in sids:
                sids.remove(sid)
                if not sids:
                    del pending[namespace]

    def get_rooms(self, sid: str, namespace: str) -> list[Room]:
        """The rooms the client is in (its sid room included, the all-clients room not)."""
        return [room for room in self.sid_rooms.get((namespace, sid), ()) if room is not None]


class HubManager(RoomsBySid, socketio.AsyncManager):  # type: ignore[misc]
    """python-socketio's in-process manager with the rooms of each client at hand."""
