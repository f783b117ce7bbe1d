"""Micro-benchmark of SessionIndex: does an Assist query cost the same at 100k sessions as at 1k?

Run: ``.venv/bin/python bench/index_scale.py [--sizes 1000,100000] [--repeat 50]``. Prints, per
number of live sessions in one project, the median (p50) and p95 time of each query, in ms.
Not a test: the numbers go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from hub.records import Record, blank_record
from hub.registry.base import Filter, SessionQuery
from hub.registry.index import SessionIndex

PROJECT_KEY = "aYYaFHiagqdXKEmVlmvJ"
OSES = ["Mac OS", "Windows", "Linux", "iOS", "Android", "Chrome OS"]
BROWSERS = ["Chrome", "Firefox", "Safari", "Edge", "Opera"]
COUNTRIES = ["FR", "DE", "US", "GB", "JP", "BR", "IN", None]
PLANS = ["free", "trial", "pro", "enterprise"]
WORDS = ["ann", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]


def make_record(rng: random.Random, i: int) -> Record:
    record = blank_record(PROJECT_KEY, 1, f"{7_000_000_000_000_000 + i}", 1_700_000_000_000 + i)
    record.update(
        pageTitle=f"{rng.choice(WORDS).title()}'s page {rng.randrange(500)}",
        userID=f"{rng.choice(WORDS)}{rng.randrange(100_000)}@example.com",
        userUUID=f"{rng.getrandbits(128):032x}",
        userOs=rng.choice(OSES),
        userBrowser=rng.choice(BROWSERS),
        userBrowserVersion=f"{rng.randrange(90, 130)}.0.0.0",
        userDeviceType=rng.choice(["desktop", "mobile", "tablet"]),
        userCountry=rng.choice(COUNTRIES),
        trackerVersion="16.0.1",
        active=rng.random() < 0.7,
        metadata={"plan": rng.choice(PLANS), "team": f"t{rng.randrange(50)}"},
    )
    # Timestamps of live sessions are not unique: bunch them so ties are common.
    record["timestamp"] = 1_700_000_000_000 + i // 3
    return record


QUERIES: dict[str, SessionQuery] = {
    "list page (GET, newest first, 200)": SessionQuery(),
    "list page 50 (deep page)": SessionQuery(page=50, limit=200),
    "list ASC page 1": SessionQuery(order="ASC"),
    "userID contains 'ann1' (rare)": SessionQuery(filters=(Filter("userID", ("ann1",)),)),
    "userOs is 'mac os' (1/6)": SessionQuery(filters=(Filter("userOs", ("mac os",), "is"),)),
    "3 filters: os, plan, active": SessionQuery(
        filters=(
            Filter("userOs", ("mac", "win")),
            Filter("metadata", ("trial", "pro"), "is", "plan"),
            Filter("active", ("true",), "is"),
        )
    ),
    "userCountry notContains 'fr'": SessionQuery(
        filters=(Filter("userCountry", ("fr",), "notContains"),)
    ),
    "pageTitle contains 'page 1' + sort userOs": SessionQuery(
        filters=(Filter("pageTitle", ("page 1",)),), sort="userOs"
    ),
    "no filter, sort userID (whole set)": SessionQuery(sort="userID", order="ASC"),
}


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float, float]:
    """Median and p95 wall time and median CPU time of ``repeat`` calls, in milliseconds.

    The CPU time is the process's own: on a machine shared with other work it shows what a
    query costs while the wall time shows what it waited too.
    """
    fn()  # warm up
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        cpu.append((time.process_time() - start_cpu) * 1000)
        wall.append((time.perf_counter() - start) * 1000)
    wall.sort()
    return statistics.median(wall), wall[max(int(len(wall) * 0.95) - 1, 0)], statistics.median(cpu)


Row = tuple[float, float, float, int]  # p50 wall, p95 wall, p50 CPU (ms), matches


def run(size: int, repeat: int) -> dict[str, Row]:
    rng = random.Random(size)
    records = [make_record(rng, i) for i in range(size)]
    index = SessionIndex()
    start = time.perf_counter()
    for record in records:
        index.upsert(record)
    per_upsert_us = (time.perf_counter() - start) / size * 1e6
    results: dict[str, Row] = {"upsert (µs each, mean)": (per_upsert_us, 0, 0, size)}
    for name, query in QUERIES.items():
        total = index.query(PROJECT_KEY, query).total
        results[name] = (*timed(lambda q=query: index.query(PROJECT_KEY, q), repeat), total)  # type: ignore[misc]
    for field, q in (("userOs", "o"), ("userID", "ann")):
        timing = timed(lambda f=field, q=q: index.autocomplete(PROJECT_KEY, f, q, 10), repeat)  # type: ignore[misc]
        results[f"autocomplete {field} {q!r}"] = (*timing, 10)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    table = {size: run(size, args.repeat) for size in sizes}
    names = list(next(iter(table.values())))
    width = max(map(len, names))
    header = "".join(f" | {f'{s:,} p50':>11} {'p95':>7} {'cpu':>7} {'matches':>7}" for s in sizes)
    print(f"{'query (ms)':<{width}}{header}")
    for name in names:
        row = "".join(
            " | {:>11.2f} {:>7.2f} {:>7.2f} {:>7,}".format(*table[s][name]) for s in sizes
        )
        print(f"{name:<{width}}{row}")


if __name__ == "__main__":
    main()
