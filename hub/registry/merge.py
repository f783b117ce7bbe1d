"""Merging changes into session data, and measuring that data as it will be stored.

Both registries use these, so a record or a session's variables merge the same way on every node.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from hub.records import NOT_STORED_FIELDS


def deep_merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: ``base`` with ``changes`` merged in; neither argument is modified.

    A dict value merges into a dict value of the same key, recursively; any other value (lists and
    ``None`` included) replaces what was there. Keys keep their position; new keys come last. The
    result shares nothing mutable with ``changes``, so a caller may reuse its payload.
    """
    merged = dict(base)
    for key, value in changes.items():
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = copy_json(value)
    return merged


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON value (dicts and lists copied, scalars shared); fast for records."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value


def dumps_compact(value: Any) -> str:
    """The compact JSON text the store keeps and searches (SPEC §5.2)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON, the measure of the session-data limit."""
    return len(dumps_compact(value).encode("utf-8"))


# The fixed text of ``{"sessionInfo":…,"variables":…,"messages":…}`` around its three values.
_DATA_FRAME = len('{"sessionInfo":,"variables":,"messages":}')


@dataclass(frozen=True, slots=True)
class DataSize:
    """The compact-JSON size of a session's stored data, kept up to date piece by piece.

    The data is ``{"sessionInfo", "variables", "messages"}`` (:func:`hub.records.stored_data`).
    A message adds its own size; a change to the variables re-measures only the top-level keys it
    touched; a change to the record re-measures the record (small). So a session near the 4 MiB
    limit is never serialised whole per event. Instances are immutable: a refused change leaves
    the session's size as it was.
    """

    info: int = 2
    variable_entries: Mapping[str, int] = field(default_factory=dict)
    variables: int = 2
    messages: int = 2
    message_count: int = 0

    @property
    def total(self) -> int:
        """Bytes of the whole stored data as compact UTF-8 JSON."""
        return _DATA_FRAME + self.info + self.variables + self.messages

    @classmethod
    def of(
        cls,
        record: Mapping[str, Any],
        variables: Mapping[str, Any] | None = None,
        messages: Sequence[Any] = (),
    ) -> DataSize:
        """Measure data from scratch."""
        size = cls(info=_info_size(record))
        if variables:
            size = size.after(None, variables, list(variables))
        for message in messages:
            size = size.with_message(message)
        return size

    def after(
        self,
        record: Mapping[str, Any] | None,
        variables: Mapping[str, Any] | None,
        changed_keys: Iterable[str],
    ) -> DataSize:
        """The size once ``record`` (when given) and ``variables`` (the merged whole, when
        given; only ``changed_keys`` of it re-measured) replace the current ones."""
        info = _info_size(record) if record is not None else self.info
        entries = self.variable_entries
        total = self.variables
        if variables is not None:
            entries = dict(entries)
            for key in changed_keys:
                entries[key] = json_size(str(key)) + 1 + json_size(variables[key])
            total = 2 + sum(entries.values()) + max(len(entries) - 1, 0)
        return replace(self, info=info, variable_entries=entries, variables=total)

    def with_message(self, message: Any) -> DataSize:
        """The size once ``message`` is appended."""
        comma = 1 if self.message_count else 0
        return replace(
            self,
            messages=self.messages + comma + json_size(message),
            message_count=self.message_count + 1,
        )


def _info_size(record: Mapping[str, Any]) -> int:
    return json_size({k: v for k, v in record.items() if k not in NOT_STORED_FIELDS})
