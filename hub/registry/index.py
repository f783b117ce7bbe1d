"""The in-memory index of live-session records that answers every Assist query.

Both registries keep one: the in-process registry as its store of records, the Redis registry as
each node's replica of the shared set, kept current from the change stream. Queries never touch
Redis, so a list page costs the same whatever the size of the cluster.

Per project the index keeps the records ordered by ``(timestamp, sessionID)`` (a list page is a
slice of that order, O(log n + limit)) and, per filterable field, a column ``sessionID → the
field's text, lower-cased`` holding only the sessions where the field is set, so a filter is one
comprehension over one column. Per field it also counts the sessions of each distinct value, so
autocomplete reads distinct values, not sessions.
"""

from __future__ import annotations

import heapq
import sys
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from sortedcontainers import SortedList  # type: ignore[import-untyped]

from hub.errors import InvalidInput
from hub.records import FILTER_TYPES, Record
from hub.registry.base import Filter, QueryResult, SessionQuery
from hub.registry.merge import copy_json, dumps_compact

# Fields with a column: every field a filter type reads, except metadata (a column per key).
COLUMN_FIELDS: tuple[str, ...] = tuple(sorted(set(FILTER_TYPES.values()) - {"metadata"}))

# Each negative operator is the negation of a positive one over the OR of the values.
_NEGATED = {"isNot": "is", "notContains": "contains"}
_POSITIVE = frozenset({"contains", "is", "startsWith", "endsWith"})

# Walk the timestamp order (instead of sorting the matches) when at least 1/8 of the sessions
# match: the walk then finds a page after about 8 x (offset + limit) steps, at C speed.
_DENSE_FRACTION = 8
# Look the remaining candidates up in a column (instead of reading it whole) when they are fewer
# than 1/4 of it: a lookup costs a few times a sequential read.
_RESTRICT_FRACTION = 4
# Test each distinct value once (instead of each session) when they are fewer than 1/4 of the
# sessions scanned.
_DISTINCT_FRACTION = 4

Column = dict[str, str]


def field_text(value: Any) -> str | None:
    """The text a filter or autocomplete sees of a field value; None when the field is unset.

    Booleans read as ``"true"``/``"false"`` (so ACTIVE compares those against the bool), numbers
    as their decimal text, objects and lists as compact JSON.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return dumps_compact(value)


def _timestamp(record: Record) -> int | float:
    value = record.get("timestamp")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return 0  # never happens for a validated record; keeps the order total if it does


def _sort_key(value: Any) -> tuple[int, Any]:
    """A key that orders any JSON values: unset first, then numbers, text, objects."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool | int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value.lower())
    return (3, dumps_compact(value))


@dataclass
class _Project:
    records: dict[str, Record] = field(default_factory=dict)
    order: SortedList = field(default_factory=SortedList)  # of (timestamp, sessionID)
    timestamps: dict[str, int | float] = field(default_factory=dict)
    columns: dict[str, Column] = field(default_factory=lambda: {f: {} for f in COLUMN_FIELDS})
    counts: dict[str, Counter[str]] = field(
        default_factory=lambda: {f: Counter() for f in COLUMN_FIELDS}
    )
    metadata: dict[str, Column] = field(default_factory=dict)
    metadata_counts: dict[str, Counter[str]] = field(default_factory=dict)


def _set_text(
    column: Column, counts: Counter[str], sid: str, old: str | None, new: str | None
) -> None:
    if old is not None:
        left = counts[old] - 1
        if left > 0:
            counts[old] = left
        else:
            del counts[old]
    if new is None:
        column.pop(sid, None)
    else:
        _add_text(column, counts, sid, new)


def _add_text(column: Column, counts: Counter[str], sid: str, text: str) -> None:
    column[sid] = _lowered(text)
    counts[text] = counts.get(text, 0) + 1


def _lowered(text: str) -> str:
    """``text`` lower-cased and interned: the sessions sharing a value (OS, country, plan…) share
    one string, so a column is compact in memory and is read about 4x faster at 100k sessions.
    A text that is lower-case already (ids, UUIDs, most e-mails) is kept as it is, not copied."""
    lowered = text.lower()
    return sys.intern(text if lowered == text and type(text) is str else lowered)


def copy_record(record: Record) -> Record:
    """A deep copy of a record: :func:`copy_json` with the flat fields copied at C speed."""
    copied = record.copy()
    for key, value in copied.items():
        if isinstance(value, dict | list):
            copied[key] = copy_json(value)
    return copied


def _metadata_texts(record: Record | None) -> dict[str, str]:
    meta = record.get("metadata") if record is not None else None
    if not isinstance(meta, dict):
        return {}
    texts = {}
    for key, value in meta.items():
        text = field_text(value)
        if text is not None:
            texts[str(key)] = text
    return texts


