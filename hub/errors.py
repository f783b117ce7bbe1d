"""The exceptions of livehub, in one hierarchy.

They are raised with ``from e`` where they wrap another error, and turned into HTTP status codes and
JSON only at the API edge (``api.errors``), or into ``ERROR`` events at the Socket.IO edge.
"""

from __future__ import annotations


class HubError(Exception):
    """Base of every livehub error.

    ``body``, when given, is the exact JSON body the REST edge answers with (for APIs whose
    documents fix an error body of their own); otherwise it answers ``{"error": message}``.
    """

    code = "internal"

    def __init__(self, message: str = "", *, body: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.body = body


class SettingsError(HubError):
    """A setting is invalid; the message names it."""

    code = "bad_setting"


class InvalidInput(HubError):
    """Input from a client is malformed or out of range; the message names the field."""

    code = "invalid"

    def __init__(
        self, message: str, field: str | None = None, *, body: dict[str, object] | None = None
    ) -> None:
        super().__init__(message, body=body)
        self.field = field


class TooLarge(InvalidInput):
    """Input is over a size limit."""

    code = "too_large"


class RateLimited(HubError):
    """A connection sent events faster than its rate limit."""

    code = "rate_limited"


class Unauthorized(HubError):
    """Missing, unknown or revoked credentials."""

    code = "unauthorized"


class Forbidden(HubError):
    """Valid credentials that do not cover the resource."""

    code = "forbidden"


class NotFound(HubError):
    """The resource does not exist."""

    code = "not_found"


class ProjectNotFound(NotFound):
    """No project with that key or id."""


class SessionNotFound(NotFound):
    """No live or stored session with that id."""


class KeyNotFound(NotFound):
    """No API key with that id."""


class TabAlreadyConnected(HubError):
    """A tab with that tabId is already connected for the session."""

    code = "SESSION_ALREADY_CONNECTED"


class SessionDataTooLarge(TooLarge):
    """Accepting the input would take the session's stored data over its limit."""

    code = "session_data_too_large"


class SearchTooBroad(HubError):
    """A stored-session search ran past its time budget (HUB_SEARCH_TIMEOUT) and was stopped."""

    code = "search_too_broad"

    @classmethod
    def after(cls, budget: float) -> SearchTooBroad:
        return cls(
            f"search_string matches too broadly: the search ran past {budget:g} s"
            " (HUB_SEARCH_TIMEOUT) and was stopped; use a longer, more specific string"
        )


class Unavailable(HubError):
    """A backing service does not answer."""

    code = "unavailable"


class RegistryUnavailable(Unavailable):
    """The presence registry (Redis) does not answer."""


class StoreUnavailable(Unavailable):
    """The store (SQLite or PostgreSQL) does not answer."""
