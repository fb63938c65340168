"""Conformance of the sandbox to Omnisend's OpenAPI files (read from ../shared).

Request bodies are built from the ``example`` values of the request schemas; answers must
validate against the documented response schema of their status code.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests

from target_omnisend.sandbox.server import SandboxServer

HTTP = requests.Session()
HEADERS = {"Authorization": "Omnisend-API-Key brand1-secret", "Omnisend-Version": "2026-03-15"}
V5 = {"X-API-KEY": "brand1-secret"}


class Spec:
    """One OpenAPI file: examples of request schemas, validation of answers."""

    def __init__(self, path: Path) -> None:
        self.doc = json.loads(path.read_text())

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            node: Any = self.doc
            for part in schema["$ref"].lstrip("#/").split("/"):
                node = node[part]
            schema = node
        return schema

    def example(self, schema: dict[str, Any]) -> Any:
        """A value built from the schema's ``example`` values."""
        schema = self.resolve(schema)
        if "example" in schema:
            return schema["example"]
        if "allOf" in schema:
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                merged.update(self.example(part) or {})
            return merged
        if schema.get("type") == "array" and "items" in schema:
            item = self.example(schema["items"])
            return [] if item is None else [item]
        if "properties" in schema:
            values = {name: self.example(sub) for name, sub in schema["properties"].items()}
            return {name: value for name, value in values.items() if value is not None}
        return None

    def request_example(self, path: str, method: str) -> Any:
        request_body = self.resolve(self.doc["paths"][path][method]["requestBody"])
        schema = request_body["content"]["application/json"]["schema"]
        return self.example(schema)

    def check(self, path: str, method: str, answer: requests.Response) -> None:
        """The answer's status is documented and its body validates against its schema."""
        responses = self.doc["paths"][path][method]["responses"]
        assert str(answer.status_code) in responses, (path, method, answer.status_code)
        content = responses[str(answer.status_code)].get("content")
        if not content:
            return
        schema = next(iter(content.values()))["schema"]
        root = {**_nullable(schema), "components": _nullable(self.doc.get("components", {}))}
        jsonschema.Draft7Validator(root).validate(answer.json())


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0 ``nullable`` as JSON Schema ``type: [t, "null"]``."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _nullable(value) for key, value in node.items()}
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


@pytest.fixture(scope="module")
def specs(openapi_dir: Path) -> dict[str, Spec]:
    names = ("contacts-2026-03-15", "batches-2026-03-15", "segments-2026-03-15",
             "contacts-v3", "batches-v3")  # fmt: skip
    return {name: Spec(openapi_dir / f"{name}.json") for name in names}


def call(server: SandboxServer, method: str, path: str, body: Any = None, **params: Any) -> Any:
    return HTTP.request(method, server.api_url + path, json=body, params=params, headers=HEADERS)


def wait_for(check: Any) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_contacts_examples_are_accepted_and_answers_conform(
    specs: dict[str, Spec], sandbox_factory: Any
) -> None:
    spec = specs["contacts-2026-03-15"]
    server = sandbox_factory(tags_apply_delay=0.0)
    body = spec.request_example("/contacts", "post")
    created = call(server, "POST", "/contacts", body)
    assert created.status_code == 201, created.text
    spec.check("/contacts", "post", created)
    spec.check("/contacts", "post", call(server, "POST", "/contacts", body))
    contact_id, email = created.json()["id"], created.json()["email"]
    spec.check("/contacts", "get", call(server, "GET", "/contacts", limit=1))
    spec.check("/contacts/{id}", "get", call(server, "GET", f"/contacts/{contact_id}"))
    patch = spec.request_example("/contacts/{id}", "patch")
    patched = call(server, "PATCH", f"/contacts/{contact_id}", patch)
    assert patched.status_code == 200, patched.text
    spec.check("/contacts/{id}", "patch", patched)
    by_email = call(server, "PATCH", "/contacts", spec.request_example("/contacts", "patch"),
                    email=email)  # fmt: skip
    spec.check("/contacts", "patch", by_email)
    for method in ("post", "delete"):
        tags = spec.request_example("/contacts/tags", method)
        tags.pop("segmentID", None)
        answer = call(server, method.upper(), "/contacts/tags", tags)
        assert answer.status_code == 202, answer.text
        spec.check("/contacts/tags", method, answer)


def test_contacts_error_answers_conform(specs: dict[str, Spec], sandbox_factory: Any) -> None:
    spec = specs["contacts-2026-03-15"]
    server = sandbox_factory(rate_limit_per_minute=4)
    invalid = call(server, "POST", "/contacts", {"identifiers": [{"type": "email", "id": "x"}]})
    assert invalid.status_code == 400
    spec.check("/contacts", "post", invalid)
    missing = call(server, "GET", "/contacts/none")
    assert missing.status_code == 404
    spec.check("/contacts/{id}", "get", missing)
    unauthorized = HTTP.get(
        server.api_url + "/contacts", headers={"Omnisend-Version": "2026-03-15"}
    )
    spec.check("/contacts", "get", unauthorized)
    call(server, "GET", "/contacts")
    call(server, "GET", "/contacts")
    limited = call(server, "GET", "/contacts")
    assert limited.status_code == 429
    spec.check("/contacts", "get", limited)
    server.configure(retired_versions=["2026-03-15"], rate_limit_per_minute=100)
    retired = call(server, "GET", "/contacts")
    assert retired.status_code == 410
    spec.check("/contacts", "get", retired)


