"""Benchmarks 1 and 4: end to end against the sandbox, and a re-run of unchanged data.

1. End-to-end vs floor: generated profiles piped into `target-omnisend` (child process) against
   `omnisend-sandbox` (child process) with Omnisend's limits (400 requests/min per brand, 60/min
   on the tags endpoint), a batch processing delay of 2-5 s (sandbox time) and a time scale S that
   makes every sandbox duration S times shorter; the target's `max_requests_per_minute` is 400 x S
   alike. The floor is the slowest of (requests each limit requires / that limit), in wall time:
   contact batches = ceil(valid / items per batch) at 400 x S per minute, and on 2026 tag calls
   (one per 250 emails of a tag set) at 60 x S per minute. Reported: wall / floor, polls as a share
   of all requests and 429s, both counted by the sandbox. Goal: <= 1.10x, polls <= 5%, no 429s.
4. Re-run: the same input twice against one sandbox with a sync store (`sync_state_path`); the
   contact writes (batch items submitted) of the second run. Goal: 0.

Usage::

    python benchmarks/end_to_end.py --api-version 2026-03-15 --records 20000 --time-scale 10
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import bench_lib
import generate
import local

from target_omnisend.sandbox.process import SandboxProcess

CONTACTS_PER_MINUTE = 400
TAG_CALLS_PER_MINUTE = 60
EMAILS_PER_TAG_CALL = 250
BATCH_LIMIT = {"2026-03-15": 100, "v5": 1000}
# Sandbox seconds a batch spends pending, then in progress: 4 s from submit to finished.
PROCESSING_DELAY_SECONDS = (2.0, 2.0)
FLOOR_GOAL = 1.10
POLL_SHARE_GOAL = 0.05


def sandbox_settings(time_scale: float) -> dict[str, Any]:
    """Sandbox settings of a benchmark run (sent to ``POST /_sandbox/config``)."""
    pending, in_progress = PROCESSING_DELAY_SECONDS
    return {
        "time_scale": time_scale,
        "rate_limit_per_minute": CONTACTS_PER_MINUTE,
        "tags_rate_limit_per_minute": TAG_CALLS_PER_MINUTE,
        "batch_processing_delay": pending,
        "batch_in_progress_seconds": in_progress,
    }


def start_sandbox(time_scale: float, workdir: Path) -> SandboxProcess:
    """A configured sandbox child process (the caller stops it)."""
    sandbox = SandboxProcess(log_path=workdir / "sandbox.log").start()
    try:
        sandbox.configure(**sandbox_settings(time_scale))
    except Exception:
        sandbox.stop()
        raise
    return sandbox


def target_config(
    workdir: Path,
    name: str,
    api_version: str,
    api_base: str,
    time_scale: float,
    sync_state_path: Path | None = None,
) -> Path:
    """A target-omnisend config against the sandbox, paced at 400 x ``time_scale`` per minute."""
    config = generate.target_mapping_config()
    config.update(
        api_key=bench_lib.FAKE_API_KEY,
        api_version=api_version,
        api_url=api_base,
        max_requests_per_minute=int(CONTACTS_PER_MINUTE * time_scale),
        rejects_path=str(workdir / f"{name}.rejects.jsonl"),
    )
    if api_version == "v5":
        config.pop("tags")  # no tags endpoint on v5: static tags travel inline; keep it simple
    if sync_state_path is not None:
        config["sync_state_path"] = str(sync_state_path)
    path = workdir / f"{name}.config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


# --- reading the sandbox dump -------------------------------------------------------------------


def request_counts(dump: dict[str, Any]) -> dict[str, int]:
    """Requests the sandbox answered, by kind: batches submitted, polls, tag calls, 429s, total."""
    counts: Counter[str] = Counter()
    for key, number in _iter_request_entries(dump):
        method, _, path = key.partition(" ")
        counts["total"] += number
        if method == "POST" and path.rstrip("/").endswith("/batches"):
            counts["batch_submits"] += number
        elif method == "GET" and "/batches" in path:
            counts["polls"] += number
        elif "/contacts/tags" in path:
            counts["tag_calls"] += number
    counts["responses_429"] = _count_429(dump)
    for route, codes in (dump.get("requests") or {}).items():
        if int(codes.get("429") or codes.get(429) or 0):
            counts[f"429 on {route}"] = int(codes.get("429") or codes.get(429))
    return dict(counts)


def _iter_request_entries(dump: dict[str, Any]) -> list[tuple[str, int]]:
    """("METHOD /path", count) pairs from the dump's ``requests`` (route → status → count)."""
    routes = dump.get("requests") or {}
    return [(str(route), sum(int(n) for n in codes.values())) for route, codes in routes.items()]