class SessionIndex:
    """Records of live sessions per project, indexed for Assist queries.

    Records go in and come out as copies: nothing a caller holds can change the index.
    """

    def __init__(self) -> None:
        self._projects: dict[str, _Project] = {}
        self._count = 0

    def upsert(self, record: Record) -> None:
        """Add or replace the record of ``(record["projectKey"], record["sessionID"])``."""
        self._put(copy_record(record))

    def upsert_owned(self, record: Record) -> None:
        """:meth:`upsert` without the copy, for a record nothing else holds or will change
        (one just decoded from JSON): the index keeps that very object."""
        self._put(record)

    def _put(self, new: Record) -> None:
        project_key = str(new["projectKey"])
        sid = str(new["sessionID"])
        project = self._projects.get(project_key)
        if project is None:
            project = self._projects[project_key] = _Project()
        old = project.records.get(sid)
        project.records[sid] = new
        ts = _timestamp(new)
        columns, counts = project.columns, project.counts
        if old is None:
            self._count += 1
            project.order.add((ts, sid))
            project.timestamps[sid] = ts
            for name in COLUMN_FIELDS:  # _add_text, inlined: this loop is most of an insert
                value = new.get(name)
                if value is not None:
                    text: str = value if type(value) is str else field_text(value)  # type: ignore[assignment]
                    columns[name][sid] = _lowered(text)
                    column_counts = counts[name]
                    column_counts[text] = column_counts.get(text, 0) + 1
            meta = _metadata_texts(new)
            if meta:
                self._index_metadata(project, sid, {}, meta)
            return
        if project.timestamps[sid] != ts:
            project.order.remove((project.timestamps[sid], sid))
            project.order.add((ts, sid))
            project.timestamps[sid] = ts
        for name in COLUMN_FIELDS:
            old_value, new_value = old.get(name), new.get(name)
            if old_value is new_value or (type(old_value) is str and old_value == new_value):
                continue  # the text cannot have changed
            old_text, new_text = field_text(old_value), field_text(new_value)
            if old_text != new_text:
                _set_text(columns[name], counts[name], sid, old_text, new_text)
        old_meta, new_meta = _metadata_texts(old), _metadata_texts(new)
        if old_meta != new_meta:
            self._index_metadata(project, sid, old_meta, new_meta)

    def remove(self, project_key: str, session_id: str) -> Record | None:
        """Drop a session; returns its record, or None when it was not indexed."""
        project = self._projects.get(project_key)
        if project is None or session_id not in project.records:
            return None
        record = project.records.pop(session_id)
        self._count -= 1
        project.order.remove((project.timestamps.pop(session_id), session_id))
        for name in COLUMN_FIELDS:
            old_text = field_text(record.get(name))
            _set_text(project.columns[name], project.counts[name], session_id, old_text, None)
        self._index_metadata(project, session_id, _metadata_texts(record), {})
        if not project.records:
            del self._projects[project_key]
        return record

    def get(self, project_key: str, session_id: str) -> Record | None:
        """A copy of the record of a session, or None."""
        project = self._projects.get(project_key)
        record = project.records.get(session_id) if project is not None else None
        return copy_json(record) if record is not None else None

    def peek(self, project_key: str, session_id: str) -> Record | None:
        """The indexed record itself, not a copy, for owners that only read it (no copy cost).

        Never change it, nor hand it out: change a record with :meth:`upsert`.
        """
        project = self._projects.get(project_key)
        return project.records.get(session_id) if project is not None else None

    def clear(self) -> None:
        """Forget every session."""
        self._projects.clear()
        self._count = 0

    def records(self) -> Iterator[Record]:
        """Copies of every record (of the sessions indexed when the iteration began)."""
        snapshot = [r for p in self._projects.values() for r in p.records.values()]
        for record in snapshot:
            yield copy_json(record)

    def __len__(self) -> int:
        return self._count

    def query(self, project_key: str, query: SessionQuery) -> QueryResult:
        """One page of the sessions of a project that match every filter (SPEC §5.1).

        Filters are AND-ed; the values of one filter are OR-ed; comparisons ignore case.

        - ``contains`` (the default), ``is``, ``startsWith``, ``endsWith`` match when the field's
          text matches any of the values; ``isNot`` and ``notContains`` match when it matches
          none of them (the negation of ``is`` / ``contains`` over the OR of the values), so
          ``isNot ["a", "b"]`` keeps the sessions that are neither ``a`` nor ``b``.
        - No values (``()``): the positive operators match a field that is set and not empty;
          ``isNot`` / ``notContains`` match the rest (unset or empty).
        - An unset field (None, or a metadata key the session lacks) never matches a positive
          operator and always matches a negative one.
        - METADATA (``field == "metadata"``) reads ``metadata[source]``, the key matched exactly;
          ``active`` compares ``"true"``/``"false"`` against the bool.

        Sorted on ``query.sort`` (a record field) in ``query.order``; ties break on sessionID in
        the same direction. Unset values sort lowest (first in ASC, last in DESC); text sorts
        ignoring case. ``total`` counts every match; records come back as copies.
        """
        if query.page < 1:
            raise InvalidInput("page must be ≥ 1", "page")
        if query.limit < 1:
            raise InvalidInput("limit must be ≥ 1", "limit")
        project = self._projects.get(project_key)
        if project is None:
            return QueryResult(total=0, sessions=[])
        matches = self._match(project, query.filters)
        total = len(project.records) if matches is None else len(matches)
        offset = (query.page - 1) * query.limit
        if offset >= total:
            return QueryResult(total=total, sessions=[])
        page = self._page(project, matches, query.sort, query.order == "DESC", offset, query.limit)
        return QueryResult(total=total, sessions=[copy_json(project.records[s]) for s in page])

    def autocomplete(self, project_key: str, field: str, q: str, limit: int) -> list[str]:
        """Distinct non-empty values of ``field`` (or ``metadata.<key>``) that contain ``q``.

        Values keep their case; ``q`` matches ignoring case (an empty ``q`` matches all). Most
        frequent among the live sessions first, then alphabetically ignoring case, then by exact
        text, so the order is stable. At most ``limit`` values.
        """
        project = self._projects.get(project_key)
        if project is None or limit < 1:
            return []
        counts = self._counts(project, field)
        needle = q.lower()
        hits = [(n, value) for value, n in counts.items() if value and needle in value.lower()]
        best = heapq.nsmallest(limit, hits, key=lambda hit: (-hit[0], hit[1].lower(), hit[1]))
        return [value for _, value in best]

    # -- internals -------------------------------------------------------------------------

    def _index_metadata(
        self, project: _Project, sid: str, old: dict[str, str], new: dict[str, str]
    ) -> None:
        for key in old.keys() | new.keys():
            old_text, new_text = old.get(key), new.get(key)
            if old_text == new_text:
                continue
            column = project.metadata.get(key)
            if column is None:
                column = project.metadata[key] = {}
                project.metadata_counts[key] = Counter()
            counts = project.metadata_counts[key]
            _set_text(column, counts, sid, old_text, new_text)
            if not column:
                del project.metadata[key]
                del project.metadata_counts[key]

    def _counts(self, project: _Project, field: str) -> Counter[str]:
        if field.startswith("metadata."):
            return project.metadata_counts.get(field.removeprefix("metadata."), Counter())
        counts = project.counts.get(field)
        if counts is not None:
            return counts
        # A field without a column: counted on demand.
        texts = (field_text(r.get(field)) for r in project.records.values())
        return Counter(t for t in texts if t is not None)

    def _column(self, project: _Project, flt: Filter) -> tuple[Column, Counter[str] | None]:
        """The column a filter reads, and the counts of its distinct values when kept."""
        if flt.field == "metadata":
            if not flt.source:
                raise InvalidInput("a METADATA filter needs a source", "source")
            return (
                project.metadata.get(flt.source, {}),
                project.metadata_counts.get(flt.source),
            )
        column = project.columns.get(flt.field)
        if column is not None:
            return column, project.counts[flt.field]
        # A field without a column (never one of the Assist filter types): built on demand.
        built: Column = {}
        for sid, record in project.records.items():
            text = field_text(record.get(flt.field))
            if text is not None:
                built[sid] = text.lower()
        return built, None

    def _match(self, project: _Project, filters: Iterable[Filter]) -> Collection[str] | None:
        """The sessionIDs matching every filter (no repeats); None when there are no filters.

        A filter scans its whole column, or only the sessions still in the running when they are
        few, so a selective first filter makes the rest cheap.
        """
        candidates: Collection[str] | None = None
        for flt in filters:
            operator = _NEGATED.get(flt.operator, flt.operator)
            if operator not in _POSITIVE:
                raise InvalidInput(f"unknown operator: {flt.operator}", "operator")
            column, counts = self._column(project, flt)
            needles = tuple(dict.fromkeys(v.lower() for v in flt.values))
            restricted = candidates is not None and len(candidates) * _RESTRICT_FRACTION < len(
                column
            )
            scope = candidates if restricted else None
            hits = _positive_hits(column, counts, scope, operator, needles)
            if flt.operator in _NEGATED:
                base = candidates if candidates is not None else project.records.keys()
                candidates = (base if isinstance(base, set) else set(base)).difference(hits)
            elif candidates is None or restricted:
                candidates = hits
            else:
                smaller, larger = sorted((candidates, hits), key=len)
                candidates = set(smaller).intersection(larger)
            if not candidates:
                return candidates
        return candidates

    def _page(
        self,
        project: _Project,
        matches: Collection[str] | None,
        sort: str,
        desc: bool,
        offset: int,
        limit: int,
    ) -> list[str]:
        stop = offset + limit
        if sort == "timestamp":
            n = len(project.order)
            if matches is None:
                # DESC reads the ASC order backwards: index positions are counted from the end.
                start, end = (n - stop, n - offset) if desc else (offset, stop)
                pairs = project.order.islice(max(start, 0), max(end, 0), reverse=desc)
                return [sid for _, sid in pairs]
            if len(matches) * _DENSE_FRACTION >= n:
                wanted = matches if isinstance(matches, set) else set(matches)
                walk = reversed(project.order) if desc else iter(project.order)
                return list(islice((sid for _, sid in walk if sid in wanted), offset, stop))
            return _two_pass_sort(matches, project.timestamps.__getitem__, desc)[offset:stop]
        pool: Iterable[str] = matches if matches is not None else project.records.keys()
        column = project.columns.get(sort)
        if column is not None:
            # Text columns: sessions where the field is unset sort lowest.
            unset = sorted((s for s in pool if s not in column), reverse=desc)
            valued = _two_pass_sort([s for s in pool if s in column], column.__getitem__, desc)
            ordered = valued + unset if desc else unset + valued
        else:
            records = project.records
            keys = {s: _sort_key(records[s].get(sort)) for s in pool}
            ordered = _two_pass_sort(keys, keys.__getitem__, desc)
        return ordered[offset:stop]


