"""Injected faults, the time scale and the ``omnisend-sandbox`` command, over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from target_omnisend.sandbox.server import SandboxServer

HTTP = requests.Session()
HEADERS = {"Authorization": "Omnisend-API-Key brand1-secret", "Omnisend-Version": "2026-03-15"}
V5 = {"X-API-KEY": "brand1-secret"}


def item(email: str) -> dict[str, Any]:
    return {"identifiers": [{"type": "email", "id": email,
                             "channels": {"email": {"status": "subscribed"}}}]}  # fmt: skip


def run_batch(server: SandboxServer, items: list[Any]) -> dict[str, Any]:
    body = {"method": "POST", "endpoint": "contacts", "items": items}
    batch_id = HTTP.post(server.api_url + "/batches", json=body, headers=HEADERS).json()["batchID"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = HTTP.get(f"{server.api_url}/batches/{batch_id}/items", headers=HEADERS).json()
        if found["status"] in ("finished", "stopped"):
            return found
        time.sleep(0.02)
    raise AssertionError("batch did not end")


def test_error_rate_gives_500_or_503_in_each_generation(sandbox_factory: Any) -> None:
    server = sandbox_factory(error_rate=1.0, seed=1)
    answers = [HTTP.get(server.api_url + "/contacts", headers=HEADERS) for _ in range(10)]
    assert {a.status_code for a in answers} <= {500, 503}
    assert {a.status_code for a in answers} == {500, 503}
    assert all(a.json()["status"] == a.status_code for a in answers)
    v5 = HTTP.get(server.v5_url + "/contacts", headers=V5)
    assert v5.status_code in (500, 503)
    assert "error" in v5.json()
    assert server.dump()["faults_injected"]["error"] == 11


def test_faults_switch_on_and_off_through_the_admin_endpoint(sandbox: SandboxServer) -> None:
    assert HTTP.post(sandbox.url + "/_sandbox/config", json={"error_rate": 1.0}).ok
    assert HTTP.get(sandbox.api_url + "/contacts", headers=HEADERS).status_code in (500, 503)
    assert HTTP.post(sandbox.url + "/_sandbox/config", json={"error_rate": 0.0}).ok
    assert HTTP.get(sandbox.api_url + "/contacts", headers=HEADERS).status_code == 200


def test_seeded_faults_repeat(sandbox_factory: Any) -> None:
    def pattern() -> list[int]:
        server = sandbox_factory(error_rate=0.5, seed=7)
        return [HTTP.get(server.api_url + "/contacts", headers=HEADERS).status_code
                for _ in range(12)]  # fmt: skip

    first = pattern()
    assert first == pattern()
    assert 200 in first
    assert {500, 503} & set(first)


def test_slow_answers_hit_client_timeouts(sandbox_factory: Any) -> None:
    server = sandbox_factory(slow_rate=1.0, slow_seconds=0.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(server.api_url + "/contacts", headers=HEADERS, timeout=0.1)
    answer = requests.get(server.api_url + "/contacts", headers=HEADERS, timeout=5)
    assert answer.status_code == 200


def test_dropped_connections(sandbox_factory: Any) -> None:
    server = sandbox_factory(drop_rate=1.0)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(server.api_url + "/contacts", headers=HEADERS, timeout=5)
    server.configure(drop_rate=0.0)
    assert requests.get(server.api_url + "/contacts", headers=HEADERS, timeout=5).ok
    assert server.dump()["requests"]["GET /api/contacts"] == {"dropped": 1, "200": 1}


def test_a_stopped_sandbox_closes_keep_alive_connections(sandbox_factory: Any) -> None:
    server = sandbox_factory()
    url = server.api_url + "/contacts"
    with requests.Session() as session:
        assert session.get(url, headers=HEADERS, timeout=5).ok
        server.stop()
        with pytest.raises(requests.exceptions.ConnectionError):
            session.get(url, headers=HEADERS, timeout=5)


def test_stop_batches(sandbox_factory: Any) -> None:
    server = sandbox_factory(stop_batches=True, batch_processing_delay=0.0)
    batch = run_batch(server, [item(f"s{i}@x.com") for i in range(5)])
    assert batch["status"] == "stopped"
    assert batch["finishedCount"] < 5


def test_item_errors_for_chosen_emails(sandbox_factory: Any) -> None:
    server = sandbox_factory(
        batch_processing_delay=0.0, item_errors={"bad@x.com": [422, "Blocked address"]}
    )
    batch = run_batch(server, [item("ok@x.com"), item("bad@x.com")])
    assert batch["status"] == "finished"
    assert [e["request"] for e in batch["errors"]] == [item("bad@x.com")]
    assert batch["errors"][0]["responseCode"] == 422
    assert batch["errors"][0]["response"]["error"] == "Blocked address"
    assert [c["identifiers"][0]["id"] for c in server.dump()["contacts"]] == ["ok@x.com"]


def test_second_app_spends_the_brand_budget(sandbox_factory: Any) -> None:
    server = sandbox_factory(rate_limit_per_minute=10, time_scale=6, second_app_rpm=60)
    assert HTTP.get(server.api_url + "/contacts", headers=HEADERS).status_code == 200
    time.sleep(1.2)  # the second app spends one slot every 1/6 s of wall time
    answers = [HTTP.get(server.api_url + "/contacts", headers=HEADERS).status_code
               for _ in range(9)]  # fmt: skip
    assert 429 in answers
    assert answers.count(200) < 9


@pytest.mark.parametrize(("scale", "window"), [(1.0, 60), (6.0, 10), (60.0, 1)])
def test_retry_after_is_in_wall_seconds(sandbox_factory: Any, scale: float, window: int) -> None:
    server = sandbox_factory(rate_limit_per_minute=1, time_scale=scale)
    HTTP.get(server.api_url + "/contacts", headers=HEADERS)
    refused = HTTP.get(server.api_url + "/contacts", headers=HEADERS)
    assert refused.status_code == 429
    assert window - 1 <= refused.json()["retryAfter"] <= window
    assert refused.headers["Retry-After"] == str(refused.json()["retryAfter"])
    v5 = HTTP.get(server.v5_url + "/contacts", headers=V5)
    assert window - 1 <= int(v5.headers["X-Rate-Limit-Reset"]) <= window


def test_time_scale_shortens_processing_delays(sandbox_factory: Any) -> None:
    server = sandbox_factory(batch_processing_delay=30.0, time_scale=300.0)
    start = time.monotonic()
    assert run_batch(server, [item("fast@x.com")])["status"] == "finished"
    assert time.monotonic() - start < 5  # 30 sandbox seconds = 0.1 wall seconds


def test_cli_prints_url_first_and_persists(tmp_path: Path) -> None:
    persist = tmp_path / "dump.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "target_omnisend.sandbox.cli", "--port", "0",
         "--time-scale", "10", "--persist", str(persist),
         "--settings", json.dumps({"tags_on_upsert": "merge"})],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert requests.get(url + "/_sandbox/health", timeout=5).json() == {"status": "ok"}
        settings = requests.get(url + "/_sandbox/config", timeout=5).json()
        assert settings["time_scale"] == 10
        assert settings["tags_on_upsert"] == "merge"
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0
    assert json.loads(persist.read_text())["contacts"] == []


def test_cli_rejects_bad_settings() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "target_omnisend.sandbox.cli", "--settings", '{"nope": 1}'],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "nope" in result.stderr