def _count_429(dump: dict[str, Any]) -> int:
    return int(dump.get("rate_limited") or 0)


def batch_items_submitted(dump: dict[str, Any]) -> int:
    """Contact writes: items of every batch the sandbox received."""
    batches = dump.get("batches") or []
    if isinstance(batches, dict):
        batches = list(batches.values())
    return sum(int(batch.get("totalCount", batch.get("total", 0))) for batch in batches)


def contacts_in_dump(dump: dict[str, Any]) -> list[dict[str, Any]]:
    """The contacts the sandbox holds."""
    contacts = dump.get("contacts") or []
    return list(contacts.values()) if isinstance(contacts, dict) else list(contacts)


def tag_calls_required(dump: dict[str, Any]) -> int:
    """Tag calls a first load needs: per distinct tag set held, ceil(emails / 250)."""
    sets: Counter[tuple[str, ...]] = Counter()
    for contact in contacts_in_dump(dump):
        tags = tuple(sorted(contact.get("tags") or ()))
        if tags:
            sets[tags] += 1
    return sum(math.ceil(count / EMAILS_PER_TAG_CALL) for count in sets.values())


# --- the benchmarks -----------------------------------------------------------------------------


def floor_seconds(
    api_version: str, valid: int, tag_calls: int, time_scale: float
) -> dict[str, float]:
    """Wall seconds each limit requires at the scaled rates, and the floor (the slowest)."""
    batches = math.ceil(valid / BATCH_LIMIT[api_version])
    contacts_floor = batches / (CONTACTS_PER_MINUTE * time_scale) * 60.0
    tags_floor = tag_calls / (TAG_CALLS_PER_MINUTE * time_scale) * 60.0
    return {
        "batch_requests_required": batches,
        "tag_calls_required": tag_calls,
        "contacts_floor_seconds": round(contacts_floor, 3),
        "tags_floor_seconds": round(tags_floor, 3),
        "floor_seconds": round(max(contacts_floor, tags_floor), 3),
    }


def run_target(
    config: Path, input_path: Path, workdir: Path, name: str
) -> tuple[bench_lib.ProcessRun, dict[str, Any]]:
    """Run the target once; returns the timed run and its summary."""
    run = bench_lib.run_timed(
        [*bench_lib.target_command(), "--config", str(config)], input_path, workdir, name
    )
    if run.returncode != 0:
        tail = run.stderr_tail()
        last = tail.splitlines()[-1] if tail else ""
        raise RuntimeError(f"target-omnisend exited {run.returncode}: {last}\n{tail}")
    return run, bench_lib.read_summary(run.stderr_path) or {}


