"""Validation of what trackers send (SPEC §4.2, §6): event sizes, UPDATE_SESSION, SESSION_MESSAGE,
metadata, and the per-connection rate limit.

Every function here either returns a clean value or raises :class:`hub.errors.InvalidInput` (or its
:class:`hub.errors.TooLarge`) with a message that names the field; nothing is changed on the way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hub.errors import HubError, InvalidInput, RateLimited, TooLarge
from hub.settings import Limits

log = logging.getLogger(__name__)

UPDATE_SESSION = "UPDATE_SESSION"
SESSION_MESSAGE = "SESSION_MESSAGE"

# UPDATE_SESSION keys that change the record, and the type each must have. ``metadata`` and
# ``variables`` are checked on their own; every other key is ignored (SPEC §4.1: "other fields are
# ignored", the same rule as sessionInfo).
_UPDATE_STRINGS = ("pageTitle", "userID", "userUUID", "revID")

# The largest millisecond timestamp accepted: 9999-12-31T23:59:59.999Z.
MAX_TIMESTAMP_MS = 253_402_300_799_999


def json_size(value: Any) -> int:
    """The size in bytes of ``value`` as compact UTF-8 JSON; binary parts count their length.

    Raises InvalidInput for what JSON cannot carry (NaN, Infinity, other objects) or nests too deep.
    """
    binary = 0

    def count_binary(obj: Any) -> Any:
        nonlocal binary
        if isinstance(obj, bytes | bytearray | memoryview):
            binary += len(obj)
            return None
        raise TypeError(type(obj).__name__)

    try:
        text = json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=count_binary
        )
    except (ValueError, TypeError) as e:
        raise InvalidInput(f"the payload is not valid JSON: {e}") from e
    except RecursionError as e:
        raise InvalidInput("the payload nests too deep") from e
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError as e:
        # A lone surrogate (\ud800) decodes in Python but cannot be stored as UTF-8.
        raise InvalidInput("the payload holds an unpaired surrogate character") from e
    return len(encoded) + binary


def check_event_size(args: tuple[Any, ...] | list[Any], limits: Limits) -> None:
    """Raise TooLarge when the event's arguments, as JSON, are over ``limits.event_bytes``."""
    size = json_size(list(args))
    if size > limits.event_bytes:
        raise TooLarge(f"the event is {size} bytes, over the limit of {limits.event_bytes}")


def has_binary(value: Any) -> bool:
    """True when ``value`` holds bytes anywhere (a Socket.IO binary attachment)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return True
    if isinstance(value, dict):
        return any(has_binary(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(has_binary(v) for v in value)
    return False


def validate_metadata(value: Any, limits: Limits, field: str = "metadata") -> dict[str, str]:
    """An object of string values within the §6 limits; else InvalidInput or TooLarge."""
    if not isinstance(value, dict):
        raise InvalidInput(f"{field} must be an object of strings", field)
    if len(value) > limits.metadata_keys:
        raise TooLarge(
            f"{field} has {len(value)} keys, over the limit of {limits.metadata_keys}", field
        )
    out: dict[str, str] = {}
    for key, item in value.items():
        if len(key) > limits.metadata_key_chars:
            raise TooLarge(
                f"{field} key {key[:32]!r}… is over {limits.metadata_key_chars} characters", field
            )
        if not isinstance(item, str):
            raise InvalidInput(f"{field}.{key} must be a string", field)
        if len(item.encode("utf-8", "surrogatepass")) > limits.metadata_value_bytes:
            raise TooLarge(f"{field}.{key} is over {limits.metadata_value_bytes} bytes", field)
        out[key] = item
    return out


def check_merged_metadata(
    current: Mapping[str, Any], new: Mapping[str, Any], limits: Limits
) -> None:
    """Raise TooLarge when merging ``new`` into ``current`` would pass the metadata key limit."""
    merged = len(current) + sum(1 for key in new if key not in current)
    if merged > limits.metadata_keys:
        raise TooLarge(
            f"metadata would have {merged} keys, over the limit of {limits.metadata_keys}",
            "metadata",
        )


def timestamp_ms(value: Any, field: str) -> int:
    """A non-negative integer of milliseconds since the epoch (an integral float is accepted)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{field} must be an integer of milliseconds since the epoch", field)
    if isinstance(value, float) and not value.is_integer():
        raise InvalidInput(f"{field} must be an integer of milliseconds since the epoch", field)
    if not 0 <= value <= MAX_TIMESTAMP_MS:
        raise InvalidInput(f"{field} must be between 0 and {MAX_TIMESTAMP_MS}", field)
    return int(value)


