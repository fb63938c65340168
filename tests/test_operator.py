"""Operator experience through the real CLI (issue 19): progress to the end, quiet logs, the
config file and the key's source, settings that cannot take effect, consent never guessed,
lock files removed, the v5 summary's tags, the dry-run demo's output, .gitignore."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from target_omnisend.client import WINDOW_MARGIN
from target_omnisend.mapping_checks import unmapped_consent_columns
from target_omnisend.pacer import SlidingWindowPacer
from target_omnisend.summary import Progress, format_progress
from target_omnisend.target import TargetOmnisend, summary_from_log_line
from tests.helpers import EXECUTABLE, run_cli

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "brand19-OPERATORSECRET0123456789"
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")


def singer(records: int, stream: str = "people", extra: dict[str, Any] | None = None) -> str:
    """A SCHEMA and `records` RECORDs with an email (and the `extra` columns), then a STATE."""
    extra = extra or {}
    properties = {"id": {"type": "integer"}, "email": {"type": "string"}}
    properties.update({name: {"type": ["string", "boolean", "null"]} for name in extra})
    lines = [
        {
            "type": "SCHEMA",
            "stream": stream,
            "schema": {"properties": properties},
            "key_properties": ["id"],
        }
    ]
    for index in range(records):
        record = {"id": index, "email": f"person{index}@example.com", **extra}
        lines.append({"type": "RECORD", "stream": stream, "record": record})
    lines.append({"type": "STATE", "value": {"done": records}})
    return "".join(json.dumps(line) + "\n" for line in lines)


def config_for(sandbox: Any, tmp_path: Path, **changes: Any) -> dict[str, Any]:
    config = {
        "api_key": API_KEY,
        "api_url": sandbox.api_url,
        "rejects_path": str(tmp_path / "rejects.jsonl"),
        "sync_state_path": str(tmp_path / "store" / "sync.sqlite"),
    }
    config.update(changes)
    return config


def stamps(lines: list[str]) -> list[datetime]:
    return [datetime.strptime(STAMP.match(line)[1], "%Y-%m-%d %H:%M:%S,%f") for line in lines]


# -- (a) progress until the run ends -------------------------------------------------------------


def test_progress_lines_come_every_10_s_until_the_run_ends(
    sandbox_factory: Any, tmp_path: Path
) -> None:
    """Batches take 22 s at Omnisend: the input ends at once, the progress lines go on."""
    sandbox = sandbox_factory(batch_processing_delay=22.0)
    result = run_cli(config_for(sandbox, tmp_path), singer(250), tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stderr.splitlines()
    end_of_input = next(i for i, line in enumerate(lines) if "completed processing" in line)
    progress = [line for line in lines if "| progress: " in line]
    after_input = [line for line in lines[end_of_input:] if "| progress: " in line]
    assert len(after_input) >= 2, result.stderr
    for line in after_input:
        assert "250 records read" in line
        assert "waiting for: batches processing at Omnisend" in line
        assert "ETA " in line
        assert "input still open" not in line
    first = next(line for line in lines if STAMP.match(line))
    summary = next(line for line in lines if "target-omnisend summary: " in line)
    times = stamps([first, *progress, summary])
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(times)]
    assert max(gaps) <= 10 + 3, gaps  # a line at least every 10 s (slack: a loaded machine)
    figures = summary_from_log_line(summary)
    assert figures is not None
    assert figures["contacts_upserted"] == 250


def test_progress_line_is_structured_for_meltano(sandbox_factory: Any, tmp_path: Path) -> None:
    """Under the SDK's structured logging (what Meltano configures) the line and its figures."""
    sandbox = sandbox_factory(batch_processing_delay=12.0)
    result = run_with_log_config(sandbox, tmp_path, json.dumps(_structured_logging()), 120)
    assert result.returncode == 0, result.stderr[-2000:]
    entries = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    progress = [e for e in entries if str(e.get("message", "")).startswith("progress: ")]
    assert progress, result.stderr[-2000:]
    figures = progress[-1]["extra"]["progress"]
    assert figures["records_read"] == 120
    assert figures["input_done"] is True
    assert "batches processing at Omnisend" in figures["waiting_for"]
    assert not [e for e in entries if e.get("message") == "METRIC"]


