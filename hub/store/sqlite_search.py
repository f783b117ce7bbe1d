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
from collections.abc import Callable
from typing import Any

from hub.errors import SearchTooBroad, StoreUnavailable
from hub.store.searchtext import MIN_INDEXED_CHARS, fts5_phrase

# Virtual-machine steps between two looks at the clock: a few microseconds of work.
_STEPS = 10_000

# The statement of a search, given the FTS5 expression that picks its candidates (None: the
# whole needle as one phrase).
Statement = Callable[[str | None], tuple[str, list[Any]]]

# Choosing the trigrams a search asks the index for (see selective_match).
SAMPLE = 1_000  # the most recent stored sessions, where each trigram's frequency is looked up
PROBES = 12  # trigrams looked up at most (spread over the needle)
SELECTIVE = 0.05  # the needle is selective when its rarest trigram is in at most 5 % of the sample
COMMON = 0.5  # trigrams in over half the sample narrow nothing, and cost a long read each
MOST_TRIGRAMS = 4


def is_outage(error: sqlite3.DatabaseError) -> bool:
    """Whether the database cannot be used (StoreUnavailable), not a bug to surface.

    That is: an operational error (locked past the busy timeout, I/O, cannot open), an internal
    one, or a file that is not a database (a bare DatabaseError). Constraint and programming
    errors are bugs, not outages.
    """
    return (
        isinstance(error, (sqlite3.OperationalError, sqlite3.InternalError))
        or type(error) is sqlite3.DatabaseError
    )


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

    async def fetchall(self, needle: str, statement: Statement) -> list[Any]:
        """The rows of one search statement; SearchTooBroad past the budget."""
        async with self._turn:
            return await asyncio.to_thread(self._run, needle, statement)

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

    def _run(self, needle: str, statement: Statement) -> list[Any]:
        with self._running:
            return self._run_alone(needle, statement)

    def _run_alone(self, needle: str, statement: Statement) -> list[Any]:
        try:
            db = self._connection()
            self._deadline = time.monotonic() + self._budget
            try:
                match = selective_match(db, needle) if len(needle) >= MIN_INDEXED_CHARS else None
                sql, params = statement(match)
                return db.execute(sql, params).fetchall()
            finally:
                self._deadline = float("inf")
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and "interrupted" in str(e):
                raise SearchTooBroad.after(self._budget) from e
            if not is_outage(e):
                raise
            self.close()  # a fresh connection for the next search
            raise StoreUnavailable(f"SQLite store unavailable: {e}") from e


def selective_match(db: sqlite3.Connection, needle: str) -> str | None:
    """An FTS5 expression of the needle's rarest trigrams, or None for the whole phrase.

    A phrase makes FTS5 read the whole list of documents of every trigram in it; for a needle like
    ``ORD-00001234`` most of those (``ORD``, ``RD-``, ``-00``) are in every stored session, so at
    1,000,000 sessions the phrase costs ~40 ms while its three digit trigrams alone narrow the
    candidates to a few hundred in ~3 ms. Each trigram's frequency is looked up among the
    most recent stored sessions (a seek within its document list, ~0.25 ms); when the rarest is
    rare, the search asks for the rarest few (AND) and ``instr`` re-checks the candidates, so the
    answer is the same. A needle whose trigrams are all frequent is a broad one: its matches cost
    more than the lists, and the phrase keeps the candidates exact.
    """
    trigrams = list(dict.fromkeys(needle[i : i + 3] for i in range(len(needle) - 2)))
    if len(trigrams) < 2:
        return None
    if len(trigrams) > PROBES:
        step = len(trigrams) / PROBES
        trigrams = [trigrams[int(i * step)] for i in range(PROBES)]
    newest = db.execute("SELECT max(id) FROM stored_sessions").fetchone()[0]
    if newest is None:
        return None
    sample = min(SAMPLE, int(newest))
    counts = {
        trigram: db.execute(
            "SELECT count(*) FROM stored_sessions_fts"
            " WHERE stored_sessions_fts MATCH ? AND rowid > ?",
            (fts5_phrase(trigram), int(newest) - sample),
        ).fetchone()[0]
        for trigram in trigrams
    }
    rarest = sorted(trigrams, key=counts.__getitem__)
    if counts[rarest[0]] > SELECTIVE * sample:
        return None
    chosen = [t for t in rarest if counts[t] <= COMMON * sample][:MOST_TRIGRAMS]
    return " AND ".join(fts5_phrase(t) for t in chosen)
