"""Security: the key in no output, personal data masked in logs, private files, no plain http.

The fault and bad-input scenarios already check every output of every run; these tests cover the
outputs only some runs produce (dry-run files, default paths, pre-existing files, debug-level and
error logs).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.harness import (
    API_KEY,
    SECRET,
    TargetRun,
    account,
    assert_clean_exit,
    base_config,
    check_security,
    email_of,
    held_emails,
    make_dataset,
    output_files,
    phone_of,
)

pytestmark = pytest.mark.reliability

RECORDS = 120
INVALID_EVERY = 10
PERSONAL = [email_of(i) for i in range(RECORDS)] + [phone_of(i) for i in range(RECORDS)]


def mode_of(path: Path) -> int:
    """The permission bits of a path."""
    return stat.S_IMODE(os.stat(path).st_mode)


def test_dry_run_file_is_private_and_holds_no_key(sandbox: Any, tmp_path: Path) -> None:
    dataset = make_dataset(RECORDS, INVALID_EVERY)
    work = tmp_path / "run"
    config = base_config(sandbox, work, dry_run=True, dry_run_path=str(work / "dry" / "dry.jsonl"))
    outcome = TargetRun(tmp_path, config).run(dataset.text(state_every=50))
    assert_clean_exit(outcome)
    assert outcome.stdout == ""  # a dry run emits no STATE
    assert sandbox.dump()["contacts"] == []
    dry = work / "dry" / "dry.jsonl"
    assert mode_of(dry) == 0o600
    lines = dry.read_text(encoding="utf-8").splitlines()
    assert len(lines) == RECORDS - len(dataset.invalid)
    check_security(outcome, emails=PERSONAL[:RECORDS], phones=PERSONAL[RECORDS:])


def test_default_paths_are_private(sandbox: Any, tmp_path: Path) -> None:
    dataset = make_dataset(RECORDS, INVALID_EVERY)
    work = tmp_path / "run"
    config = base_config(sandbox, work)
    del config["rejects_path"]  # default: .target-omnisend/rejects-<UTC timestamp>.jsonl
    outcome = TargetRun(tmp_path, config).run(dataset.text(state_every=50))
    assert_clean_exit(outcome)
    folder = work / ".target-omnisend"
    assert mode_of(folder) & 0o077 == 0
    rejects = sorted(folder.glob("rejects-*.jsonl"))
    assert len(rejects) == 1
    assert mode_of(rejects[0]) == 0o600
    check_security(outcome, emails=PERSONAL[:RECORDS], phones=PERSONAL[RECORDS:])
    rows = [
        json.loads(line)["record"]
        for line in rejects[0].read_text(encoding="utf-8").splitlines()
        if json.loads(line)["type"] == "RECORD"
    ]
    result = account("security: default paths", dataset, sandbox.dump(), rows)
    assert result.lost == 0


def test_an_existing_world_readable_rejects_file_becomes_private(
    sandbox: Any, tmp_path: Path
) -> None:
    dataset = make_dataset(RECORDS, INVALID_EVERY)
    work = tmp_path / "run"
    work.mkdir()
    rejects = work / "rejects.jsonl"
    rejects.write_text("", encoding="utf-8")
    rejects.chmod(0o644)
    outcome = TargetRun(tmp_path, base_config(sandbox, work)).run(dataset.text())
    assert_clean_exit(outcome)
    assert mode_of(rejects) == 0o600
    assert len(outcome.reject_rows()) == len(dataset.invalid)


def test_debug_logging_masks_personal_data_and_hides_the_key(sandbox: Any, tmp_path: Path) -> None:
    dataset = make_dataset(RECORDS, INVALID_EVERY)
    work = tmp_path / "run"
    sandbox.configure(item_errors={email_of(3): [400, "Invalid contact data"]})
    run = TargetRun(tmp_path, base_config(sandbox, work), env={"TARGET_OMNISEND_LOGLEVEL": "DEBUG"})
    outcome = run.run(dataset.text(state_every=50))
    assert_clean_exit(outcome)
    assert "| DEBUG" in outcome.stderr
    assert email_of(0) in held_emails(sandbox)
    assert "Omnisend rejected p***@e***.com" in outcome.stderr  # the per-item error, masked
    check_security(outcome, emails=PERSONAL[:RECORDS], phones=PERSONAL[RECORDS:])


def test_fatal_errors_never_show_the_key(sandbox: Any, tmp_path: Path) -> None:
    sandbox.configure(api_keys=["brandx-SOMEOTHERKEY0000"])
    dataset = make_dataset(10)
    outcome = TargetRun(tmp_path, base_config(sandbox, tmp_path / "run")).run(dataset.text())
    assert outcome.returncode != 0
    assert "'api_key'" in outcome.stderr
    assert API_KEY not in outcome.stderr
    assert SECRET not in outcome.stderr
    check_security(outcome, emails=PERSONAL[:10])


def test_no_output_file_other_than_the_expected_ones(sandbox: Any, tmp_path: Path) -> None:
    dataset = make_dataset(RECORDS, INVALID_EVERY)
    work = tmp_path / "run"
    outcome = TargetRun(tmp_path, base_config(sandbox, work)).run(dataset.text())
    assert_clean_exit(outcome)
    for path in output_files(work):
        assert mode_of(path) & 0o077 == 0, f"{path.relative_to(work)} is not owner-only"
        assert SECRET.encode() not in path.read_bytes()
