"""What a scenario measured: metrics over runs, targets, baseline ratios, plot series."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Literal

Stat = Literal["p50", "p99", "value"]


def percentile(samples: list[float], q: float) -> float:
    """The ``q`` quantile (0–1) of samples, nearest rank (the sample at or above q)."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(math.ceil(q * len(ordered)) - 1, 0)
    return ordered[min(rank, len(ordered) - 1)]


@dataclass(frozen=True)
class Target:
    """A target on one statistic of a metric: ``p50 <= 5`` (ms), ``value >= 1000`` (/s)."""

    stat: Stat
    op: Literal["<=", ">="]
    threshold: float

    def met(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value <= self.threshold if self.op == "<=" else value >= self.threshold

    def __str__(self) -> str:
        return f"{self.stat} {'≤' if self.op == '<=' else '≥'} {self.threshold:g}"


@dataclass
class Metric:
    """One measured quantity over several runs.

    A ``latency`` metric keeps every sample of every run: its median and p99 are over all samples
    pooled, its min–max over the runs' medians. A ``value`` metric has one number a run (a rate,
    a size): its median and min–max are over the runs.
    """

    name: str
    unit: str
    kind: Literal["latency", "value"] = "latency"
    runs: list[list[float]] = field(default_factory=list)
    target: Target | None = None
    note: str = ""

    def add_run(self, samples: list[float] | float) -> None:
        self.runs.append(list(samples) if isinstance(samples, list) else [float(samples)])

    @property
    def pooled(self) -> list[float]:
        return [s for run in self.runs for s in run]

    @property
    def per_run(self) -> list[float]:
        if self.kind == "value":
            return [run[0] for run in self.runs if run]
        return [statistics.median(run) for run in self.runs if run]

    def stat(self, which: Stat) -> float:
        if not self.runs:
            return math.nan
        if self.kind == "value":
            return statistics.median(self.per_run) if which != "p99" else math.nan
        if which == "p99":
            return percentile(self.pooled, 0.99)
        return statistics.median(self.pooled)

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.target.met(self.stat(self.target.stat))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "kind": self.kind,
            "median": self.stat("p50"),
            "p99": self.stat("p99"),
            "per_run": self.per_run,
            "samples": len(self.pooled),
            "target": str(self.target) if self.target else None,
            "met": self.met,
            "note": self.note,
        }


@dataclass
class Baseline:
    """A ratio measured in the same invocation: ``ratio = slower / faster`` (or as described)."""

    name: str
    ratio: float
    detail: str


@dataclass
class Series:
    """A line to plot: x and y values with axis labels."""

    label: str
    x: list[float]
    y: list[float]
    x_label: str
    y_label: str


@dataclass
class ScenarioResult:
    """Everything one scenario reports."""

    id: str
    title: str
    target: str
    status: Literal["ran", "not-run", "failed"] = "ran"
    reason: str = ""
    metrics: list[Metric] = field(default_factory=list)
    baselines: list[Baseline] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    profiles: list[tuple[str, str]] = field(default_factory=list)  # (hub node, py-spy summary)
    seconds: float = 0.0

    def metric(self, name: str, unit: str, **kwargs: Any) -> Metric:
        """A new metric, added to this result."""
        metric = Metric(name, unit, **kwargs)
        self.metrics.append(metric)
        return metric

    @property
    def met(self) -> bool | None:
        """True when every targeted metric met its target; None when nothing was targeted."""
        verdicts = [m.met for m in self.metrics if m.target is not None]
        if self.status != "ran" or not verdicts:
            return None
        return all(bool(v) for v in verdicts)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "target": self.target,
            "status": self.status,
            "reason": self.reason,
            "met": self.met,
            "seconds": round(self.seconds, 1),
            "metrics": [m.to_json() for m in self.metrics],
            "baselines": [
                {"name": b.name, "ratio": b.ratio, "detail": b.detail} for b in self.baselines
            ],
            "settings": self.settings,
            "notes": self.notes,
        }
