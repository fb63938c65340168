"""Against the real Omnisend, opt in: `OMNISEND_LIVE_API_KEY=... pytest -m live`.

The contract cases of tests/live_contract.py (upsert, batch states, item errors, tags, a segment,
the status-date rule, redirects, IDN emails) run against a real brand (use a test brand: a few
contacts `live-<time>@example.com` are created). With OMNISEND_LIVE_RECORD=1 their masked
exchanges are written to tests/data/omnisend_live/, and `test_the_sandbox_answers_as_omnisend_did`
replays them against the sandbox, comparing status codes and answer shapes: what Omnisend really
does and what the sandbox does, side by side. The same cases rehearse against the sandbox in
every run, so the suite itself is known to work the day a key is at hand.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from target_omnisend.sandbox.server import SandboxServer
from tests.live_contract import CASES, RECORDINGS, Api, run_case, shape

LIVE_KEY = os.environ.get("OMNISEND_LIVE_API_KEY")
LIVE_URL = os.environ.get("OMNISEND_LIVE_API_URL", "https://api.omnisend.com/api")


@pytest.mark.live
@pytest.mark.skipif(not LIVE_KEY, reason="OMNISEND_LIVE_API_KEY is not set: no real brand to test")
@pytest.mark.parametrize("case", list(CASES))
def test_omnisend_keeps_the_contract(case: str) -> None:
    record_to = RECORDINGS if os.environ.get("OMNISEND_LIVE_RECORD") == "1" else None
    run_case(case, Api(LIVE_URL, str(LIVE_KEY)), record_to)


@pytest.mark.e2e
@pytest.mark.parametrize("case", list(CASES))
def test_the_contract_cases_rehearse_against_the_sandbox(
    sandbox: SandboxServer, tmp_path: Path, case: str
) -> None:
    sandbox.configure(batch_processing_delay=0.1, tags_apply_delay=0, segment_build_seconds=0)
    api_key = "rehearsal-key-SECRET"
    run_case(case, Api(sandbox.api_url, api_key), tmp_path)
    recorded = (tmp_path / f"{case}.json").read_text()
    assert api_key not in recorded
    assert "live-" not in recorded  # every email is pseudonymised (masked-<hash>@domain)
    assert json.loads(recorded)["case"] == case


def recordings() -> list[Any]:
    files = sorted(RECORDINGS.glob("*.json"))
    if not files:
        reason = (
            "no recorded Omnisend answers yet: run OMNISEND_LIVE_API_KEY=... "
            "OMNISEND_LIVE_RECORD=1 pytest -m live"
        )
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="none-recorded")]
    return [pytest.param(path, id=path.stem) for path in files]


@pytest.mark.e2e
@pytest.mark.parametrize("recording", recordings())
def test_the_sandbox_answers_as_omnisend_did(sandbox: SandboxServer, recording: Path) -> None:
    """Replay a recorded case's requests; the sandbox must answer with the same status and shape.

    Masked emails are still unique per recording (the case's time is in them), so replayed
    upserts create and update the same contacts the recording did.
    """
    sandbox.configure(batch_processing_delay=0, tags_apply_delay=0, segment_build_seconds=0)
    api = Api(sandbox.api_url, "replay-key")
    for exchange in json.loads(recording.read_text())["exchanges"]:
        if not exchange["replay"]:
            continue
        status, answer = api.call(exchange["method"], exchange["path"], exchange["body"])
        assert status == exchange["status"], exchange
        if exchange["answer"] is not None and status < 300:
            assert shape(answer).keys() >= shape(exchange["answer"]).keys(), exchange
