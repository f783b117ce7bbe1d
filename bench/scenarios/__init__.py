"""The benchmark scenarios P1–P9, their titles and targets (2-core machine)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bench.harness import Config
from bench.results import ScenarioResult

# A runner gets the results of the scenarios it measures, by id: scenarios that share one set-up
# (P3 and P4: 100,000 live sessions) share one runner, which fills those that were selected.
Runner = Callable[[Config, dict[str, ScenarioResult]], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    target: str
    runner: str  # "module:function", imported when the scenario runs

    def load(self) -> Runner:
        import importlib

        module, _, function = self.runner.partition(":")
        run: Runner = getattr(importlib.import_module(module), function)
        return run


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "P1",
        "trackers held by one hub process, heartbeats on",
        "≥ 10,000 at ≤ 30 KiB RSS each",
        "bench.scenarios.trackers:run_p1",
    ),
    Scenario(
        "P2",
        "tracker registrations per second, one process",
        "≥ 1,000/s",
        "bench.scenarios.trackers:run_p2",
    ),
    Scenario(
        "P3",
        "GET list page at 100,000 live sessions in one project",
        "p50 ≤ 5 ms; time at 100k ≤ 1.5 × time at 1k",
        "bench.scenarios.assist:run_p3_p4",
    ),
    Scenario(
        "P4",
        "POST filtered search at 100,000 live sessions",
        "p50 ≤ 50 ms",
        "bench.scenarios.assist:run_p3_p4",
    ),
    Scenario(
        "P5",
        "an update visible through REST on another node",
        "p99 ≤ 50 ms",
        "bench.scenarios.cluster:run_p5",
    ),
    Scenario(
        "P6",
        "relay tracker → agent across two nodes at 1,000 events/s",
        "p99 ≤ 10 ms",
        "bench.scenarios.relay:run_p6",
    ),
    Scenario(
        "P7",
        "stored search over 1,000,000 sessions (~2 KB each), selective needle",
        "p50 ≤ 20 ms on SQLite and PostgreSQL; ≥ 100 × faster than a scan",
        "bench.scenarios.stored:run_p7",
    ),
    Scenario(
        "P8",
        "ended sessions persisted",
        "≥ 5,000/s",
        "bench.scenarios.ending:run_p8",
    ),
    Scenario(
        "P9",
        "live feed: 1,000 subscribers, 100 updates/s",
        "delivery p99 ≤ 100 ms",
        "bench.scenarios.livefeed:run_p9",
    ),
)
