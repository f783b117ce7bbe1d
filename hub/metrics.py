"""Prometheus metrics of one node, in a registry of the application (no global state)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


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

    def watch_live_sessions(self, count: Callable[[], int]) -> None:
        """Report ``count()`` as the live-session gauge at every scrape."""
        self.registry.register(_LiveSessions(count))

    def render(self) -> bytes:
        return generate_latest(self.registry)
