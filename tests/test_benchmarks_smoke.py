"""Smoke tests of benchmarks/: every benchmark runs on hundreds of records and reports its figures.

These keep the scripts working; they assert the structure of the output, never timings.
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import end_to_end  # noqa: E402
import generate  # noqa: E402
import local  # noqa: E402
import run_all  # noqa: E402

pytestmark = pytest.mark.e2e

HAS_SANDBOX_AND_PIPELINE = all(
    importlib.util.find_spec(module) is not None
    for module in (
        "target_omnisend.sandbox.cli",
        "target_omnisend.client",
        "target_omnisend.pipeline",
    )
)
needs_sandbox = pytest.mark.skipif(
    not HAS_SANDBOX_AND_PIPELINE, reason="the target's client/pipeline have not landed yet"
)


def _messages(records: int) -> list[dict]:
    return [json.loads(line) for line in generate.iter_messages(records)]


def test_generator_is_deterministic_and_streams_two_segments() -> None:
    first = io.StringIO()
    generate.write_messages(500, first)
    second = io.StringIO()
    generate.write_messages(500, second)
    assert first.getvalue() == second.getvalue()

    messages = _messages(500)
    schemas = [m["stream"] for m in messages if m["type"] == "SCHEMA"]
    records = [m for m in messages if m["type"] == "RECORD"]
    assert schemas == list(generate.STREAMS)
    assert len(records) == 500
    assert {m["stream"] for m in records} == set(generate.STREAMS)
    assert messages[-1]["type"] == "STATE"
    assert all(isinstance(m["record"]["address"]["city"], str) for m in records)


def test_generator_marks_two_percent_invalid() -> None:
    records = [m["record"] for m in _messages(1000) if m["type"] == "RECORD"]
    invalid = [r for r in records if generate.is_invalid(r["id"])]
    assert len(invalid) == 20 == generate.expected(1000).invalid
    assert generate.expected(1000).valid == 980
    kinds = {
        "bad_email": any(r["email"] and " at " in r["email"] for r in invalid),
        "bad_phone": any(r["phone"] == "12" for r in invalid),
        "missing": any(r["email"] is None and r["phone"] is None for r in invalid),
    }
    assert all(kinds.values()), kinds


def test_generator_cli_writes_file(tmp_path: Path) -> None:
    out = tmp_path / "profiles.singer"
    subprocess.run(
        [sys.executable, str(BENCH_DIR / "generate.py"), "120", "-o", str(out)], check=True
    )
    lines = out.read_text(encoding="utf-8").splitlines()
    assert sum(1 for line in lines if '"type":"RECORD"' in line) == 120


def test_sync_store_load_reports_its_figures() -> None:
    completed = subprocess.run(
        [sys.executable, str(BENCH_DIR / "sync_store_load.py"), "--contacts", "2500"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert re.fullmatch(
        r"sync store: 2500 contacts in batches of 1000: wall [\d.]+ s, CPU [\d.]+ s, "
        r"files \d+ MB\n",
        completed.stdout,
    )


def test_throughput_and_memory_report_their_figures(tmp_path: Path) -> None:
    result = local.throughput(300, tmp_path, repeats=1)
    target = result["target_dry_run_validating"]
    noop = result["noop_sdk_target_not_validating"]
    assert target["records_read"] == 300
    assert target["rejected"] == generate.expected(300).invalid
    for figures in (target, noop):
        assert figures["records_per_second"] > 0
        assert figures["peak_rss_mb"] > 0
    assert result["ratio"] > 0
    assert isinstance(result["met"], bool)

    memory = local.memory([100, 300], tmp_path)
    assert set(memory["peak_rss_mb"]) == {"100", "300"}
    assert memory["ratio_largest_to_reference"] > 0
    assert isinstance(memory["met"], bool)


@needs_sandbox
@pytest.mark.parametrize("api_version", ["2026-03-15", "v5"])
def test_end_to_end_counts_requests_against_the_sandbox(tmp_path: Path, api_version: str) -> None:
    result = end_to_end.end_to_end(api_version, 300, 20.0, tmp_path)
    assert result["contacts_held_by_sandbox"] == generate.expected(300).valid
    assert result["requests"]["batch_submits"] >= result["batch_requests_required"] >= 1
    assert result["floor_seconds"] > 0
    assert result["wall_over_floor"] > 0
    assert 0 <= result["polls_share"] <= 1
    assert result["responses_429"] >= 0
    if api_version == "2026-03-15":
        assert result["tag_calls_required"] >= 1
        assert result["requests"]["tag_calls"] >= 1


@needs_sandbox
def test_rerun_reports_second_run_writes_or_says_it_is_absent(tmp_path: Path) -> None:
    result = end_to_end.rerun(200, 20.0, tmp_path)
    if result["available"]:
        assert result["first_run_contact_writes"] >= generate.expected(200).valid
        assert result["second_run_contact_writes"] >= 0
    else:
        assert "sync_state_path" in result["note"]
        assert result["met"] is None


def test_run_all_prints_a_table_and_writes_json(tmp_path: Path) -> None:
    output = tmp_path / "latest.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(BENCH_DIR / "run_all.py"),
            "--smoke",
            "--only",
            "throughput",
            "memory",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "2. local throughput" in completed.stdout
    assert "3. memory" in completed.stdout
    assert "Machine:" in completed.stdout
    report = json.loads(output.read_text(encoding="utf-8"))
    assert report["profile"] == "smoke"
    assert report["machine"]["cpu_cores"] >= 1
    assert report["machine"]["python"]
    assert set(report["results"]) == {"throughput", "memory"}
    assert run_all.table_rows(report["results"])


@needs_sandbox
def test_exits_on_reports_both_runs_and_applies_every_exit(tmp_path: Path) -> None:
    result = end_to_end.exits_on(400, 20.0, 20.0, tmp_path)
    assert result["leavers"] > 0
    assert result["contacts_tagged_wrongly_after_rerun"] == 0
    assert result["first_run"]["contacts_get_requests"] == 2  # one probe per segment
    assert result["rerun_5pc_left"]["contacts_get_requests"] == 0  # the store knows both
    assert result["rerun_5pc_left"]["segments"]["exits_untagged"] == result["leavers"]
    assert result["peak_rss_with_worker_mb"] > 0
    rows = run_all.table_rows({"exits_400": result})
    assert [row[0] for row in rows] == [
        "1. end to end, exits on (remove_tag, 400 rec)",
        "3. memory, exits on (400 rec, end to end)",
    ]
