"""What a node keeps of its own sessions, so it can put them back when Redis loses its data.

A node keeps a copy of every session it holds a tab of, and of every session whose grace it began
(its last tab left through this node), until the session ends. The copy is the record (kept
current from the change stream), the variables and messages as this node last wrote or read them,
and this node's tabs. docs/registry.md says where this falls short.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from hub import constants as c
from hub.records import NOT_STORED_FIELDS, Record
from hub.registry.base import Change
from hub.registry.merge import copy_json, dumps_compact, json_size
from hub.registry.redis_scripts import Scripts

log = logging.getLogger(__name__)

SessionKey = tuple[str, str]
RESTORE_BATCH = 100  # restore scripts per pipeline


def info_size(record: Record) -> int:
    """Bytes of the record as it is stored (``sessionInfo``: less ``live`` and ``active``)."""
    return json_size({k: v for k, v in record.items() if k not in NOT_STORED_FIELDS})


@dataclass
class LocalSession:
    """This node's copy of one session."""

    record: Record
    variables: dict[str, Any]
    messages: list[str]  # compact JSON texts, as stored
    created_ms: int
    updated_ms: int
    tabs: list[str] = field(default_factory=list)
    grace_deadline_ms: int | None = None  # set while in a grace this node began

    def restore_args(self, node_id: str) -> list[str | int]:
        """The ARGV of the restore script for this copy."""
        record = self.record
        tag = c.session_tag(record["projectKey"], record["sessionID"])
        deadline = self.grace_deadline_ms if self.grace_deadline_ms is not None else 0
        return [
            tag,
            node_id,
            dumps_compact(record),
            dumps_compact(self.variables),
            record["projectKey"],
            record["sessionID"],
            self.created_ms,
            self.updated_ms,
            info_size(record),
            deadline,
            len(self.tabs),
            *self.tabs,
            *self.messages,
        ]


class Membership:
    """This node in the cluster: its heartbeat, and its copies of its own sessions.

    Each beat also reads the epoch. A missing epoch (Redis restarted empty, or flushed) is set
    anew; an epoch other than the one this node knew, or a beat that finds this node unknown (it
    was taken for dead while it stalled), makes it put back every session it keeps a copy of.
    """

    def __init__(self, redis: Redis, scripts: Scripts, node_id: str) -> None:
        self.node_id = node_id
        self.copies: dict[SessionKey, LocalSession] = {}
        self._redis = redis
        self._scripts = scripts
        self._epoch: str | None = None
        self._registered = False
        self._restore_pending = False
        self._lock = asyncio.Lock()

    async def beat(self) -> None:
        """Beat; put this node's sessions back when Redis lost them or dropped this node."""
        async with self._lock:
            epoch, added = await self._scripts.heartbeat(args=[self.node_id, secrets.token_hex(8)])
            if self._epoch is not None and epoch != self._epoch:
                log.warning(
                    "Redis lost the registry's data; node %s restores its own", self.node_id
                )
                self._restore_pending = True
            elif added and self._registered:
                log.warning("node %s was taken for dead; it restores its sessions", self.node_id)
                self._restore_pending = True
            self._epoch, self._registered = epoch, True
            if self._restore_pending:
                await self._restore_all()
                self._restore_pending = False

    async def recover(self, key: SessionKey) -> bool:
        """A write found no session ``key``: when this node holds it, beat now; True to retry."""
        if key not in self.copies:
            return False
        await self.beat()
        return True

    def observe(self, change: Change) -> None:
        """Keep the copies current with the changes every node makes."""
        key = (change.project_key, change.session_id)
        copy = self.copies.get(key)
        if copy is None:
            return
        if change.kind == "ended":
            if not copy.tabs:
                del self.copies[key]
        elif change.record is not None:
            copy.record = copy_json(change.record)

    async def _restore_all(self) -> None:
        copies = list(self.copies.values())
        for start in range(0, len(copies), RESTORE_BATCH):
            pipe = self._redis.pipeline(transaction=False)
            for copy in copies[start : start + RESTORE_BATCH]:
                await self._scripts.restore(args=copy.restore_args(self.node_id), client=pipe)
            await pipe.execute()
        log.info("node %s restored %d sessions", self.node_id, len(copies))