def _two_pass_sort(sids: Iterable[str], key: Any, desc: bool) -> list[str]:
    """Sort on ``key`` with ties on sessionID, both in the same direction.

    Sorting on sessionID first and then, stably, on the key is much faster than one sort on
    ``(key, sessionID)`` tuples built by a Python function per session.
    """
    ordered = sorted(sids, reverse=desc)
    ordered.sort(key=key, reverse=desc)
    return ordered


def _positive_hits(
    column: Column,
    counts: Counter[str] | None,
    scope: Collection[str] | None,
    operator: str,
    needles: tuple[str, ...],
) -> Collection[str]:
    """The sessions of ``scope`` (None: the whole column) whose text matches a positive
    operator."""
    size = len(scope) if scope is not None else len(column)
    if counts is not None and len(counts) * _DISTINCT_FRACTION < size:
        # Few distinct values (OS, browser, country, plan…): test each value once, then keep
        # the sessions holding one that passed, whatever the operator.
        lowered = map(str.lower, counts)
        wanted = {sys.intern(t) for t in lowered if _text_matches(t, operator, needles)}
        if scope is None:
            return [s for s, text in column.items() if text in wanted]
        get = column.get
        return [s for s in scope if get(s) in wanted]
    if scope is None:
        return _hits(column.items(), operator, needles)
    return _hits([(s, column[s]) for s in scope if s in column], operator, needles)


