"""One record against Assist filters: the live feed's test of whether a session is in a set.

:meth:`hub.registry.index.SessionIndex.query` filters a whole project through its columns; the
live feed (``hub/livefeed.py``) asks the same question of one changed record. The answer must be
the same, so the text of a field and the comparison of a text with the filter's values are the
index's own helpers; ``tests/hub/registry/test_match.py`` holds the two to the same answers on
generated records and filters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hub.errors import InvalidInput
from hub.records import Record
from hub.registry.base import Filter

# The index's helpers, shared on purpose (see the module docstring): a field's text, how a
# lower-cased text matches values under a positive operator, and which operators are negations.
from hub.registry.index import _NEGATED, _POSITIVE, _text_matches, field_text

FilterKey = tuple[str, str, str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class _Test:
    field: str
    source: str | None
    operator: str  # a positive operator
    needles: tuple[str, ...]
    negated: bool


class RecordMatcher:
    """Filters (AND-ed, values OR-ed, case ignored) compiled once, tested against one record."""

    __slots__ = ("_tests",)

    def __init__(self, filters: Iterable[Filter]) -> None:
        tests = []
        for flt in filters:
            operator = _NEGATED.get(flt.operator, flt.operator)
            if operator not in _POSITIVE:
                raise InvalidInput(f"unknown operator: {flt.operator}", "operator")
            if flt.field == "metadata" and not flt.source:
                raise InvalidInput("a METADATA filter needs a source", "source")
            needles = tuple(dict.fromkeys(v.lower() for v in flt.values))
            tests.append(_Test(flt.field, flt.source, operator, needles, flt.operator in _NEGATED))
        self._tests = tuple(tests)

    def __call__(self, record: Record) -> bool:
        """Whether ``record`` passes every filter."""
        for test in self._tests:
            text = _text(record, test.field, test.source)
            hit = text is not None and _text_matches(text, test.operator, test.needles)
            if hit == test.negated:
                return False
        return True


def filters_key(filters: Iterable[Filter]) -> tuple[FilterKey, ...]:
    """A key equal for filters that select the same sessions written differently.

    Filters are AND-ed and values OR-ed, so neither order counts, nor repeats, nor the case of a
    value: ``[USEROS is [Mac, mac]], [USERID contains a]`` and the reverse give one key.
    """
    keys = {
        (flt.field, flt.source or "", flt.operator, tuple(sorted({v.lower() for v in flt.values})))
        for flt in filters
    }
    return tuple(sorted(keys))


def _text(record: Record, field: str, source: str | None) -> str | None:
    """The lower-cased text the index's column of ``field`` holds for this record, or None."""
    if field == "metadata":
        meta = record.get("metadata")
        value = meta.get(source) if isinstance(meta, dict) else None
    else:
        value = record.get(field)
    text = field_text(value)
    return text.lower() if text is not None else None
