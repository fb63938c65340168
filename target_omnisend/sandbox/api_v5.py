"""Handlers of the v5 API under ``/v5``: contacts and batches (no tags, no segments)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from target_omnisend.sandbox.core import Reply, Request, v5_error
from target_omnisend.sandbox.store import ConflictError, NotFoundError
from target_omnisend.sandbox.validation import validate_contact

if TYPE_CHECKING:
    from target_omnisend.sandbox.state import SandboxState

MAX_BATCH_ITEMS = 1000


def render_contact(contact: dict[str, Any]) -> dict[str, Any]:
    """A stored contact in v5's (v3's) shape: ``contactID`` and ``statusDate``."""
    out = {k: v for k, v in contact.items() if k not in ("id", "identifiers")}
    out["contactID"] = contact["id"]
    out["identifiers"] = [
        {
            "type": i["type"],
            "id": i["id"],
            "channels": {
                name: {"status": ch["status"], "statusDate": ch["statusChangedAt"]}
                for name, ch in i["channels"].items()
            },
        }
        for i in contact["identifiers"]
    ]
    return out


def invalid(errors: list[dict[str, str]]) -> Reply:
    """A 400 ``{error, fields}``."""
    return v5_error(400, "Request validation failed", errors)


def upsert_contact(state: SandboxState, req: Request) -> Reply:
    """POST /v5/contacts: 200 with the contact (created or updated)."""
    errors = validate_contact(req.body, "v5")
    if errors:
        return invalid(errors)
    _, contact = state.store.upsert(req.body, "v5", state.settings)
    return Reply(200, render_contact(contact) if contact else {})


def list_contacts(state: SandboxState, req: Request) -> Reply:
    """GET /v5/contacts with ``email``, ``phone``, ``tag``, ``status`` and offset paging."""
    try:
        limit = int(req.query.get("limit", "100"))
        offset = int(req.query.get("offset", "0"))
    except ValueError:
        return v5_error(400, "limit and offset must be integers")
    if not 1 <= limit <= 250 or offset < 0:
        return v5_error(400, "limit must be 1-250")
    contacts = [c for c in state.store.snapshot() if _matches(c, req.query)]
    page = contacts[offset : offset + limit]
    return Reply(200, {"contacts": [render_contact(c) for c in page],
                       "paging": {"limit": limit, "offset": offset}})  # fmt: skip


def _matches(contact: dict[str, Any], q: dict[str, str]) -> bool:
    ids = {(i["type"], i["id"]) for i in contact["identifiers"]}
    if "email" in q and ("email", q["email"]) not in ids:
        return False
    if "phone" in q and ("phone", q["phone"]) not in ids:
        return False
    return not ("tag" in q and q["tag"] not in contact["tags"])


def get_contact(state: SandboxState, req: Request) -> Reply:
    """GET /v5/contacts/{id}."""
    with state.store.lock:
        contact = state.store.contacts.get(req.params["id"])
        return Reply(200, render_contact(contact)) if contact else v5_error(404, "Not found")


def patch_contact(state: SandboxState, req: Request) -> Reply:
    """PATCH /v5/contacts/{id}."""
    errors = validate_contact(req.body, "v5", partial=True)
    if errors:
        return invalid(errors)
    try:
        contact = state.store.patch(req.params["id"], req.body, "v5")
    except NotFoundError:
        return v5_error(404, "Not found")
    except ConflictError:
        return v5_error(409, "An identifier belongs to another contact")
    return Reply(200, render_contact(contact))


def create_batch(state: SandboxState, req: Request) -> Reply:
    """POST /v5/batches (≤ 1000 items): 200 ``{batchID, totalCount}``."""
    from target_omnisend.sandbox.api_2026 import validate_batch

    errors = validate_batch(req.body, MAX_BATCH_ITEMS)
    if errors:
        return invalid(errors)
    batch = state.batches.create(req.body, "v5", req.brand)
    return Reply(200, {"batchID": batch["batchID"], "totalCount": batch["totalCount"]})


def list_batches(state: SandboxState, req: Request) -> Reply:
    """GET /v5/batches."""
    found = state.batches.list("v5", req.query.get("endpoint"), req.query.get("status"))
    return Reply(200, {"batches": found, "paging": {}})


def get_batch(state: SandboxState, req: Request) -> Reply:
    """GET /v5/batches/{id}."""
    batch = state.batches.get(req.params["id"])
    return Reply(200, batch) if batch else v5_error(404, "Not found")


def get_batch_items(state: SandboxState, req: Request) -> Reply:
    """GET /v5/batches/{id}/items."""
    batch = state.batches.items(req.params["id"])
    return Reply(200, batch) if batch else v5_error(404, "Not found")


ROUTES = [
    ("POST", "/v5/contacts", upsert_contact),
    ("GET", "/v5/contacts", list_contacts),
    ("GET", "/v5/contacts/{id}", get_contact),
    ("PATCH", "/v5/contacts/{id}", patch_contact),
    ("POST", "/v5/batches", create_batch),
    ("GET", "/v5/batches", list_batches),
    ("GET", "/v5/batches/{id}", get_batch),
    ("GET", "/v5/batches/{id}/items", get_batch_items),
]
