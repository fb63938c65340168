"""Benchmarks 2 and 3: local throughput against a no-op SDK target, and peak memory.

Both run `target-omnisend` in dry run (map, validate, write would-be payloads; no HTTP), so only
the target's own CPU and memory are measured.

2. Throughput: records/s of `target-omnisend` (validation on) and of a no-op singer-sdk target
   (``validate_records: false``) reading the same file, each a child process timed from start to
   exit (interpreter start-up included). Best of ``repeats`` runs each. Goal: ratio >= 1.0.
3. Memory: peak RSS of the dry-run target at two or more sizes, its mapping worker included
   (the sum of both processes' peaks). Goal: the largest size needs <= 1.1x the RSS of the 100k
   size and <= 200 MB.

Usage::

    python benchmarks/local.py --records 100000 --memory-sizes 20000 100000
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import bench_lib
import generate

THROUGHPUT_GOAL_RATIO = 1.0
MEMORY_GOAL_RATIO = 1.1
MEMORY_GOAL_MB = 200.0
MEMORY_REFERENCE_SIZE = 100_000


def input_file(records: int, workdir: Path) -> Path:
    """The generated input for ``records`` profiles (generated once per work directory)."""
    path = workdir / f"profiles-{records}.singer"
    if not path.exists():
        generate.write_file(records, path)
    return path


def dry_run_config(workdir: Path, name: str, api_version: str = "2026-03-15") -> Path:
    """A target-omnisend dry-run config file (payloads and rejects go under ``workdir``)."""
    config = generate.target_mapping_config()
    config.update(
        api_key=bench_lib.FAKE_API_KEY,
        api_version=api_version,
        dry_run=True,
        dry_run_path=str(workdir / f"{name}.payloads.jsonl"),
        rejects_path=str(workdir / f"{name}.rejects.jsonl"),
    )
    path = workdir / f"{name}.config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def run_target_dry(records: int, workdir: Path, name: str) -> dict[str, Any]:
    """One dry run of `target-omnisend`; checks it accounted for every record."""
    config = dry_run_config(workdir, name)
    run = bench_lib.run_timed(
        [*bench_lib.target_command(), "--config", str(config)],
        input_file(records, workdir),
        workdir,
        name,
    )
    if run.returncode != 0:
        raise RuntimeError(
            f"target-omnisend dry run failed ({run.returncode}):\n{run.stderr_tail()}"
        )
    summary = bench_lib.read_summary(run.stderr_path) or {}
    for leftover in (f"{name}.payloads.jsonl", f"{name}.rejects.jsonl"):
        (workdir / leftover).unlink(missing_ok=True)
    measures = _measures(records, run)
    # The mapping worker is a process of its own: memory counts both (the sum of their peaks).
    parallel = summary.get("parallel_mapping") or {}
    worker_mb = float(parallel.get("worker_peak_rss_mb") or 0.0)
    return measures | {
        "records_read": summary.get("records_read"),
        "rejected": summary.get("rejected"),
        "mapped_in_worker": parallel.get("in_worker", 0),
        "mapped_in_main": parallel.get("in_main", 0),
        "worker_peak_rss_mb": worker_mb,
        "peak_rss_with_worker_mb": round(measures["peak_rss_mb"] + worker_mb, 1),
    }


def run_noop(records: int, workdir: Path, name: str) -> dict[str, Any]:
    """One run of the no-op singer-sdk target with ``validate_records: false``."""
    config = workdir / f"{name}.config.json"
    config.write_text(json.dumps({"validate_records": False}), encoding="utf-8")
    run = bench_lib.run_timed(
        [*bench_lib.noop_command(), "--config", str(config)],
        input_file(records, workdir),
        workdir,
        name,
    )
    if run.returncode != 0:
        raise RuntimeError(f"no-op target failed ({run.returncode}):\n{run.stderr_tail()}")
    return _measures(records, run)


def _measures(records: int, run: bench_lib.ProcessRun) -> dict[str, Any]:
    return {
        "wall_seconds": round(run.wall_seconds, 3),
        "cpu_seconds": round(run.cpu_seconds, 3),
        "records_per_second": round(records / run.wall_seconds, 1),
        "peak_rss_mb": round(run.peak_rss_mb, 1),
    }


def throughput(records: int, workdir: Path, repeats: int = 2) -> dict[str, Any]:
    """Benchmark 2: best-of-``repeats`` records/s of the dry-run target and the no-op target."""
    target_runs, noop_runs = [], []
    for attempt in range(repeats):  # interleaved, so machine noise hits both alike
        noop_runs.append(run_noop(records, workdir, f"noop-{records}-{attempt}"))
        target_runs.append(run_target_dry(records, workdir, f"target-{records}-{attempt}"))
    best_target = min(target_runs, key=lambda run: run["wall_seconds"])
    best_noop = min(noop_runs, key=lambda run: run["wall_seconds"])
    ratio = best_target["records_per_second"] / best_noop["records_per_second"]
    return {
        "records": records,
        "repeats": repeats,
        "target_dry_run_validating": best_target,
        "noop_sdk_target_not_validating": best_noop,
        "ratio": round(ratio, 3),
        "goal": f"ratio >= {THROUGHPUT_GOAL_RATIO}",
        "met": ratio >= THROUGHPUT_GOAL_RATIO,
    }


def memory(sizes: list[int], workdir: Path) -> dict[str, Any]:
    """Benchmark 3: peak RSS of the dry-run target at each size."""
    runs = {size: run_target_dry(size, workdir, f"memory-{size}") for size in sorted(sizes)}
    largest = max(sizes)
    reference = MEMORY_REFERENCE_SIZE if MEMORY_REFERENCE_SIZE in runs else min(sizes)
    largest_mb = runs[largest]["peak_rss_with_worker_mb"]
    ratio = largest_mb / runs[reference]["peak_rss_with_worker_mb"]
    within = largest_mb <= MEMORY_GOAL_MB and (largest == reference or ratio <= MEMORY_GOAL_RATIO)
    return {
        # main process + mapping worker
        "peak_rss_mb": {str(size): run["peak_rss_with_worker_mb"] for size, run in runs.items()},
        "runs": {str(size): run for size, run in runs.items()},
        "largest": largest,
        "reference": reference,
        "ratio_largest_to_reference": round(ratio, 3),
        "goal": f"1M <= {MEMORY_GOAL_RATIO}x the 100k figure and <= {MEMORY_GOAL_MB:.0f} MB",
        "met": within,
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: print the two results as JSON."""
    parser = argparse.ArgumentParser(description="Local throughput and memory benchmarks")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--memory-sizes", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument(
        "--only", nargs="+", choices=("throughput", "memory"), default=["throughput", "memory"]
    )
    args = parser.parse_args(argv)
    bench_lib.compile_bytecode()
    with tempfile.TemporaryDirectory(prefix="omnisend-bench-") as tmp:
        workdir = Path(tmp)
        result = {}
        if "throughput" in args.only:
            result["throughput"] = throughput(args.records, workdir, args.repeats)
        if "memory" in args.only:
            result["memory"] = memory(args.memory_sizes, workdir)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
