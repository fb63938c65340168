"""Running the real `target-omnisend` CLI against the sandbox, and judging only by what it left.

Every count here comes from the sandbox's dump and the rejects file, never from the target's own
summary. Every run goes through `TargetRun`, which also checks the security rules (the API key in
no output, emails and phones masked in logs, owner-only files) on every scenario.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import EXECUTABLE

API_KEY = "brandx-SECRETKEY123456"
SECRET = API_KEY.split("-", 1)[1]
STREAM = "segment"
RESULTS_FILE_ENV = "RELIABILITY_RESULTS"
SESSION_ENV = "RELIABILITY_SESSION"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "n": {"type": "integer"},
        "email": {"type": ["string", "null"]},
        "phone": {"type": ["string", "null"]},
        "first_name": {"type": ["string", "null"]},
        "country": {"type": ["string", "null"]},
    },
}


# -- Singer input ---------------------------------------------------------------------------------


def schema_message(schema: dict[str, Any] | None = None, stream: str = STREAM) -> dict[str, Any]:
    """A SCHEMA message for `stream`."""
    return {
        "type": "SCHEMA",
        "stream": stream,
        "schema": schema or SCHEMA,
        "key_properties": ["n"],
    }


def record_message(record: dict[str, Any], stream: str = STREAM) -> dict[str, Any]:
    """A RECORD message for `stream`."""
    return {"type": "RECORD", "stream": stream, "record": record}


def state_message(last_index: int) -> dict[str, Any]:
    """A STATE whose bookmark is the index of the last record before it."""
    return {"type": "STATE", "value": {"bookmarks": {STREAM: {"last": last_index}}}}


def singer_text(messages: Iterable[dict[str, Any]]) -> str:
    """Messages as Singer lines."""
    return "".join(json.dumps(message) + "\n" for message in messages)


def email_of(index: int) -> str:
    """The test email of record `index` (recognisable in logs when unmasked)."""
    return f"person{index:05d}@example.com"


def email_key(record: dict[str, Any]) -> str:
    """The email a record leaves in the sandbox when accepted (trimmed, lower-cased)."""
    return str(record.get("email") or "").strip().lower()


def phone_of(index: int) -> str:
    """A valid E.164 test phone of record `index`."""
    return f"+4477009{index:05d}"


@dataclass
class Dataset:
    """Records with known fates: `valid` indexes must reach Omnisend, `invalid` ones the rejects."""

    records: list[dict[str, Any]]
    invalid: set[int] = field(default_factory=set)

    @property
    def valid_emails(self) -> set[str]:
        """Emails every valid record must leave in the sandbox."""
        return {email_key(r) for r in self.records if r["n"] not in self.invalid}

    def messages(self, start: int = 0, state_every: int = 0) -> Iterator[dict[str, Any]]:
        """SCHEMA, then the records from index `start`, a STATE after every `state_every`."""
        yield schema_message()
        for record in self.records[start:]:
            yield record_message(record)
            if state_every and (record["n"] + 1) % state_every == 0:
                yield state_message(record["n"])
        if state_every and self.records and (self.records[-1]["n"] + 1) % state_every:
            yield state_message(self.records[-1]["n"])

    def text(self, start: int = 0, state_every: int = 0) -> str:
        """The dataset as Singer lines."""
        return singer_text(self.messages(start, state_every))


def make_dataset(count: int, invalid_every: int = 0) -> Dataset:
    """`count` contacts with email and phone; every `invalid_every`-th one has a bad email."""
    records: list[dict[str, Any]] = []
    invalid: set[int] = set()
    for index in range(count):
        record = {
            "n": index,
            "email": email_of(index),
            "phone": phone_of(index),
            "first_name": f"Name{index}",
            "country": "GB",
        }
        if invalid_every and index % invalid_every == invalid_every - 1:
            record["email"] = f"broken{index}-at-example.com"
            invalid.add(index)
        records.append(record)
    return Dataset(records, invalid)


# -- configuration --------------------------------------------------------------------------------


def base_config(sandbox: Any, work: Path, api_version: str = "2026-03-15", **changes: Any) -> dict:
    """A config for the sandbox with the recognisable key; outputs go under `work`.

    With `api_url` among `changes`, `sandbox` may be None (another server)."""
    api_url = changes.pop("api_url", None)
    if api_url is None:
        api_url = sandbox.v5_url if api_version == "v5" else sandbox.api_url
    config: dict[str, Any] = {
        "api_key": API_KEY,
        "api_version": api_version,
        "api_url": api_url,
        "rejects_path": str(work / "rejects.jsonl"),
        "request_timeout": 5,
        "field_mapping": {
            "email": "email",
            "phone": "phone",
            "firstName": "first_name",
            "country": "country",
        },
    }
    config.update(changes)
    return config


# -- running --------------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    """What one run of the CLI left behind."""

    returncode: int | None
    stdout: str
    stderr: str
    work: Path

    @property
    def states(self) -> list[dict[str, Any]]:
        """STATE values the target wrote (stdout holds only STATE messages)."""
        values = []
        for line in self.stdout.splitlines():
            if line.strip():
                message = json.loads(line)
                values.append(message.get("value", message))
        return values

    def reject_rows(self, name: str = "rejects.jsonl") -> list[dict[str, Any]]:
        """The RECORD rows of a rejects file under `work`."""
        return reject_rows(self.work / name)

    def reject_codes(self, name: str = "rejects.jsonl") -> list[str]:
        """The reason code of each rejected row."""
        return [row["_reject"]["code"] for row in self.reject_rows(name)]


def reject_rows(path: Path) -> list[dict[str, Any]]:
    """The RECORD rows of a rejects file (empty when the file was never created)."""
    if not path.exists():
        return []
    messages = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [m["record"] for m in messages if m.get("type") == "RECORD"]


# The shipped CLI, with only the SDK's full-drain interval shortened (it writes STATE on each full
# drain, by default every 5 minutes): lets a seconds-long test see STATE lines mid-run.
SHORT_DRAIN_CODE = (
    "import sys; from target_omnisend.target import TargetOmnisend as T; "
    "T._MAX_RECORD_AGE_IN_MINUTES = float(sys.argv.pop(1)) / 60; T.cli()"
)


class TargetRun:
    """A prepared invocation: a work directory and a config file outside it."""

    def __init__(
        self,
        tmp_path: Path,
        config: dict[str, Any],
        name: str = "run",
        drain_every_seconds: float | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """Write the config outside the work directory, so output scans never see it.

        `drain_every_seconds` runs the same CLI entry point with the SDK's full-drain (and so
        STATE) interval shortened from 5 minutes; None runs the installed `target-omnisend`.
        """
        self.drain_every_seconds = drain_every_seconds
        self.env = {**os.environ, **(env or {})}
        self.work = tmp_path / name
        self.work.mkdir(parents=True, exist_ok=True)
        self.config = config
        config_dir = tmp_path / f"{name}-config"
        config_dir.mkdir(exist_ok=True)
        self.config_path = config_dir / "config.json"
        self.config_path.write_text(json.dumps(config), encoding="utf-8")

    @property
    def argv(self) -> list[str]:
        """The command line."""
        if self.drain_every_seconds is None:
            return [EXECUTABLE, "--config", str(self.config_path)]
        interval = str(self.drain_every_seconds)
        return [sys.executable, "-c", SHORT_DRAIN_CODE, interval, "--config", str(self.config_path)]

    def run(self, stdin: bytes | str, timeout: float = 120) -> RunOutcome:
        """Run to the end with `stdin` as input."""
        data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
        completed = subprocess.run(
            self.argv,
            input=data,
            capture_output=True,
            cwd=self.work,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        return RunOutcome(
            completed.returncode,
            completed.stdout.decode("utf-8", "replace"),
            completed.stderr.decode("utf-8", "replace"),
            self.work,
        )

    def start(self, stdin: Any = subprocess.PIPE) -> subprocess.Popen[str]:
        """Start the CLI; stdout is a text pipe, stderr goes to `work/../<name>-stderr.log`."""
        self._stderr_path = self.work.parent / f"{self.work.name}-stderr.log"
        self._stderr = self._stderr_path.open("w", encoding="utf-8")
        return subprocess.Popen(
            self.argv,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=self.work,
            env=self.env,
        )

    def outcome(self, process: subprocess.Popen[str], stdout: str) -> RunOutcome:
        """The outcome of a process started with `start` (after it ended)."""
        self._stderr.close()
        stderr = self._stderr_path.read_text(encoding="utf-8", errors="replace")
        return RunOutcome(process.returncode, stdout, stderr, self.work)


# -- the sandbox's view ---------------------------------------------------------------------------


def identifier(contact: dict[str, Any], kind: str) -> str | None:
    """The contact's identifier value of `kind` (email or phone)."""
    for item in contact.get("identifiers", []):
        if item.get("type") == kind:
            return str(item.get("id"))
    return None


