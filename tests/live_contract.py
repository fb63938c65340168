"""The Omnisend contract the target relies on, as cases that run against any Omnisend-like API.

Each case sends a few real requests (plain `requests`, no redirects followed, the 2026-03-15
API), checks the answers the target depends on, and returns its exchanges, masked: emails and
phones as the logs mask them, the API key never recorded (headers are not kept). Run against the
real Omnisend by `pytest -m live` (tests/test_live_omnisend.py, with OMNISEND_LIVE_API_KEY), the
exchanges are written to tests/data/omnisend_live/ when OMNISEND_LIVE_RECORD=1; the sandbox's
conformance test replays them and compares status codes and answer shapes.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from target_omnisend.client import DIALECTS, OmnisendClient
from target_omnisend.summary import mask_phone

RECORDINGS = Path(__file__).resolve().parent / "data" / "omnisend_live"
EMAIL = re.compile(r"[^\s\"'@?=&/]+@[^\s\"'@?=&/]+")
PHONE = re.compile(r"\+\d{8,15}")


def pseudonym(email: str) -> str:
    """An email's local part replaced by a stable hash: still an email a sandbox can take, the
    same one wherever it recurs in a recording, and no longer the address."""
    local, _, domain = email.rpartition("@")
    digest = hashlib.sha256(local.encode()).hexdigest()[:12]
    return f"masked-{digest}@{domain}"


def mask(value: Any) -> Any:
    """`value` with every email pseudonymised and E.164 phone masked (in any JSON structure)."""
    if isinstance(value, str):
        return PHONE.sub(lambda m: mask_phone(m[0]), EMAIL.sub(lambda m: pseudonym(m[0]), value))
    if isinstance(value, list):
        return [mask(item) for item in value]
    if isinstance(value, dict):
        return {key: mask(item) for key, item in value.items()}
    return value


@dataclass
class Exchange:
    """One request and its answer (masked); `replay` False when a sandbox cannot answer it."""

    method: str
    path: str
    body: Any
    status: int
    answer: Any
    replay: bool = True


@dataclass
class Api:
    """An Omnisend-like API at `base_url` (…/api) with one brand's key."""

    base_url: str
    api_key: str
    exchanges: list[Exchange] = field(default_factory=list)

    def call(self, method: str, path: str, body: Any = None, *, replay: bool = True) -> Any:
        """Send one request; record it; return (status, parsed answer or None)."""
        response = requests.request(
            method,
            self.base_url.rstrip("/") + path,
            headers=DIALECTS["2026-03-15"].headers(self.api_key),
            json=body,
            timeout=15,
            allow_redirects=False,
        )
        try:
            answer = response.json() if response.content else None
        except ValueError:
            answer = {"non_json_body_bytes": len(response.content)}
        self.exchanges.append(
            Exchange(method, mask(path), mask(body), response.status_code, mask(answer), replay)
        )
        return response.status_code, answer

    def wait_for_batch(self, batch_id: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            status, batch = self.call("GET", f"/batches/{batch_id}")
            assert status == 200, batch
            if batch["status"] in ("finished", "stopped") or time.monotonic() > deadline:
                return batch
            time.sleep(1)


def identifier(email: str, status: str, changed_at: str) -> dict[str, Any]:
    return {
        "type": "email",
        "id": email,
        "channels": {"email": {"status": status, "statusChangedAt": changed_at}},
        "sendWelcomeMessage": False,
    }


def upsert(api: Api, run: str) -> None:
    body = {"identifiers": [identifier(f"live-{run}@example.com", "nonSubscribed", NOW)]}
    status, answer = api.call("POST", "/contacts", {**body, "firstName": "Live"})
    assert status in (200, 201), answer
    assert answer.get("id")
    status, answer = api.call("POST", "/contacts", {**body, "firstName": "Again"})
    assert status == 200, answer  # the same email: updated, not created


def batch_states(api: Api, run: str) -> None:
    items = [
        {"identifiers": [identifier(f"live-{run}-b{n}@example.com", "nonSubscribed", NOW)]}
        for n in range(2)
    ]
    status, answer = api.call(
        "POST", "/batches", {"method": "POST", "endpoint": "contacts", "items": items}
    )
    assert status in (200, 201), answer
    batch = api.wait_for_batch(answer["batchID"])
    assert batch["status"] == "finished", batch
    assert batch["finishedCount"] == 2
    assert batch["errorsCount"] == 0


def item_errors(api: Api, run: str) -> None:
    good = {"identifiers": [identifier(f"live-{run}-ok@example.com", "nonSubscribed", NOW)]}
    bad = {"identifiers": [{"type": "phone", "id": "12", "channels": {"sms": {"status": "x"}}}]}
    status, answer = api.call(
        "POST", "/batches", {"method": "POST", "endpoint": "contacts", "items": [good, bad]}
    )
    assert status in (200, 201), answer
    batch = api.wait_for_batch(answer["batchID"])
    assert batch["errorsCount"] == 1, batch
    status, items = api.call("GET", f"/batches/{answer['batchID']}/items")
    assert status == 200, items
    assert len(items["errors"]) == 1


def tags(api: Api, run: str) -> None:
    email = f"live-{run}@example.com"
    status, answer = api.call(
        "POST", "/contacts/tags", {"tags": [f"live {run}"], "emails": [email]}
    )
    assert status == 202, answer
    status, answer = api.call(
        "DELETE", "/contacts/tags", {"tags": [f"live {run}"], "emails": [email]}
    )
    assert status == 202, answer


def segment(api: Api, run: str) -> None:
    tag = f"live {run}"
    status, answer = api.call("POST", "/segments", OmnisendClient.segment_body(tag, tag))
    assert status in (200, 201), answer
    segment_id = answer.get("segmentID") or answer.get("id")
    assert segment_id, answer
    status, answer = api.call("DELETE", f"/segments/{segment_id}")
    assert status in (200, 202, 204), answer


def status_date_rule(api: Api, run: str) -> None:
    email = f"live-{run}-consent@example.com"
    for status_value, changed_at in (("unsubscribed", NOW), ("subscribed", "2020-01-01T00:00:00Z")):
        body = {"identifiers": [identifier(email, status_value, changed_at)]}
        status, answer = api.call("POST", "/contacts", body)
        assert status in (200, 201), answer
    status, answer = api.call("GET", f"/contacts?email={email}")
    assert status == 200, answer
    contact = (answer.get("contacts") or [answer])[0]
    email_id = next(i for i in contact["identifiers"] if i["type"] == "email")
    # The target relies on this: an older status date never wins over a newer one.
    assert email_id["channels"]["email"]["status"] == "unsubscribed", email_id


def redirects(api: Api, run: str) -> None:
    """Plain http answers with a redirect: the key must not travel there (nothing follows it)."""
    parts = urlsplit(api.base_url)
    if parts.hostname in ("127.0.0.1", "localhost"):
        return  # a sandbox serves plain http itself; only Omnisend redirects
    plain = Api(urlunsplit(("http", *parts[1:])), "not-a-key")  # never the real key over http
    status, _ = plain.call("GET", "/contacts?limit=1", replay=False)
    api.exchanges.extend(plain.exchanges)
    assert status in (301, 302, 307, 308, 400, 403), status


def idn_emails(api: Api, run: str) -> None:
    """An internationalised domain: what the target sends (punycode or not) must be accepted."""
    for email in (f"live-{run}@bücher.example", f"live-{run}@xn--bcher-kva.example"):
        status, answer = api.call(
            "POST", "/contacts", {"identifiers": [identifier(email, "nonSubscribed", NOW)]}
        )
        assert status in (200, 201, 400), answer


NOW = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
CASES: dict[str, Callable[[Api, str], None]] = {
    "upsert": upsert,
    "batch_states": batch_states,
    "item_errors": item_errors,
    "tags": tags,
    "segment": segment,
    "status_date_rule": status_date_rule,
    "redirects": redirects,
    "idn_emails": idn_emails,
}


def run_case(name: str, api: Api, record_to: Path | None = None) -> list[Exchange]:
    """Run one case against `api`; with `record_to`, write its masked exchanges there."""
    api.exchanges.clear()
    CASES[name](api, f"{int(time.time())}")
    if record_to is not None:
        record_to.mkdir(parents=True, exist_ok=True)
        recording = {"case": name, "exchanges": [asdict(e) for e in api.exchanges]}
        (record_to / f"{name}.json").write_text(json.dumps(recording, indent=2) + "\n")
    return list(api.exchanges)


def shape(value: Any) -> Any:
    """The structure of an answer without its values: keys and value types."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__