def run_with_log_config(
    sandbox: Any, tmp_path: Path, log_config: str, records: int
) -> subprocess.CompletedProcess[str]:
    """The CLI on `records` records with SINGER_SDK_LOG_CONFIG pointing at `log_config`."""
    path = tmp_path / "logging.yml"  # YAML: JSON is YAML too
    path.write_text(log_config, encoding="utf-8")
    env = {**os.environ, "SINGER_SDK_LOG_CONFIG": str(path)}
    return run_cli(config_for(sandbox, tmp_path), singer(records), tmp_path, env=env)


def _structured_logging() -> dict[str, Any]:
    """The logging config Meltano writes for a plugin with the structured-logging capability."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"singer_formatter": {"()": "singer_sdk.logging.StructuredFormatter"}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "singer_formatter",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["console"], "level": "INFO"},
    }


def test_progress_names_the_tags_rate_limit_and_its_eta(tmp_path: Path) -> None:
    """A full tags window and queued tag calls: the line says so, the ETA is the window's."""
    target = TargetOmnisend(
        config={
            "api_key": API_KEY,
            "api_url": "http://127.0.0.1:9/api",
            "sync_state_path": str(tmp_path / "sync.sqlite"),
            "rejects_path": str(tmp_path / "rejects.jsonl"),
        }
    )
    now = [1000.0]
    window = 60.0 * (1 + WINDOW_MARGIN)  # as client.shared_pacer makes it
    tags_pacer = SlidingWindowPacer(60, window, clock=lambda: now[0])
    for second in range(60):  # a full window: one call a second since t=950
        now[0] = 950.0 + second * (50.0 / 60)
        tags_pacer.try_acquire()
    now[0] = 1000.0
    pacer = SlidingWindowPacer(400, window, clock=lambda: now[0])

    class Client:
        def __init__(self) -> None:
            self.pacer, self.tags_pacer = pacer, tags_pacer

    target._client = Client()
    target.summary.add_read(1000)
    target.summary.add_accepted(500)
    target.summary.add_tagged(500, 2)
    target._tag_buffers = {("segment: people",): ["a@example.com"] * 300}
    target._input_done = True
    progress = target._progress_snapshot()
    assert progress is not None
    assert progress.waiting_for == ("the tags rate limit",)
    # 300 queued emails = 2 calls, and 500 in flight at the share tagged so far = 2 more
    assert progress.tag_calls_left == 4
    # the 4th call starts when the window's 4th start leaves it: 950 + 3 * 50/60 + window
    assert progress.eta_seconds == pytest.approx(952.5 + window - 1000, abs=0.01)
    line = format_progress(progress)
    assert "4 tag calls left" in line
    assert "waiting for: the tags rate limit" in line
    assert "ETA 14s at 400 requests/min, 60 tag calls/min" in line
    target.sync.close()


def test_progress_line_format_before_the_input_ended() -> None:
    progress = Progress(
        records_read=5000,
        confirmed=3000,
        rejected=12,
        in_flight=1988,
        batches_at_omnisend=19,
        batches_to_send=1,
        batches_waiting_for_tags=0,
        tag_calls_left=8,
        requests_per_minute=400,
        tag_calls_per_minute=60,
        waiting_for=("the contacts rate limit",),
        eta_seconds=3725,
        input_done=False,
        elapsed=12.0,
    )
    assert format_progress(progress) == (
        "progress: 5000 records read, 3000 confirmed, 12 rejected, 1988 in flight "
        "(19 batches at Omnisend, 1 batch requests to send); 8 tag calls left; "
        "waiting for: the contacts rate limit; ETA 1h02m for the records read so far at "
        "400 requests/min, 60 tag calls/min (input still open)"
    )


