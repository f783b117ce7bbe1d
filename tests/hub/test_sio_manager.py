"""The Socket.IO manager's rooms of each client: the same answers as python-socketio's own scan."""

from __future__ import annotations

import random
import time
from typing import Any

import socketio

from hub.sio_manager import HubManager

NAMESPACES = ("/", "/other")


def table(manager: Any) -> dict[str, dict[Any, dict[str, str]]]:
    """The room table as plain dicts (python-socketio keeps bidicts)."""
    return {
        ns: {room: dict(members) for room, members in rooms.items()}
        for ns, rooms in manager.rooms.items()
    }


def managed(manager: Any) -> Any:
    socketio.AsyncServer(client_manager=manager)  # sets itself as the manager's server
    return manager


async def test_random_room_changes_match_python_socketios_manager() -> None:
    rng = random.Random(7)
    ours, theirs = managed(HubManager()), managed(socketio.AsyncManager())
    clients: list[tuple[str, str, str]] = []  # (namespace, our sid, their sid)
    for step in range(3000):
        action = rng.random()
        if action < 0.25 or not clients:
            ns = rng.choice(NAMESPACES)
            eio_sid = f"eio{step}"
            clients.append((ns, await ours.connect(eio_sid, ns), await theirs.connect(eio_sid, ns)))
            continue
        ns, our_sid, their_sid = rng.choice(clients)
        room = f"room{rng.randrange(12)}"
        if action < 0.55:
            await ours.enter_room(our_sid, ns, room)
            await theirs.enter_room(their_sid, ns, room)
        elif action < 0.75:
            await ours.leave_room(our_sid, ns, room)
            await theirs.leave_room(their_sid, ns, room)
        elif action < 0.8:
            await ours.close_room(room, ns)
            await theirs.close_room(room, ns)
        else:
            clients.remove((ns, our_sid, their_sid))
            ours.pre_disconnect(our_sid, ns)
            theirs.pre_disconnect(their_sid, ns)
            await ours.disconnect(our_sid, ns)
            await theirs.disconnect(their_sid, ns)
            assert ours.get_rooms(our_sid, ns) == []
            assert (ns, our_sid) not in ours.sid_rooms
        # Sids are random: compare through the engine.io sid each one maps to.
        assert _by_eio(table(ours)) == _by_eio(table(theirs))
        for ns, our_sid, their_sid in clients[-5:]:
            assert sorted(map(str, ours.get_rooms(our_sid, ns))) == sorted(
                str(r) if r != their_sid else our_sid for r in theirs.get_rooms(their_sid, ns)
            )
    assert ours.pending_disconnect == theirs.pending_disconnect == {}


def _by_eio(rooms: dict[str, dict[Any, dict[str, str]]]) -> dict[str, dict[str, set[str]]]:
    """Room → engine.io sids, with each client's own sid room named by its engine.io sid."""
    out: dict[str, dict[str, set[str]]] = {}
    for ns, by_room in rooms.items():
        sid_to_eio = by_room.get(None, {})
        out[ns] = {}
        for room, members in by_room.items():
            name = sid_to_eio.get(room, room) if room is not None else "*"
            out[ns][str(name)] = set(members.values())
    return out


async def test_a_disconnect_costs_the_same_however_many_clients_are_connected() -> None:
    async def seconds_per_disconnect(count: int) -> float:
        manager = managed(HubManager())
        sids = []
        for i in range(count):
            sid = await manager.connect(f"eio{i}", "/")
            await manager.enter_room(sid, "/", f"session:{i}")
            sids.append(sid)
        start = time.perf_counter()
        for sid in sids[:500]:
            await manager.disconnect(sid, "/")
        return (time.perf_counter() - start) / 500

    small, large = await seconds_per_disconnect(500), await seconds_per_disconnect(20_000)
    # python-socketio's scan makes the large one ~40x slower; allow much noise, not that.
    assert large < small * 8 + 0.0001
