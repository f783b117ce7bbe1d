"""SIGTERM of a loaded node: nothing acked is lost, nothing is stored twice (SPEC §2, §4.3).

A real ``livehub serve`` on the in-process registry and SQLite takes 50 trackers sending
UPDATE_SESSION and SESSION_MESSAGE as fast as their acks come back. The node gets SIGTERM in the
middle of that. With the in-process registry nothing outlives the process, so the node must end
and store every live session before it exits 0 (docs/operations.md, "Shutdown"). The database
is then read with the store class: every session once, holding every message and variable whose
event was acked (before or after the signal), in the order sent, and nothing that was not sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import socketio

from hub.settings import Settings
from hub.store import open_store
from tests.e2e.conftest import NodeFactory
from tests.e2e.harness import run_cli, wait_until

pytestmark = pytest.mark.e2e

TRACKERS = 50
ACKS_BEFORE_SIGNAL = 6000  # events acked in total before the signal: the node is busy


@dataclasses.dataclass
class Load:
    """One tracker's traffic: what it sent and what the hub acked."""

    session_id: str
    sent_messages: list[str] = dataclasses.field(default_factory=list)
    acked_messages: list[str] = dataclasses.field(default_factory=list)
    sent_variables: list[str] = dataclasses.field(default_factory=list)
    acked_variables: list[str] = dataclasses.field(default_factory=list)
    refused: list[Any] = dataclasses.field(default_factory=list)


async def drive(client: socketio.AsyncClient, load: Load, acks: list[int]) -> None:
    """Send UPDATE_SESSION and SESSION_MESSAGE in turn, each after the previous one's ack."""
    n = 0
    while client.connected:
        n += 1
        if n % 2:
            name = f"v{n}"
            load.sent_variables.append(name)
            event, payload = "UPDATE_SESSION", {"pageTitle": f"p{n}", "variables": {name: n}}
        else:
            name = f"{load.session_id} m{n}"
            load.sent_messages.append(name)
            event, payload = "SESSION_MESSAGE", {"role": "user", "content": name}
        try:
            answer = await client.call(event, payload, timeout=10)
        except (socketio.exceptions.TimeoutError, socketio.exceptions.BadNamespaceError):
            return  # the node went away with this event unanswered: not owed
        if answer != {"ok": True}:
            load.refused.append(answer)
            return
        (load.acked_variables if n % 2 else load.acked_messages).append(name)
        acks[0] += 1


async def test_sigterm_under_load_stores_every_session_once_with_everything_acked(
    start_node: NodeFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database_url = f"sqlite:///{tmp_path / 'livehub.db'}"
    env = {
        "HUB_DATABASE_URL": database_url,
        "HUB_SESSION_GRACE": "600",  # only the shutdown may end the sessions
        "HUB_EVENT_RATE": "100000",  # the load is bounded by the acks, not by the rate limit
        "HUB_EVENT_BURST": "100000",
    }
    project = run_cli("project", "create", "--name", "load", env=env)
    pk, project_id = project["projectKey"], project["projectId"]
    node = await start_node(**env)

    clients = [socketio.AsyncClient(reconnection=False) for _ in range(TRACKERS)]
    loads = [Load(f"s{i:02d}") for i in range(TRACKERS)]
    acks = [0]
    await asyncio.gather(
        *(
            client.connect(
                f"{node.url}?identity=session&peerId={pk}-{load.session_id}-t1",
                transports=["websocket"],
                socketio_path="/ws-assist/socket",
                wait_timeout=10,
            )
            for client, load in zip(clients, loads, strict=True)
        )
    )
    tasks = [
        asyncio.create_task(drive(client, load, acks))
        for client, load in zip(clients, loads, strict=True)
    ]
    try:

        async def busy() -> bool:
            return acks[0] >= ACKS_BEFORE_SIGNAL

        async def all_dropped() -> bool:
            return not any(client.connected for client in clients)

        await wait_until(busy, 20, "the load running")
        acked_at_signal = acks[0]
        signalled = time.monotonic()
        code = await node.stop(signal.SIGTERM)
        exited = time.monotonic() - signalled
        assert code == 0, node.log()
        # Once a client has read its connection's close, it has read every ack sent before it;
        # an event still waiting for an ack then never gets one, and is not owed.
        await wait_until(all_dropped, 10, "the trackers seeing the node gone")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            if client.connected:
                await client.disconnect()
    assert all(not load.refused for load in loads), [ld.refused for ld in loads if ld.refused]

    settings = dataclasses.replace(Settings(), database_url=database_url)
    store = open_store(settings)
    await store.open()
    try:
        found = await store.search(project_id, '"sessionID":', 1000, 0)
    finally:
        await store.close()
    stored = [json.loads(s.data_json) for s in found.sessions]
    ids = [data["sessionInfo"]["sessionID"] for data in stored]
    assert found.total == TRACKERS and sorted(ids) == [ld.session_id for ld in loads], ids
    by_id = dict(zip(ids, stored, strict=True))
    unacked = 0
    for load in loads:
        data = by_id[load.session_id]
        messages = [m["content"] for m in data["messages"]]
        # Every acked message, once, in the order sent; at most the one in flight besides.
        assert messages[: len(load.acked_messages)] == load.acked_messages, load.session_id
        assert messages == load.sent_messages[: len(messages)], load.session_id
        assert len(messages) - len(load.acked_messages) <= 1, load.session_id
        variables = data["variables"]
        assert set(load.acked_variables) <= set(variables), load.session_id
        assert set(variables) <= set(load.sent_variables), load.session_id
        unacked += len(messages) - len(load.acked_messages)
    total_acked = sum(len(ld.acked_messages) + len(ld.acked_variables) for ld in loads)
    with capsys.disabled():
        print(
            f"\nSIGTERM under load: {TRACKERS} trackers, {acked_at_signal} events acked at the "
            f"signal, {total_acked} in all ({total_acked - acked_at_signal} after it); exit 0 "
            f"after {exited:.2f}s; {TRACKERS} sessions stored once each with "
            f"{sum(len(ld.acked_messages) for ld in loads)} acked messages "
            f"(+{unacked} stored unacked in flight)"
        )
