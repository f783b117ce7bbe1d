"""Which part of a needle the PostgreSQL store asks its trigram index for.

The GIN index answers ``data_text LIKE '%…%'`` by reading the posting list of every trigram of
the pattern. For a needle like ``ORD-00001234`` most of those (``ord``, ``000``, the padding
trigrams of ``00001234``) are in every stored session, so at 1,000,000 sessions the index reads
millions of entries to find the few hundred rows that hold the rare digit trigrams. Asking for a
rare part of the needle alone (``LIKE '%1234%'``) reads a few short lists; the whole needle is
then re-checked on each candidate with ``strpos``, which the index cannot serve, so the answer is
the same.

PostgreSQL cannot count one trigram's rows cheaply (a bitmap index scan reads the whole list
before anything is counted), so the store keeps the frequencies itself: :class:`TrigramSample`
holds how many of the most recent stored sessions hold each trigram, as pg_trgm extracts them
(``show_trgm``, computed by the database), refreshed in the background every few minutes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

from hub.store.searchtext import like_pattern

log = logging.getLogger(__name__)

SAMPLE = 1_000  # the most recent stored sessions whose trigrams are counted
REFRESH = 300.0  # seconds a sample is used before the next one is taken (in the background)
SELECTIVE = 0.05  # a needle is selective when its rarest trigram is in at most 5 % of the sample
COMMON = 0.5  # trigrams in over half the sample narrow little, and cost a long list each
MOST_TRIGRAMS = 4  # trigrams in the part asked for, at most

# Trigram → how many sessions of the sample hold it, computed by the database from pg_trgm's own
# extraction (lower-cased, alphanumeric words), and the number of sessions in the sample.
COUNT_TRIGRAMS = (
    "SELECT t, count(*) FROM (SELECT id, data_text FROM stored_sessions"
    " ORDER BY id DESC LIMIT $1) AS recent, unnest(show_trgm(recent.data_text)) AS t GROUP BY t"
)
SAMPLE_SIZE = "SELECT count(*) FROM (SELECT 1 FROM stored_sessions ORDER BY id DESC LIMIT $1) AS s"

# pg_trgm's words: runs of letters and digits (the underscore separates words, as in pg_trgm).
_WORD = re.compile(r"[^\W_]+")

Counts = Callable[[], Awaitable[tuple[dict[str, int], int]]]


class TrigramSample:
    """Trigram frequencies among the store's most recent sessions, kept fresh in the background.

    ``counts`` asks the database for them (``COUNT_TRIGRAMS``). Until the first sample has come
    back, and whenever it is empty, searches ask the index for the whole needle, as they would
    without a sample.
    """

    def __init__(self, counts: Counts, *, refresh: float = REFRESH) -> None:
        self._counts = counts
        self._refresh = refresh
        self._frequencies: dict[str, int] = {}
        self._size = 0
        self._taken = float("-inf")
        self._task: asyncio.Task[None] | None = None

    def part_to_ask(self, needle: str) -> str | None:
        """The part of ``needle`` to ask the index for, or None for the whole needle; starts a
        new sample in the background when the one held is old."""
        if time.monotonic() - self._taken > self._refresh and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._take())
        return rarest_part(needle, self._frequencies, self._size)

    async def take(self) -> None:
        """Take a new sample now, and wait for it."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._take())
        await asyncio.shield(self._task)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _take(self) -> None:
        try:
            self._frequencies, self._size = await self._counts()
        except Exception:
            # Searches go on with the older sample (or none); the next search tries again later.
            log.warning("could not sample trigram frequencies", exc_info=True)
        finally:
            self._taken = time.monotonic()
            self._task = None


def rarest_part(needle: str, frequencies: dict[str, int], size: int) -> str | None:
    """A substring of ``needle`` whose trigrams are all rare, or None for the whole needle.

    Its trigrams are consecutive within one word of the needle: the rarest trigram, widened by
    its rarer neighbour while that neighbour is in at most half the sample, up to MOST_TRIGRAMS.
    None when the sample is empty, when the needle has no trigram, or when even its rarest
    trigram is common (a broad needle: its matches cost more than the lists, and the whole
    pattern keeps the candidates fewest).
    """
    if size <= 0:
        return None
    best: tuple[int, str, int] | None = None  # (count, word, position of the trigram)
    for match in _WORD.finditer(needle):
        word = match.group()
        for i in range(len(word) - 2):
            count = frequencies.get(word[i : i + 3].lower(), 0)
            if best is None or count < best[0]:
                best = (count, word, i)
    if best is None or best[0] > SELECTIVE * size:
        return None
    _, word, first = best
    last = first  # the part is word[first : last + 3]

    def count_at(i: int) -> int:
        if 0 <= i <= len(word) - 3:
            return frequencies.get(word[i : i + 3].lower(), 0)
        return size + 1  # past the word: never taken

    while last - first + 1 < MOST_TRIGRAMS:
        left, right = count_at(first - 1), count_at(last + 1)
        if min(left, right) > COMMON * size:
            break
        if left <= right:
            first -= 1
        else:
            last += 1
    part = word[first : last + 3]
    return None if part == needle else part


# -- the statements ---------------------------------------------------------------------------

_MATCHES = "FROM stored_sessions WHERE project_id = $1 AND data_text LIKE $2 ESCAPE '\\'"
# With a part of the needle asked of the index ($2), the whole needle ($3) is re-checked by strpos,
# which the index cannot serve: the planner reads only the part's trigram lists.
_RECHECK = " AND strpos(data_text, $3) > 0"


def search_query(
    project_id: int, needle: str, limit: int, offset: int, part: str | None = None
) -> tuple[str, list[Any]]:
    """The SQL and parameters of one search page; every row also carries the total.

    The GIN trigram index answers ``LIKE '%…%'`` for needles with a trigram (or for ``part``, a
    substring of the needle with rarer trigrams, chosen by ``rarest_part``); the recheck of
    each candidate row keeps the match exact and case-sensitive. The matches are found first, on
    their own (MATERIALIZED, with no order to keep), so that the planner cannot prefer walking the
    ``updated_at`` index through every row of the project for the sake of the page's order. Only
    the ids are counted and sorted; the text is read for the page alone (a broad needle would
    otherwise carry every match's text through the window and the sort, spilling to disk: 2x
    slower).
    """
    matches, params = _matches(project_id, needle, part)
    n = len(params)
    sql = (
        f"WITH matches AS MATERIALIZED (SELECT id, updated_at, session_id {matches}),"
        " page AS MATERIALIZED (SELECT id, updated_at, session_id, count(*) OVER () AS total"
        f" FROM matches ORDER BY updated_at DESC, session_id, id LIMIT ${n + 1} OFFSET ${n + 2})"
        " SELECT s.session_id, s.data_text, s.created_at, s.updated_at, page.total"
        " FROM page JOIN stored_sessions AS s ON s.id = page.id"
        " ORDER BY page.updated_at DESC, page.session_id, page.id"
    )
    return sql, [*params, limit, offset]


def count_query(project_id: int, needle: str, part: str | None = None) -> tuple[str, list[Any]]:
    """The SQL of the total alone, for a page past the last match."""
    matches, params = _matches(project_id, needle, part)
    return f"SELECT count(*) {matches}", params


def _matches(project_id: int, needle: str, part: str | None) -> tuple[str, list[Any]]:
    if part is None:
        return _MATCHES, [project_id, like_pattern(needle)]
    return _MATCHES + _RECHECK, [project_id, like_pattern(part), needle]
