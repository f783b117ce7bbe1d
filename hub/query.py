"""Parse and validate an Assist search (SPEC §5.1) into a :class:`SessionQuery`.

Shared by the REST API (``api/assist.py``: the POST body and the GET query string) and the live
feed (``/live`` subscriptions, which take the same ``filters``). Every rule is in one place so the
two edges accept exactly the same input. A bad input raises :class:`hub.errors.InvalidInput` whose
message starts with the field it is about (``filters[1].type``), and whose ``field`` is that path.

The decisions (null means absent, unknown keys ignored, case rules, limits) are in docs/api.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal, cast

from hub.errors import InvalidInput
from hub.records import FILTER_TYPES, RECORD_FIELDS
from hub.registry.base import Filter, Operator, SessionQuery

DEFAULT_SORT = "timestamp"
DEFAULT_ORDER: Literal["ASC", "DESC"] = "DESC"
DEFAULT_PAGE = 1
DEFAULT_LIMIT = 200
MAX_LIMIT = 1000
# A page past any realistic count of live sessions; bounds the offset a client can ask for.
MAX_PAGE = 1_000_000
MAX_FILTERS = 50
MAX_VALUES = 100
# Bytes (UTF-8) of one filter value, one metadata source or one autocomplete ``q``.
MAX_TEXT_BYTES = 1024

# ``metadata`` is an object: no order between two of them means anything to a user.
UNSORTABLE_FIELDS = frozenset({"metadata"})
_SORT_FIELDS: dict[str, str] = {
    name.lower(): name for name in RECORD_FIELDS if name not in UNSORTABLE_FIELDS
}
_OPERATORS: dict[str, Operator] = {
    name.lower(): name
    for name in cast(
        "tuple[Operator, ...]",
        ("contains", "is", "isNot", "notContains", "startsWith", "endsWith"),
    )
}
_ORDERS: dict[str, Literal["ASC", "DESC"]] = {"asc": "ASC", "desc": "DESC"}
_BOOL_TEXT = frozenset({"true", "false"})
# Query-string integers: an optional sign and at most 19 digits (larger is out of range anyway,
# and it keeps int() away from enormous strings).
_INT_TEXT = re.compile(r"[+-]?[0-9]{1,19}\Z")


def parse_query(body: Mapping[str, Any]) -> SessionQuery:
    """The query of a JSON search body: ``{"sort", "order", "page", "limit", "filters"}``.

    Every field is optional; ``null`` counts as absent; other keys are ignored.
    """
    return SessionQuery(
        filters=parse_filters(body.get("filters")),
        sort=parse_sort(body.get("sort")),
        order=parse_order(body.get("order")),
        page=parse_page(body.get("page")),
        limit=parse_limit(body.get("limit")),
    )


def parse_query_params(params: Mapping[str, str]) -> SessionQuery:
    """The query of a GET query string: ``page``, ``limit``, ``sort``, ``order`` (no filters).

    Numbers come as decimal text here; otherwise the rules are those of :func:`parse_query`.
    """
    return SessionQuery(
        sort=parse_sort(params.get("sort")),
        order=parse_order(params.get("order")),
        page=parse_page(_param_int(params, "page")),
        limit=parse_limit(_param_int(params, "limit")),
    )


def parse_sort(raw: Any) -> str:
    """A record field, any case, returned in its canonical spelling; default ``timestamp``."""
    if raw is None:
        return DEFAULT_SORT
    if not isinstance(raw, str):
        raise _invalid("sort", "must be a string")
    name = _SORT_FIELDS.get(raw.lower())
    if name is None:
        if raw.lower() in UNSORTABLE_FIELDS:
            raise _invalid("sort", f"cannot sort on {raw!r}")
        raise _invalid("sort", f"unknown field {_shown(raw)}")
    return name


def parse_order(raw: Any) -> Literal["ASC", "DESC"]:
    """``ASC`` or ``DESC``, any case; default ``DESC``."""
    if raw is None:
        return DEFAULT_ORDER
    if not isinstance(raw, str):
        raise _invalid("order", "must be a string")
    order = _ORDERS.get(raw.lower())
    if order is None:
        raise _invalid("order", f"must be ASC or DESC, got {_shown(raw)}")
    return order


def parse_page(raw: Any) -> int:
    """A page number, 1 to :data:`MAX_PAGE`; default 1."""
    if raw is None:
        return DEFAULT_PAGE
    return _int_in("page", raw, 1, MAX_PAGE)


def parse_limit(raw: Any) -> int:
    """Sessions per page, 1 to :data:`MAX_LIMIT`; default 200."""
    if raw is None:
        return DEFAULT_LIMIT
    return _int_in("limit", raw, 1, MAX_LIMIT)


def parse_filters(raw: Any, path: str = "filters") -> tuple[Filter, ...]:
    """A list of filter objects (at most :data:`MAX_FILTERS`); ``null`` or absent is none."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _invalid(path, "must be a list of filter objects")
    if len(raw) > MAX_FILTERS:
        raise _invalid(path, f"at most {MAX_FILTERS} filters, got {len(raw)}")
    return tuple(parse_filter(item, f"{path}[{i}]") for i, item in enumerate(raw))


