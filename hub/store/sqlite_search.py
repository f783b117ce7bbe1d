"""Searches of the SQLite store, on a read connection of their own, each within a time budget.

A search that matches broadly re-checks every match, so its cost grows with the store; the
budget (``HUB_SEARCH_TIMEOUT``) bounds it. SQLite calls a progress handler every few thousand
virtual-machine steps of the statement it runs; the handler stops the statement once the search's
deadline has passed, and the search answers :class:`hub.errors.SearchTooBroad`.

The connection is the search's alone (WAL mode lets it read while the store's own connection
writes), so the deadline applies to the search and never to a write queued behind it, and a
long search does not hold up the saving of ended sessions. Searches take turns on it. An
in-memory database (``:memory:``) has no second connection: its searches run on the store's
connection, without a budget (such a store lives in one test process).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from typing import Any

from hub.errors import SearchTooBroad, StoreUnavailable

# Virtual-machine steps between two looks at the clock: a few microseconds of work.
_STEPS = 10_000


class Searcher:
    """One read-only connection to the store's file, and the budget of each search on it."""

    def __init__(self, path: str, budget: float, busy_timeout: float) -> None:
        self._path = path
        self._budget = budget
        self._busy_timeout = busy_timeout
        self._db: sqlite3.Connection | None = None
        self._deadline = float("inf")
        self._turn = asyncio.Lock()  # searches take turns…
        self._running = threading.Lock()  # …even when one's caller was cancelled mid-search

    async def fetchall(self, sql: str, params: list[Any]) -> list[Any]:
        """The rows of one search statement; SearchTooBroad past the budget."""
        async with self._turn:
            return await asyncio.to_thread(self._run, sql, params)

    def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            db.close()

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self._path, timeout=self._busy_timeout, check_same_thread=False)
            db.execute("PRAGMA query_only = ON")
            db.set_progress_handler(self._past_deadline, _STEPS)
            self._db = db
        return self._db

    def _past_deadline(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0

    def _run(self, sql: str, params: list[Any]) -> list[Any]:
        with self._running:
            return self._run_alone(sql, params)

    def _run_alone(self, sql: str, params: list[Any]) -> list[Any]:
        try:
            db = self._connection()
            self._deadline = time.monotonic() + self._budget
            try:
                return db.execute(sql, params).fetchall()
            finally:
                self._deadline = float("inf")
        except sqlite3.OperationalError as e:
            if "interrupted" in str(e):
                raise SearchTooBroad.after(self._budget) from e
            self.close()  # a fresh connection for the next search
            raise StoreUnavailable(f"SQLite store unavailable: {e}") from e
        except (sqlite3.InternalError, sqlite3.DatabaseError) as e:
            # Constraint and programming errors are bugs, not outages: they pass as they are.
            if type(e) not in (sqlite3.InternalError, sqlite3.DatabaseError):
                raise
            self.close()
            raise StoreUnavailable(f"SQLite store unavailable: {e}") from e
