"""The sandbox's 2026 core over real HTTP: auth, versions, contacts, switches, admin."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from target_omnisend.sandbox.server import SandboxServer

VERSION = "2026-03-15"
HTTP = requests.Session()  # keep-alive, as real clients do
HEADERS = {"Authorization": "Omnisend-API-Key brand1-secret", "Omnisend-Version": VERSION}


def contact(email: str, status: str | None = "subscribed", **fields: Any) -> dict[str, Any]:
    """A contact body with one email identifier."""
    identifier: dict[str, Any] = {"type": "email", "id": email, "sendWelcomeMessage": False}
    if status is not None:
        identifier["channels"] = {"email": {"status": status}}
    return {"identifiers": [identifier], **fields}


def post(server: SandboxServer, path: str, body: Any, **headers: str) -> requests.Response:
    return HTTP.post(server.api_url + path, json=body, headers={**HEADERS, **headers})


def get(server: SandboxServer, path: str, **params: Any) -> requests.Response:
    return HTTP.get(server.api_url + path, params=params, headers=HEADERS)


def stored(server: SandboxServer, email: str) -> dict[str, Any]:
    found = [c for c in server.dump()["contacts"] if c["identifiers"][0]["id"] == email]
    assert len(found) == 1
    return found[0]


def test_missing_or_malformed_key_is_401(sandbox: SandboxServer) -> None:
    no_key = HTTP.get(sandbox.api_url + "/contacts", headers={"Omnisend-Version": VERSION})
    bad_key = get(sandbox, "/contacts")
    bad_key = HTTP.get(
        sandbox.api_url + "/contacts",
        headers={"Authorization": "Omnisend-API-Key nodash", "Omnisend-Version": VERSION},
    )
    for answer in (no_key, bad_key):
        assert answer.status_code == 401
        assert answer.json()["type"].endswith("/unauthorized")
        assert answer.json()["status"] == 401
        assert answer.json()["instance"].startswith("urn:omnisend:request:")


def test_forbidden_key_is_403_and_allowlist(sandbox_factory: Any) -> None:
    server = sandbox_factory(forbidden_keys=["brand1-secret"], api_keys=["brand1-secret", "b2-x"])
    assert get(server, "/contacts").status_code == 403
    other = HTTP.get(
        server.api_url + "/contacts",
        headers={"Authorization": "Omnisend-API-Key b3-y", "Omnisend-Version": VERSION},
    )
    assert other.status_code == 401


def test_version_header_required_unknown_and_retired(sandbox: SandboxServer) -> None:
    auth = {"Authorization": HEADERS["Authorization"]}
    missing = HTTP.get(sandbox.api_url + "/contacts", headers=auth)
    assert missing.status_code == 400
    assert missing.json()["errors"][0]["field"] == "Omnisend-Version"
    unknown = HTTP.get(
        sandbox.api_url + "/contacts", headers={**auth, "Omnisend-Version": "1999-01-01"}
    )
    assert unknown.status_code == 400
    sandbox.configure(retired_versions=[VERSION])
    assert get(sandbox, "/contacts").status_code == 410


def test_upsert_creates_then_updates_and_email_is_case_sensitive(sandbox: SandboxServer) -> None:
    first = post(sandbox, "/contacts", contact("Jane@x.com", firstName="Jane"))
    again = post(sandbox, "/contacts", contact("Jane@x.com", lastName="Doe"))
    lower = post(sandbox, "/contacts", contact("jane@x.com"))
    assert (first.status_code, again.status_code, lower.status_code) == (201, 200, 201)
    assert first.json()["id"] == again.json()["id"] != lower.json()["id"]
    assert again.json()["firstName"] == "Jane"
    assert again.json()["lastName"] == "Doe"
    assert len(sandbox.dump()["contacts"]) == 2


def test_created_at_is_stored_as_external_created(sandbox: SandboxServer) -> None:
    post(sandbox, "/contacts", contact("a@x.com", createdAt="2020-01-01T00:00:00Z"))
    assert stored(sandbox, "a@x.com")["customProperties"]["externalCreated"] == (
        "2020-01-01T00:00:00Z"
    )


def test_missing_status_new_is_non_subscribed_existing_untouched(sandbox: SandboxServer) -> None:
    post(sandbox, "/contacts", contact("new@x.com", status=None))
    post(sandbox, "/contacts", contact("old@x.com", status="subscribed"))
    post(sandbox, "/contacts", contact("old@x.com", status=None))
    assert stored(sandbox, "new@x.com")["identifiers"][0]["channels"]["email"]["status"] == (
        "nonSubscribed"
    )
    assert stored(sandbox, "old@x.com")["identifiers"][0]["channels"]["email"]["status"] == (
        "subscribed"
    )


def test_welcome_message_defaults_to_true(sandbox: SandboxServer) -> None:
    body = {"identifiers": [{"type": "email", "id": "w@x.com",
                             "channels": {"email": {"status": "subscribed"}}}]}  # fmt: skip
    post(sandbox, "/contacts", body)
    post(sandbox, "/contacts", contact("quiet@x.com"))
    welcomed = [w["id"] for w in sandbox.dump()["welcome_messages"]]
    assert welcomed == ["w@x.com"]


def test_identifier_owned_by_another_contact_is_ignored(sandbox: SandboxServer) -> None:
    phone = {"type": "phone", "id": "+37060000001", "channels": {"sms": {"status": "subscribed"}}}
    first = post(sandbox, "/contacts", {"identifiers": [phone], "firstName": "Owner"})
    second = post(sandbox, "/contacts", {"identifiers": [phone], "firstName": "Thief"})
    third = post(sandbox, "/contacts", {**contact("b@x.com"), "identifiers": [
        contact("b@x.com")["identifiers"][0], phone]})  # fmt: skip
    assert first.status_code == 201
    assert second.status_code == 200
    assert third.status_code == 201
    dump = sandbox.dump()
    assert len(dump["contacts"]) == 2
    assert [i["id"] for i in dump["ignored_identifiers"]] == ["+37060000001"] * 2
    assert dump["contacts"][0]["firstName"] == "Owner"
    assert len(dump["contacts"][1]["identifiers"]) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"identifiers": [{"type": "email"}]}, "identifiers[0].id"),
        ({"identifiers": [{"id": "a@x.com"}]}, "identifiers[0].type"),
        ({"identifiers": [{"type": "email", "id": "not-an-email"}]}, "identifiers[0].id"),
        ({"identifiers": [{"type": "phone", "id": "+1 555 0100"}]}, "identifiers[0].id"),
        ({"gender": "x"}, "gender"),
        ({"birthdate": "1990-13-01"}, "birthdate"),
        ({"countryCode": "USA"}, "countryCode"),
        ({"tags": [f"t{i}" for i in range(101)]}, "tags"),
        ({"customProperties": {"bad-name": 1}}, "customProperties.bad-name"),
        ({"customProperties": {"long": "x" * 2049}}, "customProperties.long"),
        ({"customProperties": {"nested": {"a": 1}}}, "customProperties.nested"),
        ({"customProperties": {f"p{i}": i for i in range(201)}}, "customProperties"),
        ({"identifiers": None}, "identifiers"),
    ],
)
def test_validation_problems(sandbox: SandboxServer, change: dict[str, Any], field: str) -> None:
    body = {**contact("v@x.com"), **change}
    if change.get("identifiers", 1) is None:
        del body["identifiers"]
    answer = post(sandbox, "/contacts", body)
    assert answer.status_code == 400
    problem = answer.json()
    assert problem["type"].endswith("/validation")
    assert field in [e["field"] for e in problem["errors"]]
    assert all(set(e) == {"field", "code", "message"} for e in problem["errors"])
    assert sandbox.dump()["contacts"] == []


def test_invalid_json_and_unknown_route(sandbox: SandboxServer) -> None:
    broken = HTTP.post(
        sandbox.api_url + "/contacts", data=b"{nope", headers={**HEADERS,
                                                              "Content-Type": "application/json"}
    )  # fmt: skip
    assert broken.status_code == 400
    assert broken.json()["status"] == 400
    assert get(sandbox, "/nothing-here").status_code == 404
    assert get(sandbox, "/contacts/ffff").status_code == 404


@pytest.mark.parametrize(("mode", "expected"), [("replace", ["b"]), ("merge", ["a", "b"])])
def test_tags_on_upsert_switch(sandbox_factory: Any, mode: str, expected: list[str]) -> None:
    server = sandbox_factory(tags_on_upsert=mode)
    post(server, "/contacts", contact("t@x.com", tags=["a"]))
    post(server, "/contacts", contact("t@x.com", tags=["b"]))
    assert stored(server, "t@x.com")["tags"] == expected


@pytest.mark.parametrize(("mode", "expected"), [("ignore", "unsubscribed"),
                                                ("override", "subscribed")])  # fmt: skip
def test_older_status_date_switch(sandbox_factory: Any, mode: str, expected: str) -> None:
    server = sandbox_factory(older_status_date=mode)

    def send(status: str, when: str) -> None:
        body = contact("s@x.com")
        body["identifiers"][0]["channels"] = {"email": {"status": status, "statusChangedAt": when}}
        assert post(server, "/contacts", body).status_code in (200, 201)

    send("unsubscribed", "2024-06-01T00:00:00Z")
    send("subscribed", "2023-01-01T00:00:00Z")
    channel = stored(server, "s@x.com")["identifiers"][0]["channels"]["email"]
    assert channel["status"] == expected


def test_list_contacts_filters_and_cursor_paging(sandbox: SandboxServer) -> None:
    for index in range(5):
        tags = ["even"] if index % 2 == 0 else ["odd"]
        post(sandbox, "/contacts", contact(f"p{index}@x.com", tags=tags))
    post(sandbox, "/contacts", contact("u@x.com", status="unsubscribed"))
    assert [c["email"] for c in get(sandbox, "/contacts", email="p3@x.com").json()["contacts"]] == [
        "p3@x.com"
    ]
    assert len(get(sandbox, "/contacts", tag="even").json()["contacts"]) == 3
    assert [c["email"] for c in get(sandbox, "/contacts", status="unsubscribed").json()[
        "contacts"]] == ["u@x.com"]  # fmt: skip
    assert get(sandbox, "/contacts", status="subscribed", tag="odd").status_code == 400
    assert get(sandbox, "/contacts", limit=0).status_code == 400
    assert get(sandbox, "/contacts", limit=251).status_code == 400
    seen, params = [], {"limit": 4}
    while True:
        page = get(sandbox, "/contacts", **params).json()
        seen += [c["email"] for c in page["contacts"]]
        if not page["paging"]["hasMore"]:
            break
        params = {"limit": 4, "after": page["paging"]["cursors"]["after"]}
    assert sorted(seen) == sorted([f"p{i}@x.com" for i in range(5)] + ["u@x.com"])


def test_patch_by_id_and_by_email(sandbox: SandboxServer) -> None:
    created = post(sandbox, "/contacts", contact("pa@x.com", firstName="A", tags=["keep"])).json()
    by_id = HTTP.patch(
        f"{sandbox.api_url}/contacts/{created['id']}", json={"lastName": "B"}, headers=HEADERS
    )
    by_email = HTTP.patch(
        f"{sandbox.api_url}/contacts", params={"email": "pa@x.com"}, json={"city": "Vilnius"},
        headers=HEADERS,
    )  # fmt: skip
    assert by_id.status_code == 200
    assert by_email.status_code == 200
    assert by_email.json()["firstName"] == "A"
    assert by_email.json()["lastName"] == "B"
    assert by_email.json()["tags"] == ["keep"]
    missing = HTTP.patch(
        f"{sandbox.api_url}/contacts", params={"email": "no@x.com"}, json={}, headers=HEADERS
    )
    assert missing.status_code == 404
    post(sandbox, "/contacts", contact("other@x.com"))
    conflict = HTTP.patch(
        f"{sandbox.api_url}/contacts/{created['id']}",
        json={"identifiers": [{"type": "email", "id": "other@x.com"}]}, headers=HEADERS,
    )  # fmt: skip
    assert conflict.status_code == 409


def test_body_over_limit_is_413(sandbox_factory: Any) -> None:
    server = sandbox_factory(max_body_bytes=1000)
    answer = post(server, "/contacts", contact("big@x.com", firstName="x" * 2000))
    assert answer.status_code == 413
    assert answer.json()["status"] == 413


def test_admin_endpoints_dump_config_reset(sandbox: SandboxServer) -> None:
    assert HTTP.get(sandbox.url + "/_sandbox/health").json() == {"status": "ok"}
    post(sandbox, "/contacts", contact("d@x.com"))
    get(sandbox, "/contacts")
    dump = HTTP.get(sandbox.url + "/_sandbox/dump").json()
    assert dump["requests"] == {"POST /api/contacts": {"201": 1}, "GET /api/contacts": {"200": 1}}
    assert dump["requests_total"] == 2
    assert dump["rate_limited"] == 0
    assert dump["contacts"][0]["identifiers"][0]["channels"]["email"]["status"] == "subscribed"
    changed = HTTP.post(sandbox.url + "/_sandbox/config", json={"tags_on_upsert": "merge"})
    assert changed.status_code == 200
    assert sandbox.settings.tags_on_upsert == "merge"
    wrong = HTTP.post(sandbox.url + "/_sandbox/config", json={"no_such_setting": 1})
    assert wrong.status_code == 400
    assert HTTP.post(sandbox.url + "/_sandbox/reset").status_code == 200
    assert sandbox.dump()["contacts"] == []
    assert sandbox.dump()["requests_total"] == 0


def test_persist_path_writes_dump_at_shutdown(tmp_path: Any) -> None:
    from target_omnisend.sandbox.settings import SandboxSettings

    target = tmp_path / "dump.json"
    with SandboxServer(SandboxSettings(persist_path=str(target))) as server:
        post(server, "/contacts", contact("keep@x.com"))
    saved = json.loads(target.read_text())
    assert saved["contacts"][0]["identifiers"][0]["id"] == "keep@x.com"


def test_keep_alive_session_reuses_connection(sandbox: SandboxServer) -> None:
    with requests.Session() as session:
        session.headers.update(HEADERS)
        for _ in range(20):
            assert session.get(sandbox.api_url + "/contacts").status_code == 200
    assert sandbox.dump()["requests_total"] == 20
