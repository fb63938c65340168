"""Sandbox batches and the rate limiter over real HTTP."""

from __future__ import annotations

import time
from typing import Any

import requests

from target_omnisend.sandbox.server import SandboxServer

HTTP = requests.Session()
HEADERS = {"Authorization": "Omnisend-API-Key brand1-secret", "Omnisend-Version": "2026-03-15"}


def item(email: str, status: str = "subscribed") -> dict[str, Any]:
    """One batch item."""
    return {"identifiers": [{"type": "email", "id": email, "sendWelcomeMessage": False,
                             "channels": {"email": {"status": status}}}]}  # fmt: skip


def create(server: SandboxServer, items: list[Any], **headers: str) -> requests.Response:
    body = {"method": "POST", "endpoint": "contacts", "items": items}
    return HTTP.post(server.api_url + "/batches", json=body, headers={**HEADERS, **headers})


def get(server: SandboxServer, path: str, key: str = "brand1-secret", **params: Any) -> Any:
    headers = {**HEADERS, "Authorization": f"Omnisend-API-Key {key}"}
    return HTTP.get(server.api_url + path, params=params, headers=headers)


def wait_done(server: SandboxServer, batch_id: str) -> dict[str, Any]:
    """Poll until the batch ends (bounded)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        batch = get(server, f"/batches/{batch_id}").json()
        if batch["status"] in ("finished", "stopped"):
            return batch
        time.sleep(0.02)
    raise AssertionError("batch did not end")


def test_poller_sees_every_batch_state(sandbox_factory: Any) -> None:
    server = sandbox_factory(batch_processing_delay=0.3, batch_in_progress_seconds=0.3)
    created = create(server, [item("a@x.com"), item("b@x.com")])
    assert created.status_code == 201
    assert created.json()["totalCount"] == 2
    batch_id = created.json()["batchID"]
    seen: list[str] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (not seen or seen[-1] != "finished"):
        status = get(server, f"/batches/{batch_id}").json()["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        time.sleep(0.02)
    assert seen == ["pending", "inProgress", "finished"]
    batch = get(server, f"/batches/{batch_id}").json()
    assert batch["finishedCount"] == 2
    assert batch["errorsCount"] == 0
    assert {"createdAt", "startedAt", "endedAt"} <= set(batch)


def test_items_echo_requests_and_split_errors(sandbox_factory: Any) -> None:
    server = sandbox_factory(batch_processing_delay=0.0)
    items = [item("ok@x.com"), item("broken"), {"identifiers": [{"type": "email"}]}]
    batch_id = create(server, items).json()["batchID"]
    batch = wait_done(server, batch_id)
    assert (batch["finishedCount"], batch["errorsCount"]) == (3, 2)
    detail = get(server, f"/batches/{batch_id}/items").json()
    assert [r["request"] for r in detail["responses"]] == [items[0]]
    assert detail["responses"][0]["responseCode"] == 201
    assert [e["request"] for e in detail["errors"]] == items[1:]
    assert {e["responseCode"] for e in detail["errors"]} == {400}
    assert detail["errors"][0]["response"]["errors"][0]["field"] == "identifiers[0].id"
    assert len({e["itemID"] for e in detail["errors"] + detail["responses"]}) == 3


def test_batch_stops_when_errors_pass_the_threshold(sandbox_factory: Any) -> None:
    server = sandbox_factory(batch_processing_delay=0.0, batch_stop_min_errors=5)
    items = [item(f"bad{i}") for i in range(20)] + [item("late@x.com")]
    batch = wait_done(server, create(server, items).json()["batchID"])
    assert batch["status"] == "stopped"
    assert batch["finishedCount"] < 21
    assert server.dump()["contacts"] == []


def test_batch_validation_and_404(sandbox: SandboxServer) -> None:
    too_many = create(sandbox, [item(f"u{i}@x.com") for i in range(101)])
    assert too_many.status_code == 400
    assert too_many.json()["errors"][0]["field"] == "items"
    assert create(sandbox, []).status_code == 400
    bad = {"method": "GET", "endpoint": "x", "items": [{}]}
    wrong = HTTP.post(sandbox.api_url + "/batches", json=bad, headers=HEADERS)
    assert {e["field"] for e in wrong.json()["errors"]} == {"method", "endpoint"}
    assert get(sandbox, "/batches/nope").status_code == 404
    assert get(sandbox, "/batches/nope/items").status_code == 404


def test_list_batches_filters_and_paging(sandbox_factory: Any) -> None:
    server = sandbox_factory(batch_processing_delay=0.0)
    ids = [create(server, [item(f"l{i}@x.com")]).json()["batchID"] for i in range(3)]
    for batch_id in ids:
        wait_done(server, batch_id)
    listed = get(server, "/batches", endpoint="contacts", status="finished").json()
    assert [b["batchID"] for b in listed["batches"]] == ids[::-1]
    assert get(server, "/batches", status="pending").json()["batches"] == []
    page = get(server, "/batches", limit=2, offset=0).json()
    assert len(page["batches"]) == 2
    assert "offset=2" in page["paging"]["next"]
    assert get(server, "/batches", limit=101).status_code == 400


def test_twenty_thousand_contacts_are_processed(sandbox_factory: Any) -> None:
    server = sandbox_factory(batch_processing_delay=0.0, rate_limit_per_minute=100_000)
    ids = [
        create(server, [item(f"c{b}-{i}@x.com") for i in range(100)]).json()["batchID"]
        for b in range(200)
    ]
    assert all(wait_done(server, batch_id)["finishedCount"] == 100 for batch_id in ids[-3:])
    for batch_id in ids:
        wait_done(server, batch_id)
    assert len(server.dump()["contacts"]) == 20_000


def test_limiter_window_boundary(sandbox_factory: Any) -> None:
    server = sandbox_factory(rate_limit_per_minute=400, time_scale=30)  # a 2 s window
    start = time.monotonic()
    answers = [get(server, "/contacts", limit=1).status_code for _ in range(400)]
    refused = get(server, "/contacts", limit=1)
    elapsed = time.monotonic() - start
    assert answers == [200] * 400
    if elapsed < 2.0:  # the window is still full (only meaningful on a fast enough run)
        assert refused.status_code == 429
        assert refused.json()["type"] == "https://problems.omnisend.com/rate-limit"
        assert refused.json()["retryAfter"] >= 1
        assert int(refused.headers["Retry-After"]) >= 1
    time.sleep(max(0.0, 2.05 - (time.monotonic() - start)))
    assert get(server, "/contacts", limit=1).status_code == 200


def test_limiter_refuses_until_the_oldest_leaves(sandbox_factory: Any) -> None:
    server = sandbox_factory(rate_limit_per_minute=5, time_scale=30)  # a 2 s window
    assert [get(server, "/contacts").status_code for _ in range(5)] == [200] * 5
    assert get(server, "/contacts").status_code == 429
    time.sleep(2.05)
    assert get(server, "/contacts").status_code == 200
    assert get(server, "/contacts").status_code == 200  # the 2nd..5th left too
    dump = server.dump()
    assert dump["rate_limited"] == 1
    assert dump["requests"]["GET /api/contacts"] == {"200": 7, "429": 1}


def test_two_keys_of_one_brand_share_the_budget(sandbox_factory: Any) -> None:
    server = sandbox_factory(rate_limit_per_minute=4)
    assert get(server, "/contacts", key="shop-one").status_code == 200
    assert get(server, "/contacts", key="shop-two").status_code == 200
    assert get(server, "/contacts", key="shop-one").status_code == 200
    assert get(server, "/contacts", key="shop-two").status_code == 200
    assert get(server, "/contacts", key="shop-three").status_code == 429
    assert get(server, "/contacts", key="other-one").status_code == 200


def test_admin_endpoints_are_not_rate_limited(sandbox_factory: Any) -> None:
    server = sandbox_factory(rate_limit_per_minute=1)
    assert get(server, "/contacts").status_code == 200
    for _ in range(5):
        assert HTTP.get(server.url + "/_sandbox/dump").status_code == 200
    assert server.dump()["requests_total"] == 1
