"""The benchmark harness: ``.venv/bin/python -m bench [--quick|--full] [--only P1,P3]``.

Runs every scenario (bench/scenarios/) against real ``livehub serve`` processes, Redis and the
stores, and writes docs/benchmarks.md with its plots under docs/plots/. Quick mode takes about two
minutes; full mode about thirty (more the first time: the 1,000,000-session stores are filled
once and kept in the cache folder).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from urllib.parse import urlsplit

from bench import machine, report
from bench.harness import ROOT, Config, NotRun, ensure_postgres_database, flush_redis
from bench.results import ScenarioResult
from bench.scenarios import SCENARIOS

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/livehub_bench"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick")
    mode.add_argument("--full", dest="mode", action="store_const", const="full")
    parser.set_defaults(mode="quick")
    parser.add_argument("--only", default="", help="scenario ids, comma-separated: P1,P3")
    parser.add_argument(
        "--redis-db", type=int, default=9, help="Redis database on 127.0.0.1:6379 (FLUSHED)"
    )
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES,
        help="PostgreSQL database (created if absent; its public schema is WIPED)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "livehub-bench",
        help="where filled databases are kept between runs",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true", help="print the results only")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample every hub node with py-spy; the top functions go into the report",
    )
    args = parser.parse_args(argv)
    known = {s.id for s in SCENARIOS}
    args.only = [s.strip().upper() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.only) - known)
    if unknown:
        parser.error(
            f"--only: unknown scenario {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    if not 0 <= args.redis_db <= 15:
        parser.error("--redis-db must be 0-15")
    if not urlsplit(args.postgres_url).path.strip("/"):
        parser.error("--postgres-url must name a database")
    return args


async def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    load_before = machine.load_average()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="livehub-bench-") as tmp:
        config = Config(
            mode=args.mode,
            redis_db=args.redis_db,
            postgres_url=args.postgres_url,
            workdir=Path(tmp),
            cache_dir=args.cache_dir,
            runs=3 if args.mode == "quick" else 5,
            profile=args.profile,
        )
        await ensure_postgres_database(config.postgres_url)
        facts = await machine.describe(config.redis_url, config.postgres_url)
        selected = [s for s in SCENARIOS if not args.only or s.id in args.only]
        results = [ScenarioResult(s.id, s.title, s.target) for s in selected]
        # Scenarios that share a runner (one set-up) run together, in the order listed.
        groups: dict[str, list[ScenarioResult]] = {}
        for scenario, result in zip(selected, results, strict=True):
            groups.setdefault(scenario.runner, []).append(result)
        for runner, group in groups.items():
            scenario = next(s for s in selected if s.runner == runner)
            print(f"== {', '.join(r.id for r in group)}: {scenario.title}", flush=True)
            begin = time.monotonic()
            try:
                await flush_redis(config)
                await scenario.load()(config, {r.id: r for r in group})
            except NotRun as e:
                for result in group:
                    result.status, result.reason = "not-run", str(e)
            except Exception as e:
                traceback.print_exc()
                for result in group:
                    result.status, result.reason = "failed", f"{type(e).__name__}: {e}"
            finally:
                await flush_redis(config)
            profiles, config.profiles[:] = list(config.profiles), []
            for result in group:
                result.profiles = profiles
                result.seconds = (time.monotonic() - begin) / len(group)
                _print(result)
        kept = args.cache_dir / f"logs-last-{args.mode}"
        shutil.rmtree(kept, ignore_errors=True)
        kept.mkdir()
        for log in Path(tmp).glob("*.log"):
            shutil.copy(log, kept / log.name)
        print(f"(process logs kept in {kept})")
    meta = {
        "command": shlex.join([".venv/bin/python", "-m", "bench", *sys.argv[1:]]),
        "mode": args.mode,
        "seconds": time.monotonic() - started,
        "load_before": load_before,
        "load_after": machine.load_average(),
        "redis_db": args.redis_db,
        "postgres_db": urlsplit(args.postgres_url).path.strip("/"),
    }
    if float(load_before.split(" / ")[0]) >= 1.0:
        meta["noisy"] = (
            f"the machine was busy when the run began (load {load_before}): other work shared"
            " its two cores, so latencies are higher and rates lower than on a quiet machine."
        )
    (args.cache_dir / f"last-{args.mode}.json").write_text(
        json.dumps(
            {"meta": meta, "machine": facts, "results": [r.to_json() for r in results]}, indent=1
        )
    )
    if not args.no_write:
        text = report.render(results, facts, meta, args.output.parent / "plots", args.output)
        args.output.write_text(text)
        print(f"wrote {args.output}")
    return 1 if any(r.status == "failed" for r in results) else 0


def _print(result: ScenarioResult) -> None:
    if result.status != "ran":
        print(f"   {result.status}: {result.reason}", flush=True)
        return
    for m in result.metrics:
        if not m.runs:
            continue
        tail = f" p99 {report.fmt(m.stat('p99'))}" if m.kind == "latency" else ""
        verdict = "" if m.met is None else (" [met]" if m.met else " [MISSED]")
        print(f"   {m.name}: {report.fmt(m.stat('p50'))}{tail} {m.unit}{verdict}", flush=True)
    for b in result.baselines:
        print(f"   baseline {b.name}: {report.fmt(b.ratio)}x ({b.detail})", flush=True)
    print(f"   ({result.seconds:.0f} s)", flush=True)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    sys.exit(asyncio.run(run(parse_args())))


if __name__ == "__main__":
    main()