def end_to_end(api_version: str, records: int, time_scale: float, workdir: Path) -> dict[str, Any]:
    """Benchmark 1 for one API generation."""
    workdir = workdir / f"e2e-{api_version}-{records}"
    workdir.mkdir(parents=True, exist_ok=True)
    input_path = local.input_file(records, workdir.parent)
    with start_sandbox(time_scale, workdir) as sandbox:
        api_base = sandbox.v5_url if api_version == "v5" else sandbox.api_url
        config = target_config(workdir, "target", api_version, api_base, time_scale)
        run, summary = run_target(config, input_path, workdir, "target")
        dump = sandbox.settled_dump()
    expected = generate.expected(records)
    counts = request_counts(dump)
    held = len(contacts_in_dump(dump))
    tag_calls = tag_calls_required(dump) if api_version != "v5" else 0
    floor = floor_seconds(api_version, expected.valid, tag_calls, time_scale)
    total = counts.get("total", 0)
    polls_share = counts.get("polls", 0) / total if total else 0.0
    ratio = run.wall_seconds / floor["floor_seconds"] if floor["floor_seconds"] else math.inf
    return {
        "api_version": api_version,
        "records": records,
        "valid_records": expected.valid,
        "time_scale": time_scale,
        "wall_seconds": round(run.wall_seconds, 3),
        **floor,
        "wall_over_floor": round(ratio, 3),
        "requests": counts,
        "polls_share": round(polls_share, 4),
        "responses_429": counts.get("responses_429", 0),
        "contacts_held_by_sandbox": held,
        "target_summary": summary,
        "peak_rss_mb": round(run.peak_rss_mb, 1),
        "goal": f"wall <= {FLOOR_GOAL}x floor, polls <= {POLL_SHARE_GOAL:.0%}, zero 429s",
        "met": ratio <= FLOOR_GOAL
        and polls_share <= POLL_SHARE_GOAL
        and counts.get("responses_429", 0) == 0
        and held == expected.valid,
    }


def target_has_setting(name: str) -> bool:
    """Whether `target-omnisend --about` lists the setting ``name``."""
    result = subprocess.run(
        [*bench_lib.target_command(), "--about", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        return False
    try:
        about = json.loads(result.stdout)
    except json.JSONDecodeError:
        return False
    return name in (about.get("settings", {}).get("properties") or {})


def rerun(records: int, time_scale: float, workdir: Path) -> dict[str, Any]:
    """Benchmark 4: contact writes made by a second run of unchanged data (2026 API)."""
    if not target_has_setting("sync_state_path"):
        return {
            "records": records,
            "available": False,
            "note": "target-omnisend has no sync_state_path setting yet (issue 6): not measured",
            "goal": "0 contact writes",
            "met": None,
        }
    workdir = workdir / f"rerun-{records}"
    workdir.mkdir(parents=True, exist_ok=True)
    input_path = local.input_file(records, workdir.parent)
    store = workdir / "sync.sqlite"
    with start_sandbox(time_scale, workdir) as sandbox:
        config = target_config(
            workdir, "rerun", "2026-03-15", sandbox.api_url, time_scale, sync_state_path=store
        )
        first_run, _ = run_target(config, input_path, workdir, "first")
        after_first = sandbox.settled_dump()
        second_run, second_summary = run_target(config, input_path, workdir, "second")
        after_second = sandbox.settled_dump()
    first_items = batch_items_submitted(after_first)
    second_items = batch_items_submitted(after_second) - first_items
    first_counts = request_counts(after_first)
    second_counts = {
        key: value - first_counts.get(key, 0) for key, value in request_counts(after_second).items()
    }
    return {
        "records": records,
        "available": True,
        "first_run_contact_writes": first_items,
        "second_run_contact_writes": second_items,
        "second_run_requests": second_counts,
        "first_run_wall_seconds": round(first_run.wall_seconds, 3),
        "second_run_wall_seconds": round(second_run.wall_seconds, 3),
        "second_run_summary": second_summary,
        "goal": "0 contact writes",
        "met": second_items == 0,
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: print the results as JSON."""
    parser = argparse.ArgumentParser(description="End-to-end and re-run benchmarks")
    parser.add_argument("--api-version", choices=sorted(BATCH_LIMIT), default="2026-03-15")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--time-scale", type=float, default=10.0)
    parser.add_argument("--rerun", action="store_true", help="run benchmark 4 instead")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="omnisend-bench-") as tmp:
        if args.rerun:
            result = rerun(args.records, args.time_scale, Path(tmp))
        else:
            result = end_to_end(args.api_version, args.records, args.time_scale, Path(tmp))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
