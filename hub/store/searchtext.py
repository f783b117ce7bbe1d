"""The searchable text of a stored session, and the query forms of a search needle.

A stored session is searched as its data written as compact JSON (SPEC §5.2): separators ``,``
and ``:``, keys in stored order, non-ASCII characters as themselves. Both stores keep exactly the
text :func:`compact_json` returns and match needles against it, so ``needle in compact_json(data)``
in Python is the definition every store query is tested against.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hub.errors import InvalidInput

# Python strings may hold lone surrogates (a JSON "\ud800" escape decodes to one); they cannot be
# encoded as UTF-8, so the stored text keeps them as the JSON escape they came from.
_SURROGATE = re.compile("[\ud800-\udfff]")
# Characters compact JSON never holds raw: json.dumps escapes every control character below
# U+0020, and lone surrogates are escaped above.
_NEVER_RAW = re.compile("[\x00-\x1f\ud800-\udfff]")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

# FTS5's trigram tokenizer indexes sequences of three characters: shorter needles cannot use it.
MIN_INDEXED_CHARS = 3
MAX_ID = 2**63 - 1


def compact_json(data: Any) -> str:
    """``data`` as the compact JSON text that is stored and searched."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def can_match(needle: str) -> bool:
    """False when no compact JSON text can contain ``needle`` (it holds a raw control character
    or a lone surrogate), so that a store can answer without asking the database."""
    return _NEVER_RAW.search(needle) is None


def storable(text: str) -> bool:
    """Whether both databases can hold ``text``: no NUL (PostgreSQL refuses it) and no lone
    surrogate (not encodable as UTF-8)."""
    return _UNSTORABLE.search(text) is None


def storable_id(value: int) -> bool:
    """Whether ``value`` can be a row id: positive and within a signed 64-bit integer (both
    databases refuse larger numbers as parameters, so such an id names nothing)."""
    return 0 < value <= MAX_ID


def check_storable(text: str, field: str) -> None:
    """Raise InvalidInput naming ``field`` when ``text`` cannot be stored."""
    if not storable(text):
        raise InvalidInput(f"{field} must not contain NUL characters or lone surrogates", field)


def fts5_phrase(needle: str) -> str:
    """The needle as one FTS5 string: every character literal, ``"`` doubled."""
    return '"' + needle.replace('"', '""') + '"'


def like_pattern(needle: str) -> str:
    r"""A ``LIKE … ESCAPE '\'`` pattern matching any text that contains ``needle``."""
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
