"""Faults production throws at a loader, survived with zero records lost.

Each scenario runs the real CLI against a sandbox misbehaving one way (time scaled so it takes
seconds) and counts only from the sandbox's dump and the rejects file: records in = contacts in the
sandbox + rows in the rejects; lost must be 0. Each also proves the fault really happened (from
the dump) and keeps the security rules.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.reliability.harness import (
    Dataset,
    TargetRun,
    account,
    assert_clean_exit,
    assert_clear_error,
    base_config,
    check_security,
    email_of,
    make_dataset,
    phone_of,
    wait_for,
)

pytestmark = pytest.mark.reliability

TIME_SCALE = 20.0  # a sandbox minute lasts 3 s
RPM = int(400 * TIME_SCALE)  # the target's budget: Omnisend's 400/min, on the sandbox's clock
RECORDS = 1000
INVALID_EVERY = 97  # a few records with broken emails end in the rejects in every scenario
STATE_EVERY = 100
SECOND_APP_KEY = "brandx-SECONDAPPKEY777"
STORM_429S = 4
STORM_LIMIT = 100  # the brand's requests per (scaled) minute in the storm scenario
STORM_RPM = 96  # what the second app spends of it


@dataclass
class Scenario:
    """A fault to inject and the target settings that meet it."""

    name: str
    sandbox: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    api_version: str = "2026-03-15"
    records: int = RECORDS
    forced_rejects: dict[str, list[Any]] = field(default_factory=dict)
    before: Callable[[Any], None] | None = None


def item_errors_for(indexes: list[int], code: int, message: str) -> dict[str, list[Any]]:
    """Per-item errors the sandbox forces for the emails of `indexes`."""
    return {email_of(index): [code, message] for index in indexes}


def run_scenario(
    sandbox_factory: Callable[..., Any],
    tmp_path: Path,
    scenario: Scenario,
    during: Callable[[Any], None] | None = None,
) -> tuple[dict[str, Any], Dataset]:
    """Run the scenario to the end; assert a clean exit and zero lost; return the final dump."""
    settings = {"time_scale": TIME_SCALE, "seed": 7, **scenario.sandbox}
    if scenario.forced_rejects:
        settings["item_errors"] = scenario.forced_rejects
    sandbox = sandbox_factory(**settings)
    if scenario.before:
        scenario.before(sandbox)
    dataset = make_dataset(scenario.records, INVALID_EVERY)
    config = base_config(
        sandbox,
        tmp_path / "run",
        scenario.api_version,
        max_requests_per_minute=RPM,
        **{"batch_size_rows": 100, "max_batches_in_flight": 4, **scenario.config},
    )
    run = TargetRun(tmp_path, config)
    watcher = threading.Thread(target=during, args=(sandbox,), daemon=True) if during else None
    if watcher:
        watcher.start()
    outcome = run.run(dataset.text(state_every=STATE_EVERY), timeout=240)
    if watcher:
        watcher.join(timeout=5)
    assert_clean_exit(outcome)
    sample = range(0, scenario.records, 50)
    check_security(
        outcome,
        emails=[email_of(i) for i in sample],
        phones=[phone_of(i) for i in sample],
    )
    dump = sandbox.dump()
    rows = outcome.reject_rows()
    result = account(scenario.name, dataset, dump, rows, **fault_figures(dump))
    assert result.lost == 0, f"{result.lost} records lost: {result.as_row()}"
    forced = {int(email.removeprefix("person").split("@")[0]) for email in scenario.forced_rejects}
    assert result.rejected == len(dataset.invalid | forced)
    codes = {row["n"]: row["_reject"]["code"] for row in rows}
    assert all(codes[n] == "invalid_email" for n in dataset.invalid)
    assert all(codes[n] == "api_rejected" for n in forced)
    assert outcome.states[-1] == {"bookmarks": {"segment": {"last": scenario.records - 1}}}
    return dump, dataset


def fault_figures(dump: dict[str, Any]) -> dict[str, Any]:
    """What the sandbox saw: requests, 429s and injected faults (for the report)."""
    stopped = sum(1 for batch in dump["batches"] if batch["status"] == "stopped")
    return {
        "requests": dump["requests_total"],
        "rate_limited": dump["rate_limited"],
        "faults": dict(dump["faults_injected"]),
        "stopped_batches": stopped,
    }


# -- scenarios ------------------------------------------------------------------------------------


def test_baseline_without_faults(sandbox_factory: Any, tmp_path: Path) -> None:
    dump, _ = run_scenario(sandbox_factory, tmp_path, Scenario("faults: none (2026)"))
    assert dump["rate_limited"] == 0


def second_app_fills_the_window(sandbox: Any) -> None:
    """Another app of the same brand calls once; the sandbox's second app then spends the
    brand's budget for a whole (scaled) minute before the target starts."""
    headers = {
        "Authorization": f"Omnisend-API-Key {SECOND_APP_KEY}",
        "Omnisend-Version": "2026-03-15",
    }
    answer = requests.get(sandbox.api_url + "/contacts?limit=1", headers=headers, timeout=5)
    assert answer.status_code == 200
    time.sleep(60.0 / TIME_SCALE)


