"""Newer values never lose: per contact, the values Omnisend ends with are the latest record's.

Each scenario feeds the real CLI rounds of records for the same contacts (a round a batch, the
last round leaving some fields out), against a sandbox that stops a batch after item errors
(Omnisend's rule: its unprocessed items must be resubmitted, while later batches with newer
records for the same emails already finished), answers after the request timeout (so a retried
`POST /batches` leaves a duplicate batch that appears later) or fails requests with 5xx. The
sandbox's contacts must then hold, per contact, what sending every record in input order gives:
the latest value of each field a record carried. Counts come from the sandbox's dump and the
rejects file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.harness import (
    Dataset,
    TargetRun,
    account,
    assert_clean_exit,
    base_config,
    check_security,
    email_of,
    identifier,
    record_message,
    schema_message,
    singer_text,
    state_message,
)
from tests.reliability.test_faults import RPM, TIME_SCALE, fault_figures

pytestmark = pytest.mark.reliability

CONTACTS = 100  # a round is one batch
ROUNDS = 5
BAD = 12  # emails Omnisend refuses, first in round 0: their batch stops after them
OTHER_STREAM = "other"
COUNTRIES = {"GB": "United Kingdom", "FR": "France", "DE": "Germany"}


def bad_email(index: int) -> str:
    """An email the sandbox refuses (item_errors)."""
    return f"refused{index:03d}@example.com"


def round_records(bad: int = 0, contacts: int = CONTACTS) -> list[dict[str, Any]]:
    """`bad` refused emails, then rounds holding every contact once, `first_name`
    `Name<i>-r<r>`; in the last round every fifth record has no first name and every seventh no
    country (an upsert keeps the earlier ones)."""
    records: list[dict[str, Any]] = [
        {"n": index, "email": bad_email(index), "first_name": "Refused", "country": "GB"}
        for index in range(bad)
    ]
    for round_ in range(ROUNDS):
        last = round_ == ROUNDS - 1
        for index in range(contacts):
            records.append(
                {
                    "n": len(records),
                    "email": email_of(index),
                    "first_name": None if last and index % 5 == 0 else f"Name{index}-r{round_}",
                    "country": None if last and index % 7 == 0 else list(COUNTRIES)[round_ % 3],
                }
            )
    return records


def expected_values(records: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Per accepted email, what applying every record in order leaves (absent fields stay)."""
    expected: dict[str, dict[str, str]] = {}
    for record in records:
        if record["email"].startswith("refused"):
            continue
        values = expected.setdefault(record["email"], {})
        if record["first_name"] is not None:
            values["firstName"] = record["first_name"]
        if record["country"] is not None:
            values["countryCode"] = record["country"]
            values["country"] = COUNTRIES[record["country"]]
    return expected


def stale_contacts(dump: dict[str, Any], expected: dict[str, dict[str, str]]) -> list[str]:
    """Emails whose contact does not hold the values `expected` says."""
    held = {identifier(c, "email"): c for c in dump["contacts"]}
    stale = []
    for email, values in expected.items():
        contact = held.get(email)
        if contact is None or any(contact.get(k) != v for k, v in values.items()):
            stale.append(email)
    return stale


@dataclass
class OrderScenario:
    """A fault and the streams the rounds come from."""

    name: str
    sandbox: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    api_version: str = "2026-03-15"
    bad: int = 0  # refused emails before the first round: its batch stops
    contacts: int = CONTACTS  # per round (fewer than a batch: rounds share batches)
    # round → stream; by default every round is the same stream
    streams: tuple[str, ...] = ("segment",) * ROUNDS


SCENARIOS = [
    OrderScenario("order: stopped batch resubmitted (2026)", bad=BAD),
    OrderScenario("order: stopped batch resubmitted (v5)", bad=BAD, api_version="v5"),
    OrderScenario(
        "order: stopped batch, rounds in two streams (2026)",
        bad=BAD,
        streams=("segment", OTHER_STREAM, "segment", OTHER_STREAM, "segment"),
    ),
    OrderScenario(
        "order: submit timeouts leave late duplicates (2026)",
        sandbox={"slow_rate": 0.5, "slow_seconds": 1.0},
        config={"request_timeout": 0.4},
    ),
    OrderScenario(
        "order: submit timeouts leave late duplicates (v5)",
        sandbox={"slow_rate": 0.5, "slow_seconds": 1.0},
        config={"request_timeout": 0.4},
        api_version="v5",
    ),
    OrderScenario("order: duplicates in one batch, the last lacking fields (2026)", contacts=40),
    OrderScenario(
        "order: duplicates in one batch, the last lacking fields (v5)",
        contacts=40,
        api_version="v5",
    ),
    OrderScenario("order: 5xx at 25% (2026)", sandbox={"error_rate": 0.25}),
    OrderScenario("order: 5xx at 25% (v5)", sandbox={"error_rate": 0.25}, api_version="v5"),
]


def messages(records: list[dict[str, Any]], scenario: OrderScenario) -> str:
    """SCHEMA of each stream, each round's records on its stream, a STATE per 100 records."""
    streams = scenario.streams
    out = [schema_message(stream=name) for name in dict.fromkeys(streams)]
    for record in records:
        round_ = max(0, record["n"] - scenario.bad) // scenario.contacts
        out.append(record_message(record, streams[round_]))
        if (record["n"] + 1) % 100 == 0:
            out.append(state_message(record["n"]))
    out.append(state_message(records[-1]["n"]))
    return singer_text(out)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_the_latest_values_win(
    sandbox_factory: Any, tmp_path: Path, scenario: OrderScenario
) -> None:
    refused = {bad_email(i): [400, "Identifier is blocked"] for i in range(scenario.bad)}
    sandbox = sandbox_factory(
        time_scale=TIME_SCALE, seed=11, item_errors=refused, **scenario.sandbox
    )
    records = round_records(scenario.bad, scenario.contacts)
    config = base_config(
        sandbox,
        tmp_path / "run",
        scenario.api_version,
        max_requests_per_minute=RPM,
        **{"batch_size_rows": 100, "max_batches_in_flight": 4, **scenario.config},
    )
    outcome = TargetRun(tmp_path, config).run(messages(records, scenario), timeout=240)
    assert_clean_exit(outcome)
    check_security(outcome, emails=[email_of(i) for i in range(0, scenario.contacts, 7)])
    dump = sandbox.dump()
    stale = stale_contacts(dump, expected_values(records))
    figures = fault_figures(dump)
    result = account(
        scenario.name,
        Dataset(records),
        dump,
        outcome.reject_rows(),
        stale=len(stale),
        **figures,
    )
    assert result.lost == 0, result.as_row()
    assert result.rejected == scenario.bad
    assert not stale, f"{len(stale)} contacts hold older values, e.g. {stale[0]}"
    assert outcome.states[-1] == {"bookmarks": {"segment": {"last": len(records) - 1}}}
    if scenario.bad or scenario.sandbox:
        faults = sum(figures["faults"].values()) + figures["stopped_batches"]
        assert faults > 0, "the fault never happened"
