"""Prometheus metrics of one node, in a registry of the application (no global state).

docs/operations.md ("Metrics") lists every metric and what to alert on. Label values are bounded:
roles are a fixed set, event names outside :data:`KNOWN_EVENTS` count as ``other`` (a tracker may
send any event name, and each distinct label value is a time series kept forever), and REST routes
are the route's template, never the raw path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hub.errors import RegistryUnavailable, StoreUnavailable
from hub.registry.base import EndedSession, EndedSink

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The ``identity`` of a connection to ``/`` and the role label it is counted under.
_ROLES = {"session": "tracker", "agent": "agent", "subscriber": "subscriber"}
OTHER = "other"

# Event names counted under their own name; any other name is ``other``. The protocol's events
# (SPEC §4) and the OpenReplay tracker's assist events.
KNOWN_EVENTS: frozenset[str] = frozenset(
    {
        # tracker → hub → agents
        "UPDATE_SESSION",
        "SESSION_MESSAGE",
        # hub → clients
        "ERROR",
        "SESSION_ALREADY_CONNECTED",
        "NEW_AGENT",
        "AGENT_DISCONNECTED",
        "AGENTS_CONNECTED",
        "AGENTS_INFO_CONNECTED",
        "NO_AGENT",
        "SESSION_DISCONNECTED",
        "SESSION_RECONNECTED",
        # /live
        "SESSIONS",
        "SESSION_STARTED",
        "SESSION_UPDATED",
        "SESSION_ENDED",
        "SUBSCRIBE",
        # OpenReplay assist events relayed between agents and trackers
        "messages",
        "call_start",
        "call_end",
        "_agent_name",
        "click",
        "move",
        "scroll",
        "input",
        "request_control",
        "release_control",
        "control_granted",
        "control_rejected",
        "startAnnotation",
        "stopAnnotation",
        "videofeed",
    }
)


def role_label(identity: str) -> str:
    """The role label of a connection's ``identity`` (``session`` is a tracker)."""
    return _ROLES.get(identity, OTHER)


def event_label(event: str) -> str:
    """``event`` when it is a known event name, else ``other``."""
    return event if event in KNOWN_EVENTS else OTHER


class _LiveSessions(Collector):
    """Live sessions as this node's replica of the registry sees them, read at scrape time."""

    def __init__(self, count: Callable[[], int]) -> None:
        self._count = count

    def collect(self) -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "livehub_live_sessions", "Live sessions in the registry", value=self._count()
            )
        ]


class Metrics:
    """Every metric of a node; see docs/operations.md for what each means and when to alert."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Gauge(
            "livehub_connections", "Open Socket.IO connections by role", ["role"], registry=r
        )
        self.connects = Counter(
            "livehub_connects", "Accepted Socket.IO connections by role", ["role"], registry=r
        )
        self.refused = Counter(
            "livehub_connections_refused",
            "Refused Socket.IO connections by role",
            ["role"],
            registry=r,
        )
        self.events_in = Counter(
            "livehub_events_in",
            "Socket.IO events received, by role and event",
            ["role", "event"],
            registry=r,
        )
        self.events_out = Counter(
            "livehub_events_out", "Socket.IO events sent, by event", ["event"], registry=r
        )
        self.event_errors = Counter(
            "livehub_event_errors",
            "Socket.IO events answered with ERROR, by code",
            ["code"],
            registry=r,
        )
        self.rest_latency = Histogram(
            "livehub_rest_request_seconds",
            "REST request latency by route",
            ["method", "route", "status"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.sessions_ended = Counter(
            "livehub_sessions_ended",
            "Sessions whose grace passed (ended by this node)",
            registry=r,
        )
        self.sessions_stored = Counter(
            "livehub_sessions_stored",
            "Ended sessions written to the store by this node",
            registry=r,
        )
        self.registry_errors = Counter(
            "livehub_registry_errors", "Failed calls to the presence registry", registry=r
        )
        self.store_errors = Counter("livehub_store_errors", "Failed calls to the store", registry=r)

    # -- Socket.IO -----------------------------------------------------------------------------

    def connected(self, identity: str) -> None:
        """A connection of ``identity`` was accepted."""
        role = role_label(identity)
        self.connects.labels(role).inc()
        self.connections.labels(role).inc()

    def disconnected(self, identity: str) -> None:
        """An accepted connection of ``identity`` closed."""
        self.connections.labels(role_label(identity)).dec()

    def refused_connection(self, identity: str) -> None:
        """A connection of ``identity`` was refused."""
        self.refused.labels(role_label(identity)).inc()

    def event_in(self, identity: str, event: str) -> None:
        """An event arrived from a connection of ``identity``."""
        self.events_in.labels(role_label(identity), event_label(event)).inc()

    def event_out(self, event: str, code: str | None = None) -> None:
        """The hub sent ``event``; ``code`` is the code of an ERROR."""
        self.events_out.labels(event_label(event)).inc()
        if code is not None:
            self.event_errors.labels(code).inc()

    # -- failures ------------------------------------------------------------------------------

    def failed(self, error: BaseException) -> None:
        """Count ``error`` as a registry or store error when it is one (or was caused by one)."""
        seen: BaseException | None = error
        for _ in range(8):  # a cause chain is short; a cycle must not loop forever
            if seen is None:
                return
            if isinstance(seen, RegistryUnavailable):
                self.registry_errors.inc()
                return
            if isinstance(seen, StoreUnavailable):
                self.store_errors.inc()
                return
            seen = seen.__cause__

    def count_saves(self, save: Callable[[EndedSession], Awaitable[bool]]) -> EndedSink:
        """The store's ``save_session`` as the registry's sink, counting ends, saves and errors.

        ``livehub_sessions_ended`` counts every end handed over (a retried or second-node end
        included), ``livehub_sessions_stored`` the ones that made a new row.
        """

        async def sink(ended: EndedSession) -> bool:
            try:
                new = await save(ended)
            except Exception:
                self.store_errors.inc()
                raise
            self.sessions_ended.inc()
            if new:
                self.sessions_stored.inc()
            return new

        return sink

    # -- REST ----------------------------------------------------------------------------------

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One REST request answered; ``route`` is its template (``/api/v1/{projectKey}/…``)."""
        self.rest_latency.labels(method, route, str(status)).observe(seconds)

    # -- scrape --------------------------------------------------------------------------------

    def watch_live_sessions(self, count: Callable[[], int]) -> None:
        """Report ``count()`` as the live-session gauge at every scrape."""
        self.registry.register(_LiveSessions(count))

    def render(self) -> bytes:
        """Every metric in the Prometheus text format (:data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)