def _text_matches(text: str, operator: str, needles: tuple[str, ...]) -> bool:
    """Whether one lower-cased text matches any needle under a positive operator."""
    if not needles:
        return text != ""
    if operator == "is":
        return text in needles
    if operator == "startsWith":
        return text.startswith(needles)
    if operator == "endsWith":
        return text.endswith(needles)
    return any(needle in text for needle in needles)


def _hits(
    pairs: Collection[tuple[str, str]], operator: str, needles: tuple[str, ...]
) -> Collection[str]:
    """The sessions of ``(sessionID, text)`` pairs whose text matches any needle under a
    positive operator. Each case is one comprehension with the test inline: no Python call per
    session (startswith/endswith take the tuple of needles at C speed)."""
    if not needles:
        return [s for s, text in pairs if text]
    if operator == "is":
        if len(needles) == 1:
            (needle,) = needles
            return [s for s, text in pairs if text == needle]
        wanted = set(needles)
        return [s for s, text in pairs if text in wanted]
    if operator == "startsWith":
        return [s for s, text in pairs if text.startswith(needles)]
    if operator == "endsWith":
        return [s for s, text in pairs if text.endswith(needles)]
    if len(needles) == 1:
        (needle,) = needles
        return [s for s, text in pairs if needle in text]
    # Several substrings: one pass per needle beats any() per session by about 4x.
    hits: set[str] = set()
    for needle in needles:
        hits.update([s for s, text in pairs if needle in text])
    return hits