def held_emails(sandbox: Any) -> set[str]:
    """Emails of every contact the sandbox holds."""
    return held_emails_in(sandbox.dump())


def held_emails_in(dump: dict[str, Any]) -> set[str]:
    """Emails of every contact in a dump."""
    emails = (identifier(contact, "email") for contact in dump["contacts"])
    return {email for email in emails if email}


def wait_for(condition: Any, timeout: float = 15.0, interval: float = 0.05) -> bool:
    """Poll `condition` until it holds or `timeout` passes; the final verdict."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


# -- security checks (every scenario) -------------------------------------------------------------


def output_files(work: Path) -> list[Path]:
    """Every file the target left under its work directory (rejects, dry run, store, …)."""
    return sorted(path for path in work.rglob("*") if path.is_file())


def assert_no_key(*texts: str, files: Sequence[Path] = ()) -> None:
    """The API key (or its secret part) appears in no text and no file."""
    for text in texts:
        assert SECRET not in text, "the API key leaked into an output"
    for path in files:
        content = path.read_bytes()
        assert SECRET.encode() not in content, f"the API key leaked into {path.name}"


def assert_owner_only(files: Sequence[Path]) -> None:
    """Every file is readable and writable by its owner only (0600)."""
    for path in files:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode & 0o077 == 0, f"{path.name} has mode {mode:o}; expected owner-only (0600)"


def assert_masked(stderr: str, emails: Iterable[str] = (), phones: Iterable[str] = ()) -> None:
    """No raw test email or phone appears in the log."""
    leaked = [value for value in [*emails, *phones] if value and value in stderr]
    assert not leaked, f"unmasked personal data in the log, e.g. {leaked[0]!r}"


def check_security(
    outcome: RunOutcome, emails: Iterable[str] = (), phones: Iterable[str] = ()
) -> None:
    """The security rules every scenario must keep."""
    files = output_files(outcome.work)
    assert_no_key(outcome.stdout, outcome.stderr, files=files)
    assert_owner_only(files)
    assert_masked(outcome.stderr, emails, phones)


def assert_clean_exit(outcome: RunOutcome) -> None:
    """Exit code 0 and no traceback."""
    assert "Traceback" not in outcome.stderr, outcome.stderr[-3000:]
    assert outcome.returncode == 0, outcome.stderr[-3000:]


def assert_clear_error(outcome: RunOutcome, message: str) -> None:
    """A non-zero exit with `message` in the log and no traceback."""
    assert "Traceback" not in outcome.stderr, outcome.stderr[-3000:]
    assert outcome.returncode not in (0, None), outcome.stderr[-3000:]
    assert message in outcome.stderr, outcome.stderr[-3000:]


# -- accounting -----------------------------------------------------------------------------------


@dataclass
class Accounting:
    """Records in = accepted (in the sandbox) + rejected (in the rejects) + merged; lost = 0."""

    scenario: str
    records_in: int
    accepted: int
    rejected: int
    merged: int
    lost: int
    extra: dict[str, Any] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        """The accounting as a JSON-ready row for the report."""
        return {
            "scenario": self.scenario,
            "records_in": self.records_in,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "merged": self.merged,
            "lost": self.lost,
            **self.extra,
        }


def account(
    scenario: str,
    dataset: Dataset,
    dump: dict[str, Any],
    rejects: Sequence[dict[str, Any]],
    merged: int = 0,
    **extra: Any,
) -> Accounting:
    """Account for every record of `dataset` from the sandbox's dump and the rejects rows.

    A record counts as accepted when the sandbox holds its email, as rejected when a row with its
    index `n` is in the rejects; anything else is lost.
    """
    held = held_emails_in(dump)
    rejected_ns = {row.get("n") for row in rejects}
    accepted = rejected = lost = 0
    for record in dataset.records:
        if record["n"] in rejected_ns:
            rejected += 1
        elif email_key(record) in held:
            accepted += 1
        else:
            lost += 1
    lost = max(0, lost - merged)
    result = Accounting(scenario, len(dataset.records), accepted, rejected, merged, lost, extra)
    record_result(result)
    return result


def record_result(result: Accounting) -> None:
    """Append the accounting to the results file the report reads (one JSON line each)."""
    path = results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        row = {**result.as_row(), "session": session_id(), "at": time.time()}
        handle.write(json.dumps(row) + "\n")


def session_id() -> str:
    """The pytest session's id, shared by its xdist workers (the report shows the latest)."""
    return os.environ.get("PYTEST_XDIST_TESTRUNUID") or os.environ.get(SESSION_ENV) or "?"


def results_path() -> Path:
    """Where scenario results accumulate for `report.py` (shared by xdist workers)."""
    default = Path(__file__).resolve().parents[2] / ".pytest_cache" / "reliability-results.jsonl"
    return Path(os.environ.get(RESULTS_FILE_ENV, default))
