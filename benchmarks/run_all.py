"""Run every benchmark, print a table and write benchmarks/results/latest.json.

Usage::

    python benchmarks/run_all.py            # default sizes: a few minutes on 2 cores
    python benchmarks/run_all.py --full     # 1M records for memory, larger end-to-end runs
    python benchmarks/run_all.py --smoke    # hundreds of records: checks the scripts work
    python benchmarks/run_all.py --only throughput memory
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import bench_lib
import end_to_end

BENCHMARKS = ("e2e", "throughput", "memory", "rerun", "exits")
DEFAULT_OUTPUT = bench_lib.BENCH_DIR / "results" / "latest.json"


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark runs."""

    throughput_records: int
    throughput_repeats: int
    memory_sizes: list[int]
    e2e: dict[str, tuple[int, float]] = field(default_factory=dict)  # version: (records, scale)
    rerun_records: int = 10_000
    rerun_time_scale: float = 10.0
    # Exits on: sizes, the first run's time scale, the re-run's (5% left: removals only).
    exits_sizes: list[int] = field(default_factory=lambda: [100_000])
    exits_time_scales: tuple[float, float] = (10.0, 1.0)


PROFILES = {
    "smoke": Sizes(
        throughput_records=300,
        throughput_repeats=1,
        memory_sizes=[100, 300],
        e2e={"2026-03-15": (300, 20.0), "v5": (300, 20.0)},
        rerun_records=200,
        rerun_time_scale=20.0,
        exits_sizes=[300],
        exits_time_scales=(20.0, 20.0),
    ),
    "default": Sizes(
        throughput_records=100_000,
        throughput_repeats=3,  # best of 3, interleaved: a shared VM's noise is ±15% run to run
        memory_sizes=[20_000, 100_000],
        # Long enough for several rate-limit windows: a sliding window lets the first minute's
        # requests go at once, so on shorter runs wall / floor falls below 1 and means little.
        e2e={"2026-03-15": (100_000, 10.0), "v5": (300_000, 1.0)},
        rerun_records=10_000,
        rerun_time_scale=10.0,
    ),
    "full": Sizes(
        throughput_records=1_000_000,
        throughput_repeats=2,
        memory_sizes=[100_000, 1_000_000],
        e2e={"2026-03-15": (200_000, 10.0), "v5": (1_000_000, 1.0)},
        rerun_records=100_000,
        rerun_time_scale=10.0,
        exits_sizes=[100_000, 1_000_000],
    ),
}


