"""Answers the sandbox's fast paths must keep: error paths, body decoding, stamps, heap freezing."""

from __future__ import annotations

import gc
import json
import re
import time
from datetime import datetime, timezone
from typing import Any

import pytest
import requests

from target_omnisend.sandbox import heap
from target_omnisend.sandbox.server import SandboxServer, parse_json
from target_omnisend.sandbox.store import now_iso
from target_omnisend.sandbox.validation import validate_contact

V5 = {"X-API-KEY": "brand1-secret", "Content-Type": "application/json"}
HEADERS = {
    "Authorization": "Omnisend-API-Key brand1-secret",
    "Omnisend-Version": "2026-03-15",
    "Content-Type": "application/json",
}
MANY_ERRORS: dict[str, Any] = {
    "identifiers": [
        "not-an-object",
        {"type": "fax", "id": 5, "sendWelcomeMessage": "yes", "channels": []},
        {"type": "email", "id": "a@x.com",
         "channels": {"": {}, "push": {}, "email": "subscribed", "sms": {"status": "maybe"}}},
        {"type": "phone", "id": "+37060000000",
         "channels": {"sms": {"status": "subscribed", "statusDate": "yesterday",
                              "statusChangedAt": "never"}}},
        {"id": ""},
    ],
    "firstName": 1, "gender": "x", "birthdate": "1985-02-30", "countryCode": "LTU",
    "tags": ["a", ""], "createdAt": "2020-01-01",
    "customProperties": {"ok": 1, "bad-name": 1, "long": "x" * 2049, "mixed": ["a", 1],
                         "nested": {"a": 1}, "fine": None},
}  # fmt: skip


def post(url: str, headers: dict[str, str], **kwargs: Any) -> requests.Response:
    return requests.post(url, headers=headers, timeout=10, **kwargs)


def batch_status(sandbox: SandboxServer, batch_id: str) -> str:
    url = f"{sandbox.v5_url}/batches/{batch_id}"
    return str(requests.get(url, headers=V5, timeout=10).json()["status"])


@pytest.mark.parametrize("generation", ["v5", "2026"])
def test_nested_error_fields_and_their_order(generation: str) -> None:
    date_field = "statusDate" if generation == "v5" else "statusChangedAt"
    found = [(e["field"], e["code"]) for e in validate_contact(MANY_ERRORS, generation)]
    assert found == [
        ("identifiers[0]", "invalid_type"),
        ("identifiers[1].type", "invalid_value"),
        ("identifiers[1].id", "invalid_type"),
        ("identifiers[1].sendWelcomeMessage", "invalid_type"),
        ("identifiers[1].channels", "invalid_type"),
        ("identifiers[2].channels.", "invalid_value"),  # a channel named ""
        ("identifiers[2].channels.push", "invalid_value"),
        ("identifiers[2].channels.email", "invalid_type"),
        ("identifiers[2].channels.sms.status", "invalid_value"),
        (f"identifiers[3].channels.sms.{date_field}", "invalid_format"),
        ("identifiers[4].type", "required"),
        ("identifiers[4].id", "required"),
        ("firstName", "invalid_type"),
        ("gender", "invalid_value"),
        ("birthdate", "invalid_format"),
        ("countryCode", "invalid_format"),
        ("tags", "invalid_type"),
        ("customProperties.bad-name", "invalid_format"),
        ("customProperties.long", "too_long"),
        ("customProperties.mixed", "invalid_type"),
        ("customProperties.nested", "invalid_type"),
        ("createdAt", "invalid_format"),
    ]


@pytest.mark.parametrize(
    "raw",
    [b'{"a": 1}', b"[1, 2]", b'"x"', b"123456789012345678901234567890", b'{"a":1,"a":2}',
     b"\xef\xbb\xbf{}", '{"a": 1}'.encode("utf-16"), b'{"a": NaN}', b"[Infinity, -Infinity]",
     b"[1e999]", b'["\\ud800"]', b"  {}\n"],
)  # fmt: skip
def test_bodies_decode_as_json_loads_decodes_them(raw: bytes) -> None:
    assert repr(parse_json(raw)) == repr(json.loads(raw))


@pytest.mark.parametrize("raw", [b"{nope", b'{"a": 1} x', b"\xff", b"[1,]", b"'a'", b""])
def test_bodies_json_loads_refuses_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_json(raw)


@pytest.mark.parametrize(("prefix", "headers"), [("/v5", V5), ("/api", HEADERS)])
def test_bad_bodies_answer_400(sandbox: SandboxServer, prefix: str, headers: Any) -> None:
    for raw in (b"{nope", b"\xff", b"[1, 2]", b'"contact"'):
        answer = post(sandbox.url + prefix + "/contacts", headers, data=raw)
        assert answer.status_code == 400, raw
    body = json.dumps({"identifiers": [{"type": "email", "id": "b@x.com"}]}).encode()
    answer = post(sandbox.v5_url + "/contacts", V5, data=b"\xef\xbb\xbf" + body)
    assert answer.status_code == 200  # json.loads accepted a BOM, and so does the sandbox


def test_now_iso_is_the_current_millisecond() -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0)
    stamp = now_iso()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", stamp)
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before <= parsed <= datetime.now(timezone.utc)
    time.sleep(0.002)
    assert now_iso() > stamp


def test_freezing_after_batches_keeps_answers(sandbox: SandboxServer) -> None:
    gc.unfreeze()
    heap.freeze_after_batches()
    try:
        body = {"method": "POST", "endpoint": "contacts",
                "items": [{"identifiers": [{"type": "email", "id": "f@x.com"}]}]}  # fmt: skip
        batch_id = post(sandbox.v5_url + "/batches", V5, json=body).json()["batchID"]
        deadline = time.monotonic() + 10
        while batch_status(sandbox, batch_id) != "finished":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert gc.get_freeze_count() > 0
        assert [c["identifiers"][0]["id"] for c in sandbox.dump()["contacts"]] == ["f@x.com"]
    finally:
        heap.freeze_after_batches(False)
        gc.unfreeze()