def parse_filter(raw: Any, path: str = "filter") -> Filter:
    """One ``{"type", "value", "source", "operator"}`` object; ``path`` names it in errors."""
    if not isinstance(raw, dict):
        raise _invalid(path, "must be an object")
    type_name = _filter_type(raw.get("type"), f"{path}.type")
    field = FILTER_TYPES[type_name]
    operator = _operator(raw.get("operator"), f"{path}.operator")
    source = _source(raw.get("source"), f"{path}.source", required=type_name == "METADATA")
    values = _values(raw.get("value"), f"{path}.value", boolean=type_name == "ACTIVE")
    return Filter(
        field=field,
        values=values,
        operator=operator,
        source=source if type_name == "METADATA" else None,
    )


def filter_type(raw: Any, path: str = "type") -> str:
    """A filter type name, any case, returned upper-case (``USEROS``, ``METADATA`` …)."""
    return _filter_type(raw, path)


def autocomplete_field(type_raw: Any, source_raw: Any) -> tuple[str, str]:
    """The (type, index field) of an autocomplete request: ``("USEROS", "userOs")``, or
    ``("METADATA", "metadata.<source>")`` for METADATA, which needs a ``source``."""
    type_name = _filter_type(type_raw, "type")
    field = FILTER_TYPES[type_name]
    if type_name == "METADATA":
        source = _source(source_raw, "source", required=True)
        return type_name, f"metadata.{source}"
    return type_name, field


def parse_text(raw: Any, path: str, *, default: str = "") -> str:
    """An optional string of at most :data:`MAX_TEXT_BYTES` bytes (``q`` of autocomplete)."""
    if raw is None:
        return default
    if not isinstance(raw, str):
        raise _invalid(path, "must be a string")
    _check_size(raw, path)
    return raw


# -- internals ---------------------------------------------------------------------------------


def _invalid(path: str, problem: str) -> InvalidInput:
    return InvalidInput(f"{path} {problem}", path)


def _shown(raw: str) -> str:
    """A client's string, quoted and cut short, for an error message."""
    return repr(raw if len(raw) <= 64 else raw[:64] + "…")


def _int_in(path: str, raw: Any, low: int, high: int) -> int:
    # bool is an int subclass in Python, but true is not a page number.
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise _invalid(path, "must be an integer")
    if raw < low or raw > high:
        raise _invalid(path, f"must be between {low} and {high}, got {raw}")
    return raw


def _param_int(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not _INT_TEXT.match(raw):
        raise _invalid(name, "must be an integer")
    return int(raw)


def _filter_type(raw: Any, path: str) -> str:
    if raw is None:
        raise _invalid(path, "is required")
    if not isinstance(raw, str):
        raise _invalid(path, "must be a string")
    name = raw.upper()
    if name not in FILTER_TYPES:
        raise _invalid(path, f"unknown filter type {_shown(raw)}")
    return name


def _operator(raw: Any, path: str) -> Operator:
    if raw is None:
        return "contains"
    if not isinstance(raw, str):
        raise _invalid(path, "must be a string")
    operator = _OPERATORS.get(raw.lower())
    if operator is None:
        names = ", ".join(_OPERATORS.values())
        raise _invalid(path, f"unknown operator {_shown(raw)} (one of {names})")
    return operator


def _source(raw: Any, path: str, *, required: bool) -> str | None:
    if raw is not None and not isinstance(raw, str):
        raise _invalid(path, "must be a string")
    if not raw:
        if required:
            raise _invalid(path, "is required for a METADATA filter")
        return None
    _check_size(raw, path)
    return raw


def _values(raw: Any, path: str, *, boolean: bool) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _invalid(path, "must be a list of strings")
    if len(raw) > MAX_VALUES:
        raise _invalid(path, f"at most {MAX_VALUES} values, got {len(raw)}")
    values: dict[str, None] = {}  # an ordered set: duplicates change nothing
    for i, item in enumerate(raw):
        item_path = f"{path}[{i}]"
        if not isinstance(item, str):
            raise _invalid(item_path, "must be a string")
        _check_size(item, item_path)
        value = item.lower()
        if boolean and value not in _BOOL_TEXT:
            raise _invalid(item_path, f'must be "true" or "false", got {_shown(item)}')
        values[value] = None
    return tuple(values)


def _check_size(text: str, path: str) -> None:
    # Cheap bound first: a str of n characters is at least n UTF-8 bytes.
    if len(text) > MAX_TEXT_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
        raise _invalid(path, f"is over {MAX_TEXT_BYTES} bytes")