@dataclass(frozen=True)
class SessionUpdate:
    """A validated UPDATE_SESSION: record changes and the variables to merge into the data."""

    changes: dict[str, Any]
    variables: dict[str, Any] | None

    def __bool__(self) -> bool:
        return bool(self.changes) or self.variables is not None


def validate_update(payload: Any, limits: Limits) -> SessionUpdate:
    """Check an UPDATE_SESSION payload; keys other than the updatable ones are ignored.

    OpenReplay's tracker wraps the changes as ``{"meta": {...}, "data": {...}}``: such a payload
    (no key but ``meta`` and ``data``, ``data`` an object) is unwrapped first.
    """
    payload = _object(payload)
    if set(payload) <= {"meta", "data"} and isinstance(payload.get("data"), dict):
        payload = payload["data"]
    _no_binary(payload)
    changes: dict[str, Any] = {}
    for name in _UPDATE_STRINGS:
        if name in payload:
            if not isinstance(payload[name], str):
                raise InvalidInput(f"{name} must be a string", name)
            changes[name] = payload[name]
    if "active" in payload:
        if not isinstance(payload["active"], bool):
            raise InvalidInput("active must be true or false", "active")
        changes["active"] = payload["active"]
    if "metadata" in payload:
        changes["metadata"] = validate_metadata(payload["metadata"], limits)
    variables = None
    if "variables" in payload:
        if not isinstance(payload["variables"], dict):
            raise InvalidInput("variables must be an object", "variables")
        variables = payload["variables"]
    return SessionUpdate(changes, variables)


def validate_message(payload: Any, now_ms: Callable[[], int]) -> dict[str, Any]:
    """Check a SESSION_MESSAGE; the message is kept as sent, with a timestamp added when absent."""
    payload = _object(payload)
    _no_binary(payload)
    for name in ("role", "content"):
        if not isinstance(payload.get(name), str):
            raise InvalidInput(f"{name} must be a string", name)
    message = dict(payload)
    if message.get("timestamp") is None:
        message["timestamp"] = now_ms()
    else:
        message["timestamp"] = timestamp_ms(message["timestamp"], "timestamp")
    return message


def _object(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise InvalidInput("the payload must be a JSON object")
    return payload


def _no_binary(payload: dict[str, Any]) -> None:
    # Stored data is JSON: a binary attachment has no place in it.
    if has_binary(payload):
        raise InvalidInput("the payload must not hold binary data")


class TokenBucket:
    """The per-connection event rate limit: ``rate`` tokens a second, at most ``burst`` saved."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def take(self) -> bool:
        """Spend one token; False (and nothing spent) when none is left."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


async def handle_event(
    limiter: TokenBucket,
    lock: asyncio.Lock,
    accept: Callable[[], Awaitable[None]],
    refuse: Callable[[HubError], Awaitable[dict[str, Any]]],
    describe: str,
) -> dict[str, Any]:
    """Run one event of a connection under its rate limit and its lock.

    The answer is the event's ack: ``{"ok": true}``, or what ``refuse`` answers for the error.
    """
    # Taken before anything awaits, so tokens go in the order the events arrived.
    if not limiter.take():
        return await refuse(
            RateLimited(f"over {limiter.rate:g} events a second (bursts of {limiter.burst})")
        )
    async with lock:
        try:
            await accept()
        except HubError as e:
            return await refuse(e)
        except Exception:
            log.exception("%s failed", describe)
            return await refuse(HubError("internal error"))
    return {"ok": True}