# -- (b) quiet by default ------------------------------------------------------------------------


def test_quiet_by_default_metrics_on_request(sandbox: Any, tmp_path: Path) -> None:
    config = config_for(sandbox, tmp_path, batch_size_rows=20)
    quiet = run_cli(config, singer(100), tmp_path)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "METRIC" not in quiet.stderr
    assert "is full" not in quiet.stderr
    assert "Draining" not in quiet.stderr
    assert "target-omnisend summary: " in quiet.stderr
    assert "Stream 'people' maps: " in quiet.stderr

    loud = run_cli({**config, "metrics_log_level": "INFO"}, singer(100, "more"), tmp_path)
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert '"metric":"record_count"' in loud.stderr


def test_metrics_through_the_sdk_logging_config(sandbox: Any, tmp_path: Path) -> None:
    """The SDK's documented way: a SINGER_SDK_LOG_CONFIG file setting singer_sdk.metrics."""
    log_config = (
        "version: 1\ndisable_existing_loggers: false\n"
        "loggers:\n  singer_sdk.metrics:\n    level: INFO\n"
    )
    result = run_with_log_config(sandbox, tmp_path, log_config, 30)
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"metric":"record_count"' in result.stderr


def test_sdk_drain_line_is_debug(sandbox: Any, tmp_path: Path) -> None:
    """Names the SDK's line `_SdkDrainLines` demotes: at DEBUG it is still there, word for word
    (fails when an SDK release changes the words, and the filter no longer matches)."""
    config = config_for(sandbox, tmp_path, batch_size_rows=20, parallel_mapping=False)
    result = run_cli(
        config,
        singer(60),
        tmp_path,
        timeout=60,
        env={**os.environ, "TARGET_OMNISEND_LOGLEVEL": "DEBUG"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(
        r"\| DEBUG +\| target-omnisend +\| Target sink for 'people' is full\. "
        r"Current size is '\d+'\. Draining\.\.\.",
        result.stderr,
    )


# -- (c) v5 summary says what happened to tags ---------------------------------------------------


def test_v5_summary_says_tags_travelled_in_payloads(sandbox_factory: Any, tmp_path: Path) -> None:
    sandbox = sandbox_factory(supported_versions=["v5"], batch_processing_delay=0.05)
    config = config_for(
        sandbox, tmp_path, api_version="v5", api_url=sandbox.v5_url, tags=["source: test"]
    )
    result = run_cli(config, singer(40), tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = next(
        summary_from_log_line(line) for line in result.stderr.splitlines() if "summary: " in line
    )
    tagged = [c for c in sandbox.dump()["contacts"] if "source: test" in (c.get("tags") or ())]
    assert len(tagged) == 40
    assert summary["tags"] == {"sent_in": "contact payloads (v5)", "contacts": 40}
    assert "carried in the payload of 40 confirmed contacts (v5)" in result.stderr
    assert "tagged emails" not in result.stderr


def test_2026_summary_counts_tag_calls(sandbox: Any, tmp_path: Path) -> None:
    result = run_cli(config_for(sandbox, tmp_path, tags=["source: test"]), singer(30), tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    calls = sandbox.dump()["requests"].get("POST /api/contacts/tags", {})
    assert "30 emails tagged in 1 tag calls" in result.stderr, calls


# -- (d) the dry-run demo's output ---------------------------------------------------------------


def test_demo_output_of_a_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    """No empty status line, no empty sample table; where the payloads went."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import demo
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    demo.print_sandbox({"contacts": [], "requests_total": 3, "rate_limited": 0})
    demo.print_outputs(
        [
            {"dry_run_file": ".target-omnisend/dry-run-1.jsonl", "rejected": 0},
            {"dry_run_file": "/abs/dry-run-2.jsonl", "rejected": 2},
        ]
    )
    out = capsys.readouterr().out
    assert "the sandbox holds 0 contacts" in out
    assert "email status" not in out
    assert "sample contacts" not in out
    assert "nothing was sent; the would-be payloads are in" in out
    assert str(ROOT / ".target-omnisend" / "dry-run-1.jsonl") in out
    assert "/abs/dry-run-2.jsonl" in out


def test_dry_run_summary_names_its_file(tmp_path: Path) -> None:
    path = tmp_path / "payloads.jsonl"
    config = {
        "api_key": API_KEY,
        "api_url": "http://127.0.0.1:9/api",
        "dry_run": True,
        "dry_run_path": str(path),
        "rejects_path": str(tmp_path / "rejects.jsonl"),
        "sync_state_path": str(tmp_path / "sync.sqlite"),
    }
    result = run_cli(config, singer(5), tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = next(
        summary_from_log_line(line) for line in result.stderr.splitlines() if "summary: " in line
    )
    assert summary["dry_run_file"] == str(path)
    assert len(path.read_text(encoding="utf-8").splitlines()) == 5
    assert re.search(rf"\| dry-run payloads file +{re.escape(str(path))}\n", result.stderr)


# -- (e) the config file and the key's source ----------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("{not json", "is not valid JSON (line 1)"),
        ('["a list"]', "holds JSON but not an object of settings"),
        (b"\xff\xfe{}", "is not UTF-8 text"),
    ],
)
def test_a_bad_config_file_is_one_line(
    tmp_path: Path, content: str | bytes | None, message: str
) -> None:
    path = tmp_path / "config.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    result = subprocess.run(
        [EXECUTABLE, "--config", str(path)],
        input="",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert f"Config file {str(path)!r} {message}" in errors[0]


def test_the_key_comes_from_the_environment_when_the_file_lacks_it(
    sandbox: Any, tmp_path: Path
) -> None:
    config = config_for(sandbox, tmp_path)
    del config["api_key"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TARGET_OMNISEND_")}
    result = run_cli(config, singer(3), tmp_path, env={**env, "TARGET_OMNISEND_API_KEY": API_KEY})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Setting api_key: taken from the environment (TARGET_OMNISEND_API_KEY)" in result.stderr
    assert API_KEY not in result.stderr
    assert API_KEY.split("-", 1)[1] not in result.stderr
    assert len(sandbox.dump()["contacts"]) == 3

    # A key in the file wins, and the log says so; without either, the SDK's clear error.
    with_key = run_cli(config_for(sandbox, tmp_path), singer(1), tmp_path)
    assert "Setting api_key: taken from the config file " in with_key.stderr
    neither = run_cli(config, "", tmp_path, env=env)
    assert neither.returncode != 0
    assert "'api_key' is a required property" in neither.stderr


# -- (f) settings that cannot take effect; consent never guessed ----------------------------------


def test_status_values_without_a_status_field_is_a_config_error(tmp_path: Path) -> None:
    config = {
        "api_key": API_KEY,
        "api_url": "http://127.0.0.1:9/api",
        "field_mapping": {"email": "email"},
        "status_values": {"Y": "subscribed"},
        "sync_state_path": str(tmp_path / "sync.sqlite"),
    }
    result = run_cli(config, singer(2), tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "status_values is set, but field_mapping maps neither emailStatus nor smsStatus" in (
        result.stderr
    )


def test_status_values_with_conventional_names_names_the_consent_column(tmp_path: Path) -> None:
    config = {
        "api_key": API_KEY,
        "api_url": "http://127.0.0.1:9/api",
        "status_values": {"Y": "subscribed"},
        "sync_state_path": str(tmp_path / "sync.sqlite"),
        "rejects_path": str(tmp_path / "rejects.jsonl"),
    }
    result = run_cli(config, singer(2, extra={"email_consent": "Y"}), tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "status_values is set, but stream 'people' maps neither" in result.stderr
    assert (
        "If 'email_consent' holds the emailStatus, use "
        '{"field_mapping": {"email": "email", "emailStatus": "email_consent"}}'
    ) in result.stderr


def test_an_unmapped_consent_column_is_warned_never_guessed(sandbox: Any, tmp_path: Path) -> None:
    config = config_for(sandbox, tmp_path, field_mapping={"email": "email"})
    records = singer(3, extra={"accepts_marketing": True, "sms_opt_in": "yes"})
    result = run_cli(config, records, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        "Stream 'people' has a column 'accepts_marketing' that looks like consent but is not "
        "mapped: no emailStatus is sent from it"
    ) in result.stderr
    assert '{"field_mapping": {"email": "email", "emailStatus": "accepts_marketing"}}' in (
        result.stderr
    )
    assert '"smsStatus": "sms_opt_in"' in result.stderr
    for contact in sandbox.dump()["contacts"]:
        email = next(i for i in contact["identifiers"] if i["type"] == "email")
        channel = (email.get("channels") or {}).get("email") or {}
        assert channel.get("status") != "subscribed"  # accepts_marketing=true was not taken


# -- (h) lock files ------------------------------------------------------------------------------

_HOLDER = textwrap.dedent(
    """
    import sys
    from target_omnisend.sync_store import SyncStore, brand_id
    store = SyncStore(sys.argv[1], brand_id(sys.argv[2], sys.argv[3]))
    store.acquire_run_lock()
    print(store.lock_path, flush=True)
    sys.stdin.read()
    """
)


def test_lock_files_are_removed_and_a_dead_runs_lock_does_not_block(
    sandbox: Any, tmp_path: Path
) -> None:
    config = config_for(sandbox, tmp_path)
    store_dir = tmp_path / "store"
    first = run_cli(config, singer(3), tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert list(store_dir.glob("*.lock")) == []

    # A run killed with SIGKILL leaves its lock file; the next run is not blocked by it.
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, config["sync_state_path"], sandbox.api_url, API_KEY],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    lock_path = Path(holder.stdout.readline().strip())
    blocked = run_cli(config, singer(3), tmp_path)
    assert blocked.returncode == 1
    assert "Another target-omnisend run for this brand" in blocked.stderr
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock_path.exists()
    second = run_cli(config, singer(3), tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert list(store_dir.glob("*.lock")) == []

    # A run that fails removes its lock file too.
    failing = run_cli({**config, "api_url": "http://127.0.0.1:9/api"}, singer(3), tmp_path)
    assert failing.returncode != 0
    assert list(store_dir.glob("*.lock")) == []


# -- (h) .gitignore ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["config.json", "tap.json", "state.json", ".target-omnisend/x"])
def test_local_files_with_secrets_are_ignored_by_git(name: str) -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "-q", name], capture_output=True, check=False
    )
    assert result.returncode == 0, f"{name} is not in .gitignore"


def test_logging_level_names_are_what_the_setting_allows() -> None:
    allowed = TargetOmnisend.config_jsonschema["properties"]["metrics_log_level"]["enum"]
    assert all(isinstance(logging.getLevelName(name), int) for name in allowed)


@pytest.mark.parametrize(
    ("column", "field"),
    [
        ("email_consent", "emailStatus"),
        ("accepts_marketing", "emailStatus"),
        ("sms_opt_in", "smsStatus"),
        ("consent_date", "emailStatusChangedAt"),
        ("email_opt_in_at", "emailStatusChangedAt"),
        ("consent_ip", "consentIp"),
        ("consent_user_agent", "consentUserAgent"),
    ],
)
def test_the_entry_suggested_for_a_consent_column(column: str, field: str) -> None:
    schema = {"properties": {"email": {}, column: {}}}
    (warning,) = unmapped_consent_columns(schema, {"email": "email"}, {}, "s")
    assert f'"{field}": "{column}"' in warning
    assert unmapped_consent_columns(schema, {"email": "email", field: column}, {}, "s") == []
