"""Handlers of the 2026-03-15 API under ``/api``: contacts, tags, batches, segments."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from target_omnisend.sandbox import segments as segment_rules
from target_omnisend.sandbox.core import Reply, Request, problem
from target_omnisend.sandbox.store import ConflictError, NotFoundError, channel_status
from target_omnisend.sandbox.validation import error, validate_contact, validate_tags_request

if TYPE_CHECKING:
    from target_omnisend.sandbox.state import SandboxState

BATCH_ENDPOINTS = ("products", "contacts", "events", "categories")


def render_contact(contact: dict[str, Any]) -> dict[str, Any]:
    """A stored contact in the 2026 ``ContactResponse`` shape."""
    out = {k: v for k, v in contact.items() if k != "identifiers"}
    out["identifiers"] = [
        {"type": i["type"], "id": i["id"], "channels": i["channels"]}
        for i in contact["identifiers"]
    ]
    emails = [i["id"] for i in contact["identifiers"] if i["type"] == "email"]
    if emails:
        out["email"] = emails[0]
    out["phone"] = [i["id"] for i in contact["identifiers"] if i["type"] == "phone"]
    status = channel_status(contact)
    if status:
        out["status"] = status
    out["statuses"] = [
        {"channel": name, "status": ch["status"], "statusChangedAt": ch["statusChangedAt"]}
        for i in contact["identifiers"]
        for name, ch in i["channels"].items()
    ]
    return out


def invalid(errors: list[dict[str, str]]) -> Reply:
    """A 400 ValidationProblem."""
    return problem(400, "The request contains invalid input.", errors)


def upsert_contact(state: SandboxState, req: Request) -> Reply:
    """POST /contacts."""
    errors = validate_contact(req.body, "2026")
    if errors:
        return invalid(errors)
    code, contact = state.store.upsert(req.body, "2026", state.settings)
    return Reply(code, render_contact(contact) if contact else {})


def list_contacts(state: SandboxState, req: Request) -> Reply:
    """GET /contacts with filters and cursor paging."""
    q = req.query
    errors = []
    if "status" in q and "tag" in q:
        errors.append(error("status", "invalid_value", "Cannot be combined with tag"))
    if "status" in q and q["status"] not in ("subscribed", "unsubscribed", "nonSubscribed"):
        errors.append(error("status", "invalid_value", "Unknown status"))
    limit = _int(q.get("limit", "100"))
    if limit is None or not 1 <= limit <= 250:
        errors.append(error("limit", "invalid_value", "Must be 1-250"))
    offset = _decode_cursor(q.get("after", "")) if q.get("after") else 0
    if offset is None:
        errors.append(error("after", "invalid_value", "Unknown cursor"))
    if errors:
        return invalid(errors)
    contacts = state.store.snapshot()
    if "segmentID" in q:
        segment = state.segments.get(q["segmentID"])
        if segment is None:
            return problem(404, "Segment not found.")
        contacts = [c for c in contacts if segment_rules.matches(segment, c)]
    contacts = [c for c in contacts if _matches(c, q)]
    reverse = q.get("direction", "desc") == "desc"
    contacts.sort(key=lambda c: (c.get(q.get("sort", "createdAt"), ""), c["id"]), reverse=reverse)
    page = contacts[offset : offset + limit]
    has_more = offset + limit < len(contacts)
    cursors: dict[str, str] = {}
    if has_more:
        cursors["after"] = _encode_cursor(offset + limit)
    if offset:
        cursors["before"] = _encode_cursor(max(0, offset - limit))
    paging = {"cursors": cursors, "hasMore": has_more, "limit": limit}
    return Reply(200, {"contacts": [render_contact(c) for c in page], "paging": paging})


def _matches(contact: dict[str, Any], q: dict[str, str]) -> bool:
    ids = {(i["type"], i["id"]) for i in contact["identifiers"]}
    if "email" in q and ("email", q["email"]) not in ids:
        return False
    if "phone" in q and ("phone", q["phone"]) not in ids:
        return False
    if "tag" in q and q["tag"] not in contact["tags"]:
        return False
    if "status" in q and channel_status(contact) != q["status"]:
        return False
    return not ("updatedAtFrom" in q and contact["updatedAt"] < q["updatedAtFrom"])


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int | None:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        return int(text[2:]) if text.startswith("o:") else None
    except ValueError:
        return None


def get_contact(state: SandboxState, req: Request) -> Reply:
    """GET /contacts/{id}."""
    with state.store.lock:
        contact = state.store.contacts.get(req.params["id"])
        return (
            Reply(200, render_contact(contact)) if contact else problem(404, "Contact not found.")
        )


def patch_contact(state: SandboxState, req: Request) -> Reply:
    """PATCH /contacts/{id} and PATCH /contacts?email=."""
    errors = validate_contact(req.body, "2026", partial=True)
    if errors:
        return invalid(errors)
    contact_id = req.params.get("id")
    if contact_id is None:
        if "email" not in req.query:
            return invalid([error("email", "required", "The email query parameter is required")])
        found = state.store.find("email", req.query["email"])
        if found is None:
            return problem(404, "Contact not found.")
        contact_id = found["id"]
    try:
        contact = state.store.patch(contact_id, req.body, "2026")
    except NotFoundError:
        return problem(404, "Contact not found.")
    except ConflictError:
        return problem(409, "An identifier belongs to another contact.")
    return Reply(200, render_contact(contact))


def change_tags(state: SandboxState, req: Request) -> Reply:
    """POST (add) and DELETE (remove) /contacts/tags: 202, applied later."""
    errors = validate_tags_request(req.body)
    if errors:
        return invalid(errors)
    if "segmentID" in req.body and req.body["segmentID"] not in state.segments:
        return invalid([error("segmentID", "not_found", "Unknown segment")])
    state.schedule_tags(req.body, add=req.method == "POST")
    return Reply(202)


def create_batch(state: SandboxState, req: Request) -> Reply:
    """POST /batches (≤ 100 items)."""
    errors = validate_batch(req.body, 100)
    if errors:
        return invalid(errors)
    batch = state.batches.create(req.body, "2026", req.brand)
    return Reply(201, {"batchID": batch["batchID"], "totalCount": batch["totalCount"]})


def validate_batch(body: Any, max_items: int) -> list[dict[str, str]]:
    """Errors of a batch creation body."""
    if not isinstance(body, dict):
        return [error("body", "invalid_type", "Body must be a JSON object")]
    errors = []
    if body.get("method") not in ("POST", "PUT"):
        errors.append(error("method", "invalid_value", "Must be POST or PUT"))
    if body.get("endpoint") not in BATCH_ENDPOINTS:
        errors.append(error("endpoint", "invalid_value", "Unknown endpoint"))
    items = body.get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= max_items:
        errors.append(error("items", "invalid_value", f"Must hold 1-{max_items} items"))
    return errors


def list_batches(state: SandboxState, req: Request) -> Reply:
    """GET /batches with endpoint/status filters and offset paging."""
    limit, offset = _int(req.query.get("limit", "100")), _int(req.query.get("offset", "0"))
    if limit is None or not 1 <= limit <= 100 or offset is None or offset < 0:
        return invalid([error("limit", "invalid_value", "limit 1-100, offset >= 0")])
    found = state.batches.list("2026", req.query.get("endpoint"), req.query.get("status"))
    base = f"{state.base_url}/api/batches?limit={limit}"
    paging: dict[str, Any] = {"limit": limit, "offset": offset}
    if offset + limit < len(found):
        paging["next"] = f"{base}&offset={offset + limit}"
    if offset:
        paging["previous"] = f"{base}&offset={max(0, offset - limit)}"
    return Reply(200, {"batches": found[offset : offset + limit], "paging": paging})


def get_batch(state: SandboxState, req: Request) -> Reply:
    """GET /batches/{id}."""
    batch = state.batches.get(req.params["id"])
    return Reply(200, batch) if batch else problem(404, "Batch not found.")


def get_batch_items(state: SandboxState, req: Request) -> Reply:
    """GET /batches/{id}/items."""
    batch = state.batches.items(req.params["id"])
    return Reply(200, batch) if batch else problem(404, "Batch not found.")


def create_segment(state: SandboxState, req: Request) -> Reply:
    """POST /segments."""
    errors = segment_rules.validate(req.body)
    if errors:
        return invalid(errors)
    return Reply(201, state.create_segment(req.body))


def list_segments(state: SandboxState, req: Request) -> Reply:
    """GET /segments."""
    segments = [segment_rules.render(s) for s in state.segments.values()]
    return Reply(200, {"segments": segments, "paging": {"cursors": {}, "hasMore": False,
                                                         "limit": len(segments) or 1}})  # fmt: skip


def get_segment(state: SandboxState, req: Request) -> Reply:
    """GET /segments/{id}."""
    segment = state.segments.get(req.params["id"])
    return Reply(200, segment_rules.render(segment)) if segment else problem(404, "Not found.")


def segment_statistics(state: SandboxState, req: Request) -> Reply:
    """GET /segments/{id}/statistics."""
    segment = state.segments.get(req.params["id"])
    if segment is None:
        return problem(404, "Segment not found.")
    count = sum(segment_rules.matches(segment, c) for c in state.store.snapshot())
    return Reply(200, {"contactsCount": count})


def update_segment(state: SandboxState, req: Request) -> Reply:
    """PUT /segments/{id}: 409 while building."""
    segment = state.segments.get(req.params["id"])
    if segment is None:
        return problem(404, "Segment not found.")
    if segment["status"] == "building":
        return problem(409, "The segment is still building.")
    errors = segment_rules.validate(req.body)
    if errors:
        return invalid(errors)
    return Reply(200, state.update_segment(segment, req.body))


def delete_segment(state: SandboxState, req: Request) -> Reply:
    """DELETE /segments/{id}: 409 while building."""
    segment = state.segments.get(req.params["id"])
    if segment is None:
        return problem(404, "Segment not found.")
    if segment["status"] == "building":
        return problem(409, "The segment is still building.")
    state.delete_segment(segment)
    return Reply(204)


ROUTES = [
    ("POST", "/api/contacts", upsert_contact),
    ("GET", "/api/contacts", list_contacts),
    ("PATCH", "/api/contacts", patch_contact),
    ("POST", "/api/contacts/tags", change_tags),
    ("DELETE", "/api/contacts/tags", change_tags),
    ("GET", "/api/contacts/{id}", get_contact),
    ("PATCH", "/api/contacts/{id}", patch_contact),
    ("POST", "/api/batches", create_batch),
    ("GET", "/api/batches", list_batches),
    ("GET", "/api/batches/{id}", get_batch),
    ("GET", "/api/batches/{id}/items", get_batch_items),
    ("POST", "/api/segments", create_segment),
    ("GET", "/api/segments", list_segments),
    ("GET", "/api/segments/{id}", get_segment),
    ("GET", "/api/segments/{id}/statistics", segment_statistics),
    ("PUT", "/api/segments/{id}", update_segment),
    ("DELETE", "/api/segments/{id}", delete_segment),
]