def create_and_conform(
    spec: Spec, server: Any, collection: str, body: Any, id_key: str, done_status: str
) -> str:
    """POST `body` to `collection`, await `done_status`; check create, list and get; the new id."""
    created = call(server, "POST", collection, body)
    assert created.status_code == 201, created.text
    spec.check(collection, "post", created)
    new_id = created.json()[id_key]
    wait_for(lambda: call(server, "GET", f"{collection}/{new_id}").json()["status"] == done_status)
    spec.check(collection, "get", call(server, "GET", collection))
    spec.check(f"{collection}/{{{id_key}}}", "get", call(server, "GET", f"{collection}/{new_id}"))
    return new_id


def test_batches_examples_and_answers_conform(specs: dict[str, Spec], sandbox_factory: Any) -> None:
    spec = specs["batches-2026-03-15"]
    server = sandbox_factory(batch_processing_delay=0.0)
    body = spec.request_example("/batches", "post")
    body["items"] = [specs["contacts-2026-03-15"].request_example("/contacts", "post"),
                     {"identifiers": [{"type": "email", "id": "broken"}]}]  # fmt: skip
    batch_id = create_and_conform(spec, server, "/batches", body, "batchID", "finished")
    items = call(server, "GET", f"/batches/{batch_id}/items")
    spec.check("/batches/{batchID}/items", "get", items)
    assert len(items.json()["errors"]) == 1
    spec.check("/batches", "post", call(server, "POST", "/batches", {"items": []}))
    spec.check("/batches/{batchID}", "get", call(server, "GET", "/batches/unknown"))


def with_filters(body: dict[str, Any]) -> dict[str, Any]:
    """The spec's examples leave ``filters`` (minItems 1) without an example: add a tag rule."""
    for group in body["conditionGroups"]:
        for condition in group["conditions"]:
            condition["filters"] = condition.get("filters") or [
                {"property": "tags", "operator": "anyOf", "value": ["vip"]}
            ]
    return body


def test_segments_examples_and_answers_conform(
    specs: dict[str, Spec], sandbox_factory: Any
) -> None:
    spec = specs["segments-2026-03-15"]
    server = sandbox_factory(segment_build_seconds=0.0)
    body = with_filters(spec.request_example("/segments", "post"))
    segment_id = create_and_conform(spec, server, "/segments", body, "segmentID", "ready")
    stats = call(server, "GET", f"/segments/{segment_id}/statistics")
    spec.check("/segments/{segmentID}/statistics", "get", stats)
    update = with_filters(spec.request_example("/segments/{segmentID}", "put"))
    updated = call(server, "PUT", f"/segments/{segment_id}", update)
    assert updated.status_code == 200, updated.text
    spec.check("/segments/{segmentID}", "put", updated)
    conflict = call(server, "DELETE", f"/segments/{segment_id}")
    if conflict.status_code == 409:  # still building after the update
        spec.check("/segments/{segmentID}", "delete", conflict)
        wait_for(lambda: call(server, "GET", f"/segments/{segment_id}").json()["status"] == "ready")
        conflict = call(server, "DELETE", f"/segments/{segment_id}")
    assert conflict.status_code == 204
    spec.check("/segments", "post", call(server, "POST", "/segments", {"name": "x"}))


def test_v5_keeps_v3_shapes(specs: dict[str, Spec], sandbox_factory: Any) -> None:
    contacts, batches = specs["contacts-v3"], specs["batches-v3"]
    server = sandbox_factory(batch_processing_delay=0.0)
    body = {"identifiers": [{"type": "email", "id": "v3@x.com",
                             "channels": {"email": {"status": "subscribed",
                                                    "statusDate": "2024-01-01T00:00:00Z"}}}],
            "firstName": "Vee", "tags": ["a"]}  # fmt: skip
    created = HTTP.post(server.v5_url + "/contacts", json=body, headers=V5)
    contacts.check("/contacts", "post", created)
    contact_id = created.json()["contactID"]
    one = HTTP.get(f"{server.v5_url}/contacts/{contact_id}", headers=V5)
    contacts.check("/contacts/{contactID}", "get", one)
    second = json.loads(json.dumps(body).replace("v3@x.com", "v3b@x.com"))
    batch_body = {"method": "POST", "endpoint": "contacts", "items": [body, second]}
    batch = HTTP.post(server.v5_url + "/batches", json=batch_body, headers=V5)
    batches.check("/batches", "post", batch)
    batch_id = batch.json()["batchID"]
    wait_for(lambda: HTTP.get(f"{server.v5_url}/batches/{batch_id}", headers=V5).json()[
        "status"] == "finished")  # fmt: skip
    batches.check("/batches/{batchID}", "get",
                  HTTP.get(f"{server.v5_url}/batches/{batch_id}", headers=V5))  # fmt: skip
    batches.check("/batches", "get", HTTP.get(server.v5_url + "/batches", headers=V5))
