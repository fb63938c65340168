"""SIGKILL and SIGTERM mid-run: STATE only ever covers records the sandbox holds; re-runs lose none.

The input's STATE messages carry a bookmark: the index of the last record before them. While the
target runs, stdout is read line by line and the sandbox is dumped the moment each STATE
appears: every valid record up to its bookmark must already be in the sandbox (batches are
slowed by a processing delay, so some are always in flight). After an interruption the target is
run again on the records after the last bookmark it wrote, and then the sandbox must hold every
valid record (duplicate requests allowed, missing contacts not).
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.harness import (
    STREAM,
    Accounting,
    Dataset,
    RunOutcome,
    TargetRun,
    account,
    assert_clean_exit,
    base_config,
    check_security,
    email_key,
    email_of,
    held_emails_in,
    make_dataset,
    phone_of,
    wait_for,
)

pytestmark = pytest.mark.reliability

TIME_SCALE = 10.0
RPM = int(400 * TIME_SCALE)
RECORDS = 2000
INVALID_EVERY = 89
STATE_EVERY = 100
PROCESSING_DELAY = 3.0  # sandbox seconds: 0.3 s per batch on the wall clock


@dataclass
class StateCheck:
    """One STATE the target wrote, and what the sandbox lacked at that moment."""

    bookmark: int
    missing: list[int] = field(default_factory=list)


@dataclass
class StreamedRun:
    """A run whose STATE lines were checked against the sandbox as they appeared."""

    outcome: RunOutcome
    checks: list[StateCheck]

    @property
    def last_bookmark(self) -> int:
        """The bookmark of the last STATE written (-1 when none was)."""
        return self.checks[-1].bookmark if self.checks else -1


def bookmark_of(line: str) -> int:
    """The record index a STATE line's bookmark names."""
    message = json.loads(line)
    value = message.get("value", message)
    return int(value["bookmarks"][STREAM]["last"])


def missing_through(sandbox: Any, dataset: Dataset, bookmark: int) -> list[int]:
    """Valid records up to `bookmark` the sandbox does not hold right now."""
    held = held_emails_in(sandbox.dump())
    return [
        record["n"]
        for record in dataset.records[: bookmark + 1]
        if record["n"] not in dataset.invalid and email_key(record) not in held
    ]


def feed(process: subprocess.Popen[str], lines: list[str], pause: float, close: bool) -> None:
    """Write `lines` to the target in chunks (a tap producing records), then maybe close."""
    assert process.stdin is not None
    try:
        for start in range(0, len(lines), 50):
            process.stdin.write("".join(lines[start : start + 50]))
            process.stdin.flush()
            if pause:
                time.sleep(pause)
        if close:
            process.stdin.close()
    except (BrokenPipeError, ValueError, OSError):
        pass  # the target was stopped while we were writing


def streamed_run(
    sandbox: Any,
    run: TargetRun,
    dataset: Dataset,
    text: str,
    *,
    pause: float = 0.0,
    close_stdin: bool = True,
    interrupt: Callable[[subprocess.Popen[str]], None] | None = None,
    timeout: float = 120,
) -> StreamedRun:
    """Run the target, checking the sandbox at every STATE line while it runs."""
    process = run.start()
    lines = text.splitlines(keepends=True)
    feeder = threading.Thread(target=feed, args=(process, lines, pause, close_stdin), daemon=True)
    feeder.start()
    if interrupt is not None:
        threading.Thread(target=interrupt, args=(process,), daemon=True).start()
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    checks: list[StateCheck] = []
    stdout: list[str] = []
    assert process.stdout is not None
    try:
        for line in process.stdout:
            stdout.append(line)
            if line.strip():
                bookmark = bookmark_of(line)
                checks.append(StateCheck(bookmark, missing_through(sandbox, dataset, bookmark)))
        process.wait()
    finally:
        timer.cancel()
        if process.stdin is not None and not process.stdin.closed:
            with contextlib.suppress(OSError):
                process.stdin.close()
    feeder.join(timeout=5)
    return StreamedRun(run.outcome(process, "".join(stdout)), checks)


def assert_states_were_safe(streamed: StreamedRun) -> None:
    """For every STATE line, the sandbox already held every valid record before it."""
    unsafe = [(check.bookmark, check.missing[:5]) for check in streamed.checks if check.missing]
    assert not unsafe, f"STATE written before its records were in the sandbox: {unsafe}"


def security(streamed: StreamedRun) -> None:
    """The security rules, on a sample of the personal data."""
    sample = range(0, RECORDS, 40)
    check_security(
        streamed.outcome,
        emails=[email_of(i) for i in sample],
        phones=[phone_of(i) for i in sample],
    )


def slow_sandbox(sandbox_factory: Callable[..., Any]) -> Any:
    """A sandbox whose batches stay in flight for a while."""
    return sandbox_factory(time_scale=TIME_SCALE, batch_processing_delay=PROCESSING_DELAY)


def config_for(sandbox: Any, work: Path) -> dict[str, Any]:
    """Settings that keep a few batches in flight."""
    return base_config(
        sandbox,
        work,
        max_requests_per_minute=RPM,
        batch_size_rows=100,
        max_batches_in_flight=3,
    )