def local_in_fresh_process(name: str, *args: str) -> dict[str, Any]:
    """Run one `local.py` benchmark in a fresh interpreter and return its result.

    A child's peak RSS (read with `os.wait4`) starts at its parent's RSS at fork time, and this
    process grows while it reads the end-to-end runs' sandbox dumps: measured from here, every
    child would seem to need that much memory.
    """
    command = [sys.executable, str(bench_lib.BENCH_DIR / "local.py"), "--only", name, *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"local.py {name} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)[name]


def run_benchmarks(sizes: Sizes, only: set[str], workdir: Path) -> dict[str, Any]:
    """Run the selected benchmarks; a failing one records its error and the rest still run."""
    jobs: dict[str, Callable[[], Any]] = {}
    if "e2e" in only:
        for version, (records, scale) in sizes.e2e.items():
            jobs[f"e2e_{version}"] = lambda v=version, n=records, s=scale: end_to_end.end_to_end(
                v, n, s, workdir
            )
    if "throughput" in only:
        jobs["throughput"] = lambda: local_in_fresh_process(
            "throughput",
            "--records",
            str(sizes.throughput_records),
            "--repeats",
            str(sizes.throughput_repeats),
        )
    if "memory" in only:
        jobs["memory"] = lambda: local_in_fresh_process(
            "memory", "--memory-sizes", *map(str, sizes.memory_sizes)
        )
    if "rerun" in only:
        jobs["rerun"] = lambda: end_to_end.rerun(
            sizes.rerun_records, sizes.rerun_time_scale, workdir
        )
    if "exits" in only:
        first_scale, rerun_scale = sizes.exits_time_scales
        for records in sizes.exits_sizes:
            jobs[f"exits_{records}"] = lambda n=records: end_to_end.exits_on(
                n, first_scale, rerun_scale, workdir
            )
    results: dict[str, Any] = {}
    for name, job in jobs.items():
        print(f"… {name}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            results[name] = job()
        except Exception as error:  # report and keep going: one broken piece hides nothing else
            traceback.print_exc(file=sys.stderr)
            results[name] = {"error": f"{type(error).__name__}: {error}"[:4000], "met": False}
        results[name]["benchmark_seconds"] = round(time.perf_counter() - started, 1)
    return results


# --- the table ----------------------------------------------------------------------------------


def _met(value: bool | None) -> str:
    return {True: "yes", False: "NO", None: "n/a"}[value]


def _e2e_rows(name: str, result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    label = (
        f"1. end-to-end {result['api_version']} "
        f"({result['records']:,} rec, time scale {result['time_scale']:g})"
    )
    measured = (
        f"wall {result['wall_seconds']:.1f} s / floor {result['floor_seconds']:.1f} s "
        f"= {result['wall_over_floor']:.2f}x; polls {result['polls_share']:.1%} of "
        f"{result['requests'].get('total', 0)} requests; 429s {result['responses_429']}; "
        f"contacts held {result['contacts_held_by_sandbox']:,}/{result['valid_records']:,}"
    )
    return [(label, measured, "<=1.10x, polls <=5%, 0 429s", _met(result["met"]))]


def _throughput_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    target = result["target_dry_run_validating"]
    noop = result["noop_sdk_target_not_validating"]
    measured = (
        f"target {target['records_per_second']:,.0f} rec/s vs no-op SDK "
        f"{noop['records_per_second']:,.0f} rec/s = {result['ratio']:.2f} "
        f"(CPU {target['cpu_seconds']:.1f} s, mapping worker included, "
        f"vs {noop['cpu_seconds']:.1f} s)"
    )
    label = f"2. local throughput ({result['records']:,} rec, dry run)"
    return [(label, measured, "ratio >= 1.0", _met(result["met"]))]


def _memory_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    figures = ", ".join(f"{int(size):,}: {mb:.0f} MB" for size, mb in result["peak_rss_mb"].items())
    measured = (
        f"peak RSS (main + mapping worker) {figures}; "
        f"ratio {result['ratio_largest_to_reference']:.2f}"
    )
    return [("3. memory (dry run)", measured, "1M <=1.1x 100k, <=200 MB", _met(result["met"]))]


def _rerun_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    label = f"4. re-run unchanged ({result['records']:,} rec)"
    if not result.get("available"):
        return [(label, result.get("note", "not available"), "0 contact writes", "n/a")]
    measured = (
        f"second run: {result['second_run_contact_writes']:,} contact writes "
        f"(first run {result['first_run_contact_writes']:,})"
    )
    return [(label, measured, "0 contact writes", _met(result["met"]))]


def _exits_rows(result: dict[str, Any], results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    records = result["records"]
    runs = []
    for key, name in (("first_run", "first run"), ("rerun_5pc_left", "re-run, 5% left")):
        run = result[key]
        runs.append(
            f"{name} (time scale {run['time_scale']:g}): wall {run['wall_seconds']:.1f} s / "
            f"floor {run['floor_seconds']:.1f} s = {run['wall_over_floor']:.2f}x, "
            f"{run['contacts_get_requests']} GET /contacts, 429s {run['responses_429']}"
        )
    measured = (
        "; ".join(runs)
        + f"; {result['leavers']:,} leavers, {result['contacts_tagged_wrongly_after_rerun']} "
        "contacts tagged wrongly"
    )
    label = f"1. end to end, exits on (remove_tag, {records:,} rec)"
    rows = [(label, measured, "each <=1.10x its floor, every exit applied", _met(result["met"]))]
    reference = results.get("exits_100000")
    peak = result["peak_rss_with_worker_mb"]
    ratio = None
    if reference and "error" not in reference and records != 100_000:
        ratio = peak / reference["peak_rss_with_worker_mb"]
    memory_met = peak <= 200 and (ratio is None or ratio <= 1.1)
    figure = f"peak RSS (main + mapping worker) {peak:.0f} MB" + (
        f"; {ratio:.2f}x the 100k figure" if ratio is not None else ""
    )
    rows.append(
        (f"3. memory, exits on ({records:,} rec, end to end)", figure, "<=200 MB, 1M <=1.1x 100k",
         _met(memory_met))
    )  # fmt: skip
    return rows


def table_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """One row per benchmark: label, measured, goal, met."""
    rows: list[tuple[str, str, str, str]] = []
    for name, result in results.items():
        if "error" in result:
            rows.append((name, f"ERROR {result['error'].splitlines()[0][:140]}", "", "NO"))
        elif name.startswith("e2e_"):
            rows.extend(_e2e_rows(name, result))
        elif name == "throughput":
            rows.extend(_throughput_rows(result))
        elif name == "memory":
            rows.extend(_memory_rows(result))
        elif name == "rerun":
            rows.extend(_rerun_rows(result))
        elif name.startswith("exits_"):
            rows.extend(_exits_rows(result, results))
    return rows


def render_table(results: dict[str, Any], machine: dict[str, Any]) -> str:
    """A Markdown table of the results, with the machine underneath."""
    header = ("Benchmark", "Measured", "Goal", "Met")
    rows = [header, *table_rows(results)]
    widths = [max(len(row[column]) for row in rows) for column in range(4)]

    def line(cells: tuple[str, ...]) -> str:
        padded = (cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        return "| " + " | ".join(padded) + " |"

    separator = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items())
    return "\n".join(
        [
            line(rows[0]),
            separator,
            *(line(row) for row in rows[1:]),
            "",
            f"Machine: {machine['cpu_model']}, {machine['cpu_cores']} cores, "
            f"{_memory_text(machine)}, Python {machine['python']}, {versions}, "
            f"commit {machine['git_commit']}",
        ]
    )


def _memory_text(machine: dict[str, Any]) -> str:
    memory = machine.get("memory_mb")
    if memory is None or (isinstance(memory, float) and math.isnan(memory)):
        return "memory unknown"
    return f"{memory / 1024:.0f} GB RAM"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description="Run the target-omnisend benchmarks")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="1M records (takes much longer)")
    size.add_argument("--smoke", action="store_true", help="tiny sizes, to check the scripts")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--workdir", type=Path, help="keep inputs and logs here (default: temp)")
    args = parser.parse_args(argv)
    bench_lib.compile_bytecode()
    profile = "full" if args.full else "smoke" if args.smoke else "default"
    started = datetime.now(timezone.utc)
    with tempfile.TemporaryDirectory(prefix="omnisend-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results = run_benchmarks(PROFILES[profile], set(args.only), workdir)
    machine = bench_lib.machine_info()
    report = {
        "profile": profile,
        "started_at": started.isoformat(timespec="seconds"),
        "machine": machine,
        "results": results,
    }
    bench_lib.write_json(args.output, report)
    print(render_table(results, machine))
    print(f"\nJSON: {args.output}")
    return 1 if any("error" in result for result in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
