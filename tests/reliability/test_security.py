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
    assert_clear_error,
    base_config,
    check_security,
    email_of,
    held_emails,
    make_dataset,
    output_files,
    phone_of,
)
from tests.reliability.local_server import LocalServer, Seen

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


# -- round 2: redirects, server texts, the key's characters ------------------------------------

REDIRECTS = [
    pytest.param("2026-03-15", 307, id="2026 307"),
    pytest.param("2026-03-15", 308, id="2026 308"),
    pytest.param("v5", 301, id="v5 301"),
    pytest.param("v5", 302, id="v5 302"),
    pytest.param("v5", 307, id="v5 307"),
    pytest.param("v5", 308, id="v5 308"),
]


@pytest.mark.parametrize(("api_version", "status"), REDIRECTS)
def test_a_redirect_is_never_followed_nor_retried(
    tmp_path: Path, api_version: str, status: int
) -> None:
    prefix = "/v5" if api_version == "v5" else "/api"
    batch = json.dumps({"batchID": "b1", "totalCount": 1}).encode()
    with LocalServer(lambda seen: (201, {}, batch), host="127.0.0.2") as elsewhere:
        location = f"{elsewhere.url}{prefix}/batches"

        def redirect(seen: Seen) -> tuple[int, dict[str, str], bytes]:
            return status, {"Location": location}, b""

        with LocalServer(redirect) as server:
            config = base_config(None, tmp_path / "run", api_version, api_url=server.url + prefix)
            outcome = TargetRun(tmp_path, config).run(make_dataset(5).text(state_every=5))
    assert_clear_error(outcome, f"answered {status}, a redirect to host '127.0.0.2'")
    assert "The target follows no redirect" in outcome.stderr
    assert outcome.stdout == ""  # no STATE
    assert elsewhere.seen == []  # neither the key nor a contact went there
    assert [(s.method, s.path) for s in server.seen] == [("POST", f"{prefix}/batches")]
    check_security(outcome, emails=PERSONAL[:5], phones=PERSONAL[RECORDS : RECORDS + 5])


def test_item_errors_repeating_emails_and_phones_are_masked(sandbox: Any, tmp_path: Path) -> None:
    dataset = make_dataset(RECORDS)
    refused = [3, 40, 77]
    sandbox.configure(
        item_errors={
            email_of(i): [400, f"Contact {email_of(i)} (phone {phone_of(i)}) is blocked"]
            for i in refused
        }
    )
    outcome = TargetRun(tmp_path, base_config(sandbox, tmp_path / "run")).run(dataset.text())
    assert_clean_exit(outcome)
    assert "Omnisend rejected p***@e***.com: Contact p***@e***.com (phone +44" in outcome.stderr
    rows = outcome.reject_rows()
    assert sorted(row["n"] for row in rows) == refused
    for row in rows:  # the rejects file keeps the record, and the server's text masked too
        assert email_of(row["n"]) not in row["_reject"]["api_error"]
        assert phone_of(row["n"]) not in row["_reject"]["api_error"]
    check_security(outcome, emails=PERSONAL[:RECORDS], phones=PERSONAL[RECORDS:])
    result = account("security: server text masked", dataset, sandbox.dump(), rows)
    assert result.lost == 0


def secret_pieces(length: int = 5) -> list[str]:
    """Every `length`-character piece of the key's secret."""
    return [SECRET[i : i + length] for i in range(len(SECRET) - length + 1)]


@pytest.mark.parametrize("json_body", [False, True], ids=["text body", "json body"])
def test_an_error_body_repeating_the_key_is_masked_before_it_is_cut(
    tmp_path: Path, json_body: bool
) -> None:
    text = "Bad request " + "y" * 265 + f" for key {API_KEY} from {email_of(1)}"  # cut at 300
    body = json.dumps({"error": text}).encode() if json_body else text.encode()

    def refuse(seen: Seen) -> tuple[int, dict[str, str], bytes]:
        return 400, {} if json_body else {"Content-Type": "text/plain"}, body

    with LocalServer(refuse) as server:
        config = base_config(None, tmp_path / "run", api_url=server.url + "/api")
        outcome = TargetRun(tmp_path, config).run(make_dataset(5).text())
    assert_clear_error(outcome, "POST /batches answered 400: Bad request yyy")
    leaked = [piece for piece in secret_pieces() if piece in outcome.stderr]
    assert not leaked, f"part of the key is in the log: {leaked[:3]}"
    check_security(outcome, emails=[email_of(1)])


KEYS = [
    pytest.param(
        "brandx-SECRETK\nEY123456", "a line break or control character at position 15", id="newline"
    ),
    pytest.param("brandx-SECRET KEY123456", "a space at position 14", id="space"),
    pytest.param("brandx-SECRÉTKEY123456", "a non-ASCII character at position 12", id="non-ASCII"),
    pytest.param("", "Setting 'api_key' is empty", id="empty"),
    pytest.param("   ", "Setting 'api_key' is empty", id="blank"),
]


@pytest.mark.parametrize(("api_key", "message"), KEYS)
def test_a_key_no_api_key_can_be_is_refused_at_config_time(
    sandbox: Any, tmp_path: Path, api_key: str, message: str
) -> None:
    config = base_config(sandbox, tmp_path / "run", api_key=api_key)
    outcome = TargetRun(tmp_path, config).run(make_dataset(5).text())
    assert_clear_error(outcome, message)
    assert sandbox.dump()["requests_total"] == 0
    for piece in ("SECRET", "KEY123456", "EY123456", "SECRÉT"):
        assert piece not in outcome.stderr