def storm_then_calm(sandbox: Any) -> None:
    """Keep the brand's budget spent until the target met `STORM_429S` refusals, then let the
    second app use only part of it (a storm that passes, as in production)."""
    wait_for(lambda: sandbox.dump()["rate_limited"] >= STORM_429S, timeout=60, interval=0.02)
    sandbox.configure(second_app_rpm=STORM_RPM // 2)


def test_429_storm_from_a_second_app(sandbox_factory: Any, tmp_path: Path) -> None:
    # The brand's limit is lowered so the sandbox's second app can spend it precisely: it takes
    # all but a few requests per (scaled) minute until the storm passes, then half.
    scenario = Scenario(
        "faults: 429 storm (second app)",
        sandbox={"rate_limit_per_minute": STORM_LIMIT, "second_app_rpm": STORM_RPM},
        config={"batch_size_rows": 25},
        before=second_app_fills_the_window,
    )
    dump, _ = run_scenario(sandbox_factory, tmp_path, scenario, during=storm_then_calm)
    assert dump["rate_limited"] >= STORM_429S


def test_500_and_503_at_ten_percent(sandbox_factory: Any, tmp_path: Path) -> None:
    scenario = Scenario("faults: 500/503 at 10%", sandbox={"error_rate": 0.10})
    dump, _ = run_scenario(sandbox_factory, tmp_path, scenario)
    assert dump["faults_injected"].get("error", 0) > 0


def test_answers_slower_than_the_request_timeout(sandbox_factory: Any, tmp_path: Path) -> None:
    scenario = Scenario(
        "faults: slow answers > request_timeout",
        sandbox={"slow_rate": 0.10, "slow_seconds": 1.0},
        config={"request_timeout": 0.4},
    )
    dump, _ = run_scenario(sandbox_factory, tmp_path, scenario)
    assert dump["faults_injected"].get("slow", 0) > 0


def test_dropped_connections(sandbox_factory: Any, tmp_path: Path) -> None:
    scenario = Scenario("faults: dropped connections 10%", sandbox={"drop_rate": 0.10})
    dump, _ = run_scenario(sandbox_factory, tmp_path, scenario)
    assert dump["faults_injected"].get("drop", 0) > 0


def stop_the_first_batches(count: int) -> Callable[[Any], None]:
    """A watcher that lets batches end `stopped` until `count` did, then lets them finish."""

    def watch(sandbox: Any) -> None:
        def stopped() -> int:
            return sum(1 for b in sandbox.dump()["batches"] if b["status"] == "stopped")

        deadline = threading.Event()
        while stopped() < count and not deadline.wait(0.02):
            pass
        sandbox.configure(stop_batches=False)

    return watch


def test_batches_that_end_stopped(sandbox_factory: Any, tmp_path: Path) -> None:
    scenario = Scenario("faults: batches end stopped", sandbox={"stop_batches": True})
    dump, _ = run_scenario(sandbox_factory, tmp_path, scenario, during=stop_the_first_batches(3))
    assert sum(1 for batch in dump["batches"] if batch["status"] == "stopped") >= 3


def test_per_item_4xx_errors_become_api_rejects(sandbox_factory: Any, tmp_path: Path) -> None:
    forced = item_errors_for([5, 150, 333], 400, "Invalid contact data")
    forced |= item_errors_for([420, 777], 422, "Identifier is blocked")
    scenario = Scenario("faults: per-item 4xx errors", forced_rejects=forced)
    run_scenario(sandbox_factory, tmp_path, scenario)


def test_v5_with_errors_drops_and_item_errors_together(
    sandbox_factory: Any, tmp_path: Path
) -> None:
    scenario = Scenario(
        "faults: v5 mix (5xx 5%, drops 5%, item 4xx)",
        sandbox={"error_rate": 0.05, "drop_rate": 0.05},
        api_version="v5",
        forced_rejects=item_errors_for([12, 640], 400, "Invalid contact data"),
    )
    dump, _ = run_scenario(sandbox_factory, tmp_path, scenario)
    assert sum(dump["faults_injected"].values()) > 0


def test_batches_that_never_finish_fail_the_run_without_state(
    sandbox_factory: Any, tmp_path: Path
) -> None:
    sandbox = sandbox_factory(time_scale=TIME_SCALE, stop_batches=True)
    dataset = make_dataset(300, INVALID_EVERY)
    config = base_config(sandbox, tmp_path / "run", max_requests_per_minute=RPM)
    outcome = TargetRun(tmp_path, config).run(dataset.text(state_every=STATE_EVERY))
    assert_clear_error(outcome, "Batches could not be accounted for: batch ")
    assert "No STATE is written for them, so the next run replays them." in outcome.stderr
    assert outcome.stdout == ""  # no STATE: the orchestrator replays the whole input
    check_security(outcome, emails=[email_of(i) for i in range(0, 300, 7)])
    # The replay, once Omnisend behaves again, leaves every valid record in the sandbox.
    sandbox.configure(stop_batches=False)
    replay = TargetRun(
        tmp_path, base_config(sandbox, tmp_path / "replay", max_requests_per_minute=RPM), "replay"
    )
    again = replay.run(dataset.text(state_every=STATE_EVERY))
    assert_clean_exit(again)
    dump = sandbox.dump()
    result = account(
        "faults: batches always stopped, run fails, replay",
        dataset,
        dump,
        again.reject_rows(),
        **fault_figures(dump),
    )
    assert result.lost == 0
