"""The sandbox's v5 API, tags and segments endpoints, over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests

from target_omnisend.sandbox.server import SandboxServer

HTTP = requests.Session()
V5 = {"X-API-KEY": "brand1-secret"}
HEADERS = {"Authorization": "Omnisend-API-Key brand1-secret", "Omnisend-Version": "2026-03-15"}


def v5_contact(email: str, status: str | None = None, **fields: Any) -> dict[str, Any]:
    identifier: dict[str, Any] = {"type": "email", "id": email}
    if status:
        identifier["channels"] = {"email": {"status": status}}
    return {"identifiers": [identifier], **fields}


def api(server: SandboxServer, method: str, path: str, body: Any = None, **params: Any) -> Any:
    return HTTP.request(method, server.api_url + path, json=body, params=params, headers=HEADERS)


def eventually(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_v5_contact_shapes_and_headers(sandbox: SandboxServer) -> None:
    answer = HTTP.post(sandbox.v5_url + "/contacts", json=v5_contact("a@x.com"), headers=V5)
    assert answer.status_code == 200
    body = answer.json()
    assert "contactID" in body
    assert "id" not in body
    channel = body["identifiers"][0]["channels"]["email"]
    assert channel["status"] == "subscribed"
    assert "statusDate" in channel
    for name in ("X-Rate-Limit-Limit", "X-Rate-Limit-Remaining", "X-Rate-Limit-Reset"):
        assert name in answer.headers
    assert answer.headers["X-Rate-Limit-Limit"] == "400"
    fetched = HTTP.get(f"{sandbox.v5_url}/contacts/{body['contactID']}", headers=V5)
    assert fetched.json()["contactID"] == body["contactID"]
    listed = HTTP.get(sandbox.v5_url + "/contacts", params={"email": "a@x.com"}, headers=V5)
    assert [c["contactID"] for c in listed.json()["contacts"]] == [body["contactID"]]


def test_v5_status_date_is_honoured(sandbox: SandboxServer) -> None:
    body = v5_contact("d@x.com")
    body["identifiers"][0]["channels"] = {
        "email": {"status": "unsubscribed", "statusDate": "2024-01-01T00:00:00Z"}
    }
    answer = HTTP.post(sandbox.v5_url + "/contacts", json=body, headers=V5).json()
    assert answer["identifiers"][0]["channels"]["email"]["statusDate"] == "2024-01-01T00:00:00Z"


def test_v5_missing_status_switch(sandbox_factory: Any) -> None:
    for setting in ("subscribed", "nonSubscribed"):
        server = sandbox_factory(v5_missing_status=setting)
        answer = HTTP.post(server.v5_url + "/contacts", json=v5_contact("m@x.com"), headers=V5)
        assert answer.json()["identifiers"][0]["channels"]["email"]["status"] == setting


def test_v5_errors_auth_and_rate_limit(sandbox_factory: Any) -> None:
    server = sandbox_factory(rate_limit_per_minute=2)
    unauthorized = HTTP.get(server.v5_url + "/contacts")
    assert unauthorized.status_code == 401
    assert set(unauthorized.json()) == {"error"}
    invalid = HTTP.post(server.v5_url + "/contacts", json=v5_contact("nope"), headers=V5)
    assert invalid.status_code == 400
    assert "identifiers[0].id" in invalid.json()["fields"]
    assert isinstance(invalid.json()["error"], str)
    HTTP.get(server.v5_url + "/contacts", headers=V5)
    limited = HTTP.get(server.v5_url + "/contacts", headers=V5)
    assert limited.status_code == 429
    assert "error" in limited.json()
    assert limited.headers["X-Rate-Limit-Remaining"] == "0"
    assert int(limited.headers["Retry-After"]) >= 1
    assert HTTP.post(server.v5_url + "/contacts/tags", headers=V5).status_code == 429


def test_v5_has_no_tags_endpoint(sandbox: SandboxServer) -> None:
    body = {"tags": ["a"], "emails": ["a@x.com"]}
    assert HTTP.post(sandbox.v5_url + "/contacts/tags", json=body, headers=V5).status_code in (
        404,
        405,
    )


def test_v5_batches_up_to_1000_items(sandbox_factory: Any) -> None:
    server = sandbox_factory(batch_processing_delay=0.0)
    items = [v5_contact(f"v{i}@x.com", "subscribed") for i in range(1000)]
    body = {"method": "POST", "endpoint": "contacts", "items": items}
    created = HTTP.post(server.v5_url + "/batches", json=body, headers=V5)
    assert created.status_code == 200
    assert created.json()["totalCount"] == 1000
    batch_id = created.json()["batchID"]

    def finished() -> bool:
        answer = HTTP.get(f"{server.v5_url}/batches/{batch_id}", headers=V5).json()
        return answer["status"] == "finished"

    eventually(finished)
    detail = HTTP.get(f"{server.v5_url}/batches/{batch_id}/items", headers=V5).json()
    assert len(detail["responses"]) == 1000
    assert "contactID" in detail["responses"][0]["response"]
    body["items"] = [*items, v5_contact("one-too-many@x.com")]
    too_many = HTTP.post(server.v5_url + "/batches", json=body, headers=V5)
    assert too_many.status_code == 400
    assert "items" in too_many.json()["fields"]


def test_tags_are_added_and_removed_asynchronously(sandbox_factory: Any) -> None:
    server = sandbox_factory(tags_apply_delay=0.3)
    for email in ("a@x.com", "b@x.com"):
        api(server, "POST", "/contacts", {"identifiers": [{"type": "email", "id": email}]})
    added = api(server, "POST", "/contacts/tags",
                {"tags": ["vip"], "emails": ["a@x.com", "b@x.com", "ghost@x.com"]})  # fmt: skip
    assert added.status_code == 202
    assert added.content == b""
    assert all(c["tags"] == [] for c in server.dump()["contacts"])  # not yet applied
    eventually(lambda: all(c["tags"] == ["vip"] for c in server.dump()["contacts"]))
    assert server.dump()["skipped_tag_emails"] == ["ghost@x.com"]
    removed = api(server, "DELETE", "/contacts/tags", {"tags": ["vip"], "emails": ["a@x.com"]})
    assert removed.status_code == 202
    eventually(lambda: [c["tags"] for c in server.dump()["contacts"]] == [[], ["vip"]])
    operations = server.dump()["tag_operations"]
    assert [(o["action"], o["applied"], o["skipped"]) for o in operations] == [
        ("add", 2, 1), ("remove", 1, 0)
    ]  # fmt: skip


def test_tags_validation_and_own_limit(sandbox_factory: Any) -> None:
    server = sandbox_factory(tags_rate_limit_per_minute=3)
    assert (
        api(server, "POST", "/contacts/tags", {"tags": [], "emails": ["a@x.com"]}).status_code
        == 400
    )
    assert api(server, "POST", "/contacts/tags", {"tags": ["a"]}).status_code == 400
    many = {"tags": ["a"], "emails": [f"e{i}@x.com" for i in range(251)]}
    assert api(server, "POST", "/contacts/tags", many).status_code == 400
    limited = api(server, "POST", "/contacts/tags", {"tags": ["a"], "emails": ["a@x.com"]})
    assert limited.status_code == 429
    assert limited.json()["retryAfter"] >= 1
    assert api(server, "GET", "/contacts").status_code == 200  # the brand budget is not spent


def segment_body(tag: str) -> dict[str, Any]:
    filters = [{"property": "tags", "operator": "anyOf", "value": [tag]}]
    groups = [{"conditions": [{"entity": "contact", "filters": filters}]}]
    return {"name": f"Tag {tag}", "conditionGroups": groups}


def test_segments_lifecycle_and_members(sandbox_factory: Any) -> None:
    server = sandbox_factory(segment_build_seconds=0.3)
    for email, tags in (("in@x.com", ["club"]), ("out@x.com", ["other"])):
        api(server, "POST", "/contacts", {"identifiers": [{"type": "email", "id": email}],
                                          "tags": tags})  # fmt: skip
    created = api(server, "POST", "/segments", segment_body("club"))
    assert created.status_code == 201
    segment = created.json()
    assert segment["status"] == "building"
    segment_id = segment["segmentID"]
    assert api(server, "PUT", f"/segments/{segment_id}", segment_body("x")).status_code == 409
    assert api(server, "DELETE", f"/segments/{segment_id}").status_code == 409
    eventually(lambda: api(server, "GET", f"/segments/{segment_id}").json()["status"] == "ready")
    members = api(server, "GET", "/contacts", segmentID=segment_id).json()["contacts"]
    assert [m["email"] for m in members] == ["in@x.com"]
    stats = api(server, "GET", f"/segments/{segment_id}/statistics").json()
    assert stats == {"contactsCount": 1}
    assert [s["segmentID"] for s in api(server, "GET", "/segments").json()["segments"]] == [
        segment_id
    ]
    updated = api(server, "PUT", f"/segments/{segment_id}", segment_body("other"))
    assert updated.status_code == 200
    eventually(lambda: api(server, "GET", f"/segments/{segment_id}").json()["status"] == "ready")
    members = api(server, "GET", "/contacts", segmentID=segment_id).json()["contacts"]
    assert [m["email"] for m in members] == ["out@x.com"]
    assert api(server, "DELETE", f"/segments/{segment_id}").status_code == 204
    assert api(server, "GET", f"/segments/{segment_id}").status_code == 404
    assert api(server, "GET", "/contacts", segmentID=segment_id).status_code == 404
    assert api(server, "POST", "/segments", {"name": "no rules"}).status_code == 400


def test_segment_limits(sandbox_factory: Any) -> None:
    server = sandbox_factory(segments_write_per_minute=1, segments_read_per_minute=2)
    assert api(server, "POST", "/segments", segment_body("a")).status_code == 201
    assert api(server, "POST", "/segments", segment_body("b")).status_code == 429
    assert api(server, "GET", "/segments").status_code == 200
    assert api(server, "GET", "/segments").status_code == 200
    assert api(server, "GET", "/segments").status_code == 429


def test_tags_for_a_segment(sandbox_factory: Any) -> None:
    server = sandbox_factory(segment_build_seconds=0.0, tags_apply_delay=0.0)
    api(server, "POST", "/contacts", {"identifiers": [{"type": "email", "id": "s@x.com"}],
                                      "tags": ["club"]})  # fmt: skip
    segment_id = api(server, "POST", "/segments", segment_body("club")).json()["segmentID"]
    assert api(server, "POST", "/contacts/tags", {"tags": ["gold"], "segmentID": segment_id}
               ).status_code == 202  # fmt: skip
    eventually(lambda: server.dump()["contacts"][0]["tags"] == ["club", "gold"])