def rerun_from(
    sandbox: Any, tmp_path: Path, dataset: Dataset, bookmark: int, drain_every: float | None
) -> tuple[StreamedRun, list[dict[str, Any]]]:
    """Run again on the records after `bookmark`, as an orchestrator resuming from STATE would."""
    config = config_for(sandbox, tmp_path / "rerun")
    run = TargetRun(tmp_path, config, "rerun", drain_every_seconds=drain_every)
    streamed = streamed_run(sandbox, run, dataset, dataset.text(bookmark + 1, STATE_EVERY))
    assert_clean_exit(streamed.outcome)
    assert_states_were_safe(streamed)
    security(streamed)
    if bookmark + 1 < RECORDS:
        assert streamed.last_bookmark == RECORDS - 1
    return streamed, streamed.outcome.reject_rows()


def rerun_and_account(
    sandbox: Any,
    tmp_path: Path,
    dataset: Dataset,
    first: StreamedRun,
    drain_every: float | None,
    scenario: str,
    **extra: Any,
) -> Accounting:
    """Re-run after the interrupted `first` run; then every valid record is held, none lost."""
    second, rerun_rejects = rerun_from(sandbox, tmp_path, dataset, first.last_bookmark, drain_every)
    dump = sandbox.dump()
    assert dataset.valid_emails <= held_emails_in(dump)
    result = account(
        scenario,
        dataset,
        dump,
        first.outcome.reject_rows() + rerun_rejects,
        **extra,
        states_checked=len(first.checks) + len(second.checks),
    )
    assert result.lost == 0
    return result


# -- SIGKILL --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "drain_every"),
    [(11, 0.3), (23, 0.3), (37, 0.5), (41, None)],
    ids=["seed 11", "seed 23", "seed 37", "seed 41, shipped drain interval"],
)
def test_sigkill_at_a_random_moment_then_rerun_loses_nothing(
    sandbox_factory: Any, tmp_path: Path, seed: int, drain_every: float | None
) -> None:
    sandbox = slow_sandbox(sandbox_factory)
    dataset = make_dataset(RECORDS, INVALID_EVERY)
    kill_after = random.Random(seed).uniform(0.3, 2.0)  # a full run takes > 2.5 s

    def kill(process: subprocess.Popen[str]) -> None:
        time.sleep(kill_after)
        process.send_signal(signal.SIGKILL)

    run = TargetRun(
        tmp_path, config_for(sandbox, tmp_path / "run"), drain_every_seconds=drain_every
    )
    first = streamed_run(sandbox, run, dataset, dataset.text(0, STATE_EVERY), interrupt=kill)
    assert first.outcome.returncode == -signal.SIGKILL, "the run ended before it was killed"
    assert_states_were_safe(first)
    security(first)

    drains = f"drain every {drain_every} s" if drain_every else "shipped drain interval"
    result = rerun_and_account(
        sandbox,
        tmp_path,
        dataset,
        first,
        drain_every,
        f"SIGKILL at {kill_after:.2f} s (seed {seed}, {drains}) + re-run",
        killed_at_bookmark=first.last_bookmark,
    )
    assert result.rejected == len(dataset.invalid)


# -- SIGTERM --------------------------------------------------------------------------------------


def batches_in_flight(sandbox: Any) -> bool:
    """Some batch is still pending or in progress at the sandbox."""
    statuses = [batch["status"] for batch in sandbox.dump()["batches"]]
    return any(status in ("pending", "inProgress") for status in statuses)


@pytest.mark.parametrize(
    ("mode", "pause"),
    [("while waiting for input", 0.0), ("while records are arriving", 0.05)],
)
def test_sigterm_accounts_for_in_flight_batches_and_exits_cleanly(
    sandbox_factory: Any, tmp_path: Path, mode: str, pause: float
) -> None:
    sandbox = slow_sandbox(sandbox_factory)
    dataset = make_dataset(RECORDS, INVALID_EVERY)
    first_part = Dataset(dataset.records[:1200], dataset.invalid)

    def terminate(process: subprocess.Popen[str]) -> None:
        wait_for(lambda: batches_in_flight(sandbox) or process.poll() is not None, timeout=30)
        process.send_signal(signal.SIGTERM)

    run = TargetRun(tmp_path, config_for(sandbox, tmp_path / "run"), drain_every_seconds=0.3)
    first = streamed_run(
        sandbox,
        run,
        dataset,
        first_part.text(0, STATE_EVERY),
        pause=pause,
        close_stdin=False,  # the tap is still running when the orchestrator stops the target
        interrupt=terminate,
    )
    assert_clean_exit(first.outcome)
    assert "Stopped on signal 15 after accounting for every record." in first.outcome.stderr
    assert_states_were_safe(first)
    security(first)
    # Everything before the last STATE is in the sandbox or the rejects.
    rejected_first = {row["n"] for row in first.outcome.reject_rows()}
    before = dataset.records[: first.last_bookmark + 1]
    assert {r["n"] for r in before if r["n"] in dataset.invalid} <= rejected_first

    rerun_and_account(
        sandbox,
        tmp_path,
        dataset,
        first,
        0.3,
        f"SIGTERM {mode} + re-run",
        stopped_at_bookmark=first.last_bookmark,
    )
