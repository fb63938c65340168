"""Profile a dry run of `target-omnisend` with cProfile and print where its time goes.

cProfile's per-call overhead inflates small Python functions, so read the shares as a ranking of
hot spots, not as exact costs.

Usage::

    python benchmarks/profile_target.py --records 100000 --top 30
"""

from __future__ import annotations

import argparse
import pstats
import subprocess
import sys
import tempfile
from pathlib import Path

import bench_lib
import local

RUNNER = "from target_omnisend.target import TargetOmnisend\nTargetOmnisend.cli()\n"


def profile(records: int, workdir: Path) -> Path:
    """Run the dry-run target under cProfile; returns the stats file."""
    runner = workdir / "run_target.py"
    runner.write_text(RUNNER, encoding="utf-8")
    stats = workdir / "target.prof"
    config = local.dry_run_config(workdir, "profile")
    with local.input_file(records, workdir).open("rb") as stdin:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cProfile",
                "-o",
                str(stats),
                str(runner),
                "--config",
                str(config),
            ],
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )
    return stats


def hot_spots(stats_path: Path, top: int) -> list[tuple[float, float, str]]:
    """(cumulative share, own share, file:line:function), highest cumulative first."""
    stats = pstats.Stats(str(stats_path))
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (filename, line, function), (_, _, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        name = filename.split("site-packages/")[-1].replace(str(bench_lib.ROOT) + "/", "")
        rows.append((cumulative / total, own / total, f"{name}:{line}:{function}"))
    interesting = [row for row in rows if "target_omnisend" in row[2] or "singer_sdk" in row[2]]
    return sorted(interesting, reverse=True)[:top]


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="omnisend-profile-") as tmp:
        rows = hot_spots(profile(args.records, Path(tmp)), args.top)
    print(f"{'cumulative':>10} {'own':>6}  function")
    for cumulative, own, name in rows:
        print(f"{cumulative:10.1%} {own:6.1%}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
