"""End to end through the real Meltano CLI, with real taps installed from PyPI by Meltano.

A session fixture copies ``meltano.yml`` and ``data/`` into a temporary project (the loader's
``pip_url`` pointing at this repository) and runs ``meltano install`` once. Each test starts its
own sandbox, points the ``dev`` environment at it through ``TARGET_OMNISEND_API_URL`` and checks
what the sandbox holds, not what the target says.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from target_omnisend.sandbox.server import SandboxServer

pytestmark = [
    pytest.mark.meltano,
    pytest.mark.e2e,
    pytest.mark.skipif(
        importlib.util.find_spec("target_omnisend.pipeline") is None,
        reason="the target's batch pipeline (target_omnisend/pipeline.py) has not landed yet",
    ),
]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MELTANO = str(BIN / "meltano")
JOB = "export-segments"
SCHEDULE = "daily-export-segments"
VIP_TAG = "segment: vip_customers"
LAPSED_TAG = "segment: lapsed_customers"
SOURCE_TAG = "source: warehouse"
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")
RUN_TIMEOUT = 240


@pytest.fixture(scope="session")
def meltano_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's Meltano setup with every plugin installed (once per session)."""
    project = tmp_path_factory.mktemp("meltano-project")
    shutil.copytree(ROOT / "data", project / "data")
    text = (ROOT / "meltano.yml").read_text(encoding="utf-8")
    assert "pip_url: -e .\n" in text
    (project / "meltano.yml").write_text(
        text.replace("pip_url: -e .\n", f"pip_url: -e {ROOT}\n"), encoding="utf-8"
    )
    result = meltano(
        project, base_env(), "install", "tap-spreadsheets", "tap-jsonl", "target-omnisend"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return project


def base_env() -> dict[str, str]:
    """The process environment without any Omnisend or Meltano run settings of the caller."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TARGET_OMNISEND_", "MELTANO_"))
    }
    env["MELTANO_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    return env


@pytest.fixture
def run_env(sandbox: SandboxServer, tmp_path: Path) -> dict[str, str]:
    """Environment pointing the dev environment at this test's sandbox, with its own store."""
    return sandbox_env(sandbox, tmp_path)


def sandbox_env(sandbox: SandboxServer, tmp_path: Path) -> dict[str, str]:
    """Environment pointing the dev environment at `sandbox`, with a store in `tmp_path`."""
    env = base_env()
    env.update(
        TARGET_OMNISEND_API_URL=sandbox.api_url,
        TARGET_OMNISEND_API_KEY="test-key-meltano",
        TARGET_OMNISEND_SYNC_STATE_PATH=str(tmp_path / "sync.sqlite"),
        TARGET_OMNISEND_REJECTS_PATH=str(tmp_path / "rejects.jsonl"),
    )
    return env


def meltano(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real `meltano` CLI in `project`."""
    return subprocess.run(
        [MELTANO, *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def contacts_by_email(dump: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Sandbox contacts keyed by their email identifier."""
    contacts = {}
    for contact in dump["contacts"]:
        for identifier in contact["identifiers"]:
            if identifier["type"] == "email":
                contacts[identifier["id"]] = contact
    return contacts


def read_segment(name: str) -> list[dict[str, Any]]:
    """Rows of a bundled segment export (CSV or JSONL), blanks as None."""
    path = next((ROOT / "data" / "segments").glob(f"{name}.*"))
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            rows: list[dict[str, Any]] = list(csv.DictReader(handle))
    else:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [{key: (value if value != "" else None) for key, value in row.items()} for row in rows]


def is_clean(row: dict[str, Any]) -> bool:
    """Whether a sample row should become a contact (the generator's dirty rows are not)."""
    return (
        bool(row["email"])
        and EMAIL_RE.fullmatch(row["email"]) is not None
        and row["country"] != "Atlantis"
        and row["phone"] != "12"
        and row["birthdate"] != "1999-02-30"
    )


def expected_emails(name: str) -> set[str]:
    return {row["email"].lower() for row in read_segment(name) if is_clean(row)}


def run_pair(project: Path, env: dict[str, str], *options: str) -> subprocess.CompletedProcess[str]:
    """`meltano [options] --environment=dev run --full-refresh tap-jsonl target-omnisend`."""
    result = meltano(
        project,
        env,
        *options,
        "--environment=dev",
        "run",
        "--full-refresh",
        "tap-jsonl",
        "target-omnisend",
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def run_job(project: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    result = meltano(project, env, "--environment=dev", "run", *extra, JOB)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_job_loads_both_segments_with_fields_and_tags(
    meltano_project: Path, run_env: dict[str, str], sandbox: SandboxServer
) -> None:
    run_job(meltano_project, run_env, "--full-refresh")

    contacts = contacts_by_email(sandbox.settled_dump())
    vip, lapsed = expected_emails("vip_customers"), expected_emails("lapsed_customers")
    assert set(contacts) == vip | lapsed
    assert len(vip & lapsed) >= 10  # the generator puts some customers in both segments
    for email in vip:
        assert {VIP_TAG, SOURCE_TAG} <= set(contacts[email]["tags"])
    for email in lapsed:
        assert {LAPSED_TAG, SOURCE_TAG} <= set(contacts[email]["tags"])
    for email in (vip | lapsed) - (vip & lapsed):
        assert not {VIP_TAG, LAPSED_TAG} <= set(contacts[email]["tags"])

    row = next(r for r in read_segment("vip_customers") if is_clean(r) and r["phone"])
    contact = contacts[row["email"].lower()]
    assert contact["firstName"] == row["first_name"]
    assert contact["lastName"] == row["last_name"]
    assert contact["city"] == row["city"]
    assert contact["postalCode"] == row["postal_code"]
    assert contact["customProperties"]["loyalty_tier"] == row["loyalty_tier"]
    phones = [i["id"] for i in contact["identifiers"] if i["type"] == "phone"]
    assert len(phones) == 1
    assert phones[0].startswith("+")


def test_consent_follows_the_export(
    meltano_project: Path, run_env: dict[str, str], sandbox: SandboxServer
) -> None:
    run_job(meltano_project, run_env, "--full-refresh")

    contacts = contacts_by_email(sandbox.settled_dump())
    rows = [r for r in read_segment("lapsed_customers") if is_clean(r)]
    expected = {"Y": "subscribed", "N": "unsubscribed", None: "nonSubscribed"}
    for row in rows[:40]:
        contact = contacts[row["email"].lower()]
        email_identifier = next(i for i in contact["identifiers"] if i["type"] == "email")
        status = email_identifier["channels"]["email"]["status"]
        assert status == expected[row["email_consent"]], row["customer_id"]


def test_meltano_stores_state_and_reruns(
    meltano_project: Path, run_env: dict[str, str], sandbox: SandboxServer
) -> None:
    run_job(meltano_project, run_env, "--full-refresh")
    run_job(meltano_project, run_env, "--full-refresh")

    listed = meltano(meltano_project, run_env, "--environment=dev", "state", "list")
    assert listed.returncode == 0, listed.stderr[-2000:]
    state_ids = [line.strip() for line in listed.stdout.splitlines() if "target-omnisend" in line]
    assert any("tap-spreadsheets" in state_id for state_id in state_ids), listed.stdout
    assert any("tap-jsonl" in state_id for state_id in state_ids), listed.stdout
    for state_id in state_ids:
        got = meltano(meltano_project, run_env, "--environment=dev", "state", "get", state_id)
        assert got.returncode == 0, got.stderr[-2000:]
        state = json.loads(got.stdout)
        assert state["singer_state"]["bookmarks"], state
    contacts = contacts_by_email(sandbox.settled_dump())
    assert set(contacts) == expected_emails("vip_customers") | expected_emails("lapsed_customers")


def test_schedule_run_works(
    meltano_project: Path, run_env: dict[str, str], sandbox: SandboxServer
) -> None:
    result = meltano(meltano_project, run_env, "--environment=dev", "schedule", "run", SCHEDULE)
    assert result.returncode == 0, result.stderr[-4000:]

    contacts = contacts_by_email(sandbox.settled_dump())
    assert set(contacts) == expected_emails("vip_customers") | expected_emails("lapsed_customers")


@pytest.fixture
def piped_configs(sandbox: SandboxServer, tmp_path: Path) -> tuple[Path, Path]:
    """Config files for tap-jsonl and target-omnisend, for piping without Meltano."""
    tap_config = tmp_path / "tap.json"
    tap_config.write_text(
        json.dumps(
            {
                "path": str(ROOT / "data" / "segments" / "lapsed_customers.jsonl"),
                "stream_name": "lapsed_customers",
                "primary_keys": ["customer_id"],
            }
        ),
        encoding="utf-8",
    )
    target_config = tmp_path / "target.json"
    target_config.write_text(
        json.dumps(
            {
                "api_key": "test-key-pipe",
                "api_url": sandbox.api_url,
                "default_phone_region": "GB",
                # status_values needs the status column mapped (conventional names do not
                # take email_consent: consent is never guessed from a column name)
                "field_mapping": {
                    "email": "email",
                    "phone": "phone",
                    "firstName": "first_name",
                    "lastName": "last_name",
                    "city": "city",
                    "country": "country",
                    "gender": "gender",
                    "birthdate": "birthdate",
                    "emailStatus": "email_consent",
                    "emailStatusChangedAt": "consent_date",
                },
                "status_values": {"Y": "subscribed", "N": "unsubscribed"},
                "custom_properties": {"loyalty_tier": "loyalty_tier"},
                "rejects_path": str(tmp_path / "rejects.jsonl"),
                "sync_state_path": str(tmp_path / "sync.sqlite"),
            }
        ),
        encoding="utf-8",
    )
    target_config.chmod(0o600)
    return tap_config, target_config


def test_tap_jsonl_piped_into_the_target_without_meltano(
    meltano_project: Path, piped_configs: tuple[Path, Path], sandbox: SandboxServer
) -> None:
    tap_config, target_config = piped_configs
    tap = meltano_project / ".meltano" / "extractors" / "tap-jsonl" / "venv" / "bin" / "tap-jsonl"
    env = base_env()
    with subprocess.Popen(
        [str(tap), "--config", str(tap_config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    ) as producer:
        target = subprocess.run(
            [str(BIN / "target-omnisend"), "--config", str(target_config)],
            stdin=producer.stdout,
            capture_output=True,
            env=env,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        assert producer.stdout is not None
        producer.stdout.close()
    assert producer.returncode == 0
    assert target.returncode == 0, target.stderr[-3000:]
    # A Singer target writes the state value itself (Meltano stores it), one JSON line each.
    states = [json.loads(line) for line in target.stdout.splitlines() if line.strip()]
    assert states
    assert all("lapsed_customers" in state["bookmarks"] for state in states)

    contacts = contacts_by_email(sandbox.settled_dump())
    assert set(contacts) == expected_emails("lapsed_customers")
    assert all(LAPSED_TAG in contact["tags"] for contact in contacts.values())


def test_a_large_export_is_mapped_in_two_processes_under_meltano(
    meltano_project: Path, sandbox_factory: Any, tmp_path: Path
) -> None:
    # More records than the mapping worker's warm-up: the target started by Meltano, from the
    # plugin's own virtualenv, starts the worker too, and loads exactly what one process would.
    sandbox = sandbox_factory(batch_processing_delay=0.2, supported_versions=["v5"])
    rows = read_segment("lapsed_customers")
    export, expected = tmp_path / "lapsed_big.jsonl", set()
    with export.open("w", encoding="utf-8") as out:
        for n in range(6000):
            row = dict(rows[n % len(rows)], customer_id=f"big-{n}")
            if is_clean(row):
                row["email"] = f"big{n}@example.com"
                expected.add(row["email"])
            out.write(json.dumps(row) + "\n")
    env = base_env()
    env.update(
        TARGET_OMNISEND_API_URL=sandbox.v5_url,
        TARGET_OMNISEND_API_VERSION="v5",
        TARGET_OMNISEND_API_KEY="test-key-meltano",
        TARGET_OMNISEND_REJECTS_PATH=str(tmp_path / "rejects.jsonl"),
        TARGET_OMNISEND_SYNC_STATE_PATH=str(tmp_path / "sync.sqlite"),
        TAP_JSONL_PATH=str(export),
    )
    result = run_pair(meltano_project, env)
    # the run summary's section: the worker process existed (its memory was read) and lines
    # went through the shared mapping
    worker = re.search(r'"parallel_mapping": \{[^}]*"worker_peak_rss_mb": ([0-9.]+)', result.stderr)
    assert worker is not None, result.stderr[-3000:]
    assert float(worker[1]) > 5
    assert "Traceback" not in result.stderr
    assert set(contacts_by_email(sandbox.settled_dump())) == expected


def test_meltano_shows_the_progress_lines_and_no_sdk_chatter(
    meltano_project: Path, sandbox_factory: Any, tmp_path: Path
) -> None:
    """Batches take 12 s at Omnisend: Meltano's log (the SDK's structured logging) carries the
    target's progress lines until the run ends, and neither METRIC nor drain lines."""
    sandbox = sandbox_factory(batch_processing_delay=12.0)
    env = {**sandbox_env(sandbox, tmp_path), "TARGET_OMNISEND_BATCH_SIZE_ROWS": "50"}
    result = run_pair(meltano_project, env, "--log-format=json")
    events = []
    for line in result.stderr.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "target-omnisend" in str(entry.get("name", "")):
            events.append(str(entry.get("event", "")))
    progress = [event for event in events if event.startswith("progress: ")]
    assert progress, "\n".join(events[-30:])
    assert "waiting for: batches processing at Omnisend" in progress[-1]
    assert "ETA " in progress[-1]
    assert not [event for event in events if event.startswith("METRIC") or "Draining" in event]
