"""Logging: text or one JSON object a line (HUB_LOG_FORMAT), with context and without secrets.

- Every line logged while a REST request is handled carries its ``request_id`` (from a sane
  ``X-Request-Id`` header, else made up; ``api/middleware.py`` binds it), and every line logged by
  a Socket.IO handler carries its ``connection_id`` (the Socket.IO sid; ``hub/namespace.py`` binds
  it). Both live in :mod:`contextvars`, so concurrent requests and connections never mix.
- :class:`RedactSecrets` removes API keys, JWTs and ``Authorization`` values from every record
  before it is formatted: a safety net, since no code path is meant to log one in the first place.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

REQUEST_ID: ContextVar[str | None] = ContextVar("livehub_request_id", default=None)
CONNECTION_ID: ContextVar[str | None] = ContextVar("livehub_connection_id", default=None)

REDACTED = "[redacted]"

# The secret part of an API key ``lh_<keyId>_<token>`` (docs/store.md); the key id is public and
# kept, so a line still tells which key was involved.
_API_KEY = re.compile(r"(lh_[A-Za-z0-9]{1,64}_)[A-Za-z0-9]+")
# A JWT: three base64url parts, the first a JSON object (so ``eyJ``). A bare ``eyJ…`` run of 16 or
# more characters is taken too: half of a token is still too much of it.
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{13,}(?:\.[A-Za-z0-9_-]*){0,2}")
# The value of an Authorization header however it is written: ``Authorization: x``,
# ``'Authorization': 'Bearer x'``, ``"authorization":"x"``, ``HTTP_AUTHORIZATION=x``.
_AUTHORIZATION = re.compile(
    r"""(authorization['"\\]*\s*[:=]\s*['"\\]*)(?:bearer\s+)?[^\s'"\\,;})\]]+""", re.IGNORECASE
)


def redact(text: str) -> str:
    """``text`` with API keys, JWTs and Authorization values replaced by ``[redacted]``."""
    # The header first: its value is taken whole, whatever it looks like.
    if "uthorization" in text or "UTHORIZATION" in text:
        text = _AUTHORIZATION.sub(r"\1" + REDACTED, text)
    if "lh_" in text:
        text = _API_KEY.sub(r"\1" + REDACTED, text)
    if "eyJ" in text:
        text = _JWT.sub(REDACTED, text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
}


class RedactSecrets(logging.Filter):
    """Redact the message, its arguments, ``extra`` values and the traceback of every record.

    The message is rendered here (``msg % args``) so that a secret passed as an argument is caught;
    the traceback is rendered into ``exc_text``, which the formatters print instead of rendering it
    again.
    """

    def __init__(self) -> None:
        super().__init__()
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what there is, redacted
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and not key.startswith("_"):
                setattr(record, key, _redact_value(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class ClientErrors(logging.Filter):
    """Log a malformed HTTP request as what it is: the client's fault, at info, no traceback.

    aiohttp's server logs a request it cannot parse (a NUL in a header, a broken request line)
    at ERROR with a traceback; every scanner on the internet would then page the operator. It is
    answered 400 all the same.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError) and (error.code or 400) < 500:
            first_line = (error.message or "").strip().splitlines()[:1]
            reason = first_line[0] if first_line else ""
            record.msg = f"{record.getMessage()}: {reason}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class ContextFilter(logging.Filter):
    """Add ``request_id`` and ``connection_id`` to a record when they are bound."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = REQUEST_ID.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        connection_id = CONNECTION_ID.get()
        if connection_id is not None and not hasattr(record, "connection_id"):
            record.connection_id = connection_id
        return True


@contextlib.contextmanager
def bind_request(request_id: str) -> Iterator[None]:
    """Log lines within the block carry ``request_id``."""
    token = REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        REQUEST_ID.reset(token)


@contextlib.contextmanager
def bind_connection(sid: str) -> Iterator[None]:
    """Log lines within the block carry ``connection_id`` (a Socket.IO sid)."""
    token = CONNECTION_ID.set(sid)
    try:
        yield
    finally:
        CONNECTION_ID.reset(token)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD and not key.startswith("_")
    }


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_text:
        return record.exc_text
    if record.exc_info:
        return formatter.formatException(record.exc_info)
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and any ``extra`` context."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(_extras(record))
        exception = _exception_text(self, record)
        if exception:
            out["exception"] = exception
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value …`` for the ``extra`` context of the record."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if not extras:
            return line
        context = " ".join(f"{key}={value}" for key, value in extras.items())
        head, newline, rest = line.partition("\n")  # keep a traceback below the context
        return f"{head} [{context}]{newline}{rest}"


def configure(level: str, fmt: str) -> None:
    """Set up the root logger once, for ``livehub serve``."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    # Context first, so that what it adds is redacted too.
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactSecrets())
    # The handler filters by level too: ClientErrors lowers the level of records already let in.
    handler.setLevel(level.upper())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientErrors) for f in server.filters):
        server.addFilter(ClientErrors())
    # aiohttp's access log is one line a request; keep it at warning unless debugging.
    if level != "debug":
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # aiosqlite logs every statement with its parameters at debug level, the JWT signing secret
    # among them: never useful enough to be worth that.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
