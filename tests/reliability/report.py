"""Print the reliability suite's accounting table: `python -m tests.reliability.report [FILE]`.

Each scenario's row is counted from the sandbox's dump and the rejects file (never from the
target's summary) and appended to the results file by the tests.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.reliability.harness import results_path

COLUMNS = ("scenario", "records_in", "accepted", "rejected", "merged", "lost", "stale", "seen")


def seen(row: dict[str, Any]) -> str:
    """What the sandbox saw of the fault: requests, 429s, injected faults, stopped batches."""
    parts = []
    if "requests" in row:
        parts.append(f"{row['requests']} req")
    if row.get("rate_limited"):
        parts.append(f"{row['rate_limited']}x429")
    parts += [f"{count} {name}" for name, count in sorted((row.get("faults") or {}).items())]
    if row.get("stopped_batches"):
        parts.append(f"{row['stopped_batches']} stopped")
    if "states_checked" in row:
        parts.append(f"{row['states_checked']} STATE checked")
    return ", ".join(parts)


def load_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of the latest session (one per scenario), in scenario order."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    if not rows:
        return []
    session = max(rows, key=lambda row: row.get("at", 0)).get("session")
    latest = {str(row["scenario"]): row for row in rows if row.get("session") == session}
    return [latest[name] for name in sorted(latest)]


def render_table(path: Path) -> str:
    """A fixed-width table of the rows (empty when there are none)."""
    rows = [{**row, "seen": seen(row)} for row in load_rows(path)]
    if not rows:
        return ""
    widths = {c: max(len(c), *(len(str(row.get(c, ""))) for row in rows)) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS)]
    lines.append("  ".join("-" * widths[c] for c in COLUMNS))
    for row in rows:
        lines.append("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in COLUMNS))
    total_lost = sum(int(row.get("lost", 0)) for row in rows)
    lines.append(f"{len(rows)} scenarios, {total_lost} records lost in total")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the table for FILE (default: the suite's results file)."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else results_path()
    table = render_table(path)
    print(table or f"no results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
