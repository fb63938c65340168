"""Handlers of the 2026-03-15 API under ``/api``: contacts, tags, batches, segments."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from target_omnisend.sandbox import segments as segment_rules
from target_omnisend.sandbox.api_common import ContactsApi, matches_identity
from target_omnisend.sandbox.core import Reply, Request, problem
from target_omnisend.sandbox.index import Mask, both
from target_omnisend.sandbox.store import channel_status
from target_omnisend.sandbox.validation import error, validate_tags_request

if TYPE_CHECKING:
    from target_omnisend.sandbox.state import SandboxState


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


class Api2026(ContactsApi):
    """2026-03-15: problem bodies, 201 on creation, batches of up to 100 items."""

    generation = "2026"
    max_batch_items = 100
    batch_created_status = 201

    render_contact = staticmethod(render_contact)

    def invalid(self, errors: list[dict[str, str]]) -> Reply:
        """A 400 ValidationProblem."""
        return problem(400, "The request contains invalid input.", errors)

    def not_found(self, kind: str) -> Reply:
        """A 404 problem naming the missing ``kind``."""
        return problem(404, f"{kind} not found.")

    def conflict(self) -> Reply:
        """A 409 problem."""
        return problem(409, "An identifier belongs to another contact.")

    def patch_target(self, state: SandboxState, req: Request) -> str | Reply:
        """PATCH /contacts/{id}, or PATCH /contacts?email= (the contact owning that email)."""
        contact_id = req.params.get("id")
        if contact_id is not None:
            return contact_id
        if "email" not in req.query:
            return invalid([error("email", "required", "The email query parameter is required")])
        found = state.store.owner_id("email", req.query["email"])
        return self.not_found("Contact") if found is None else found


API = Api2026()
invalid = API.invalid


def list_contacts(state: SandboxState, req: Request) -> Reply:
    """GET /contacts with filters and cursor paging.

    The default order (``createdAt``, newest first, or ``direction=asc``) pages through the
    store's indexes with a cursor naming the last contact's position, so every page costs the
    same at any depth; ``sort=updatedAt`` sorts the matching contacts for each page.
    """
    q = req.query
    errors = []
    if "status" in q and "tag" in q:
        errors.append(error("status", "invalid_value", "Cannot be combined with tag"))
    if "status" in q and q["status"] not in ("subscribed", "unsubscribed", "nonSubscribed"):
        errors.append(error("status", "invalid_value", "Unknown status"))
    limit = _int(q.get("limit", "100"))
    if limit is None or not 1 <= limit <= 250:
        errors.append(error("limit", "invalid_value", "Must be 1-250"))
    cursor = _decode_cursor(q.get("after", "")) if q.get("after") else ("o", 0)
    if cursor is None:
        errors.append(error("after", "invalid_value", "Unknown cursor"))
    if errors:
        return invalid(errors)
    assert limit is not None
    assert cursor is not None
    segment = None
    if "segmentID" in q:
        segment = state.segments.get(q["segmentID"])
        if segment is None:
            return problem(404, "Segment not found.")
    store = state.store
    with store.lock:
        where = _filter_mask(store, q, segment)

        def keep(contact: dict[str, Any]) -> bool:
            if segment is not None and not segment_rules.matches(segment, contact):
                return False
            return _matches(contact, q)

        descending = q.get("direction", "desc") == "desc"
        kind, value = cursor
        if q.get("sort", "createdAt") == "createdAt":
            after = value if kind == "p" else None
            page, last, has_more = store.page(
                where, keep, limit=limit, after=after, descending=descending,
                offset=value if kind == "o" else 0,
            )  # fmt: skip
            rendered = [render_contact(c) for c in page]
            next_cursor = _encode_cursor("p", last)
        else:
            offset = value if kind == "o" else 0
            found, _, _ = store.page(where, keep, limit=len(store) + 1)
            found.sort(key=lambda c: (c.get(q["sort"], ""), c["id"]), reverse=descending)
            rendered = [render_contact(c) for c in found[offset : offset + limit]]
            has_more = offset + limit < len(found)
            next_cursor = _encode_cursor("o", offset + limit)
    cursors: dict[str, str] = {}
    if has_more:
        cursors["after"] = next_cursor
    if q.get("after"):
        cursors["before"] = q["after"]
    paging = {"cursors": cursors, "hasMore": has_more, "limit": limit}
    return Reply(200, {"contacts": rendered, "paging": paging})


def _filter_mask(store: Any, q: dict[str, str], segment: dict[str, Any] | None) -> Mask:
    """The index positions a listing's filters allow (``_matches`` checks each contact)."""
    where: Mask = store.everyone.window
    if "email" in q:
        where = both(where, store.identifier_mask("email", q["email"]))
    if "phone" in q:
        where = both(where, store.identifier_mask("phone", q["phone"]))
    if "tag" in q:
        where = both(where, store.tag_mask(q["tag"]))
    if "status" in q:
        where = both(where, store.status_mask(q["status"]))
    if segment is not None:
        where = both(where, segment_rules.mask(segment, store))
    return where


def _matches(contact: dict[str, Any], q: dict[str, str]) -> bool:
    if not matches_identity(contact, q):
        return False
    if "status" in q and channel_status(contact) != q["status"]:
        return False
    return not ("updatedAtFrom" in q and contact["updatedAt"] < q["updatedAtFrom"])


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _encode_cursor(kind: str, value: int) -> str:
    """A cursor: ``p:N`` continues past position N, ``o:N`` after N contacts (updatedAt order)."""
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, int] | None:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = text.partition(":")
        number = int(value)
    except ValueError:
        return None
    return (kind, number) if kind in ("p", "o") and number >= 0 else None


def change_tags(state: SandboxState, req: Request) -> Reply:
    """POST (add) and DELETE (remove) /contacts/tags: 202, applied later."""
    errors = validate_tags_request(req.body)
    if errors:
        return invalid(errors)
    if "segmentID" in req.body and req.body["segmentID"] not in state.segments:
        return invalid([error("segmentID", "not_found", "Unknown segment")])
    state.schedule_tags(req.body, add=req.method == "POST")
    return Reply(202)


def list_batches(state: SandboxState, req: Request) -> Reply:
    """GET /batches with endpoint/status filters and offset paging."""
    limit, offset = _int(req.query.get("limit", "100")), _int(req.query.get("offset", "0"))
    if limit is None or not 1 <= limit <= 100 or offset is None or offset < 0:
        return invalid([error("limit", "invalid_value", "limit 1-100, offset >= 0")])
    found = API.find_batches(state, req)
    base = f"{state.base_url}/api/batches?limit={limit}"
    paging: dict[str, Any] = {"limit": limit, "offset": offset}
    if offset + limit < len(found):
        paging["next"] = f"{base}&offset={offset + limit}"
    if offset:
        paging["previous"] = f"{base}&offset={max(0, offset - limit)}"
    return Reply(200, {"batches": found[offset : offset + limit], "paging": paging})


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
    store = state.store
    count = store.count(
        segment_rules.mask(segment, store), lambda c: segment_rules.matches(segment, c)
    )
    return Reply(200, {"contactsCount": count})


def _editable_segment(state: SandboxState, req: Request) -> dict[str, Any] | Reply:
    """The segment ``{id}`` names, or a 404 (unknown) or 409 (still building) reply."""
    segment = state.segments.get(req.params["id"])
    if segment is None:
        return problem(404, "Segment not found.")
    if segment["status"] == "building":
        return problem(409, "The segment is still building.")
    return segment


def update_segment(state: SandboxState, req: Request) -> Reply:
    """PUT /segments/{id}: 409 while building."""
    segment = _editable_segment(state, req)
    if isinstance(segment, Reply):
        return segment
    errors = segment_rules.validate(req.body)
    if errors:
        return invalid(errors)
    return Reply(200, state.update_segment(segment, req.body))


def delete_segment(state: SandboxState, req: Request) -> Reply:
    """DELETE /segments/{id}: 409 while building."""
    segment = _editable_segment(state, req)
    if isinstance(segment, Reply):
        return segment
    state.delete_segment(segment)
    return Reply(204)


ROUTES = [
    ("POST", "/api/contacts", API.upsert_contact),
    ("GET", "/api/contacts", list_contacts),
    ("PATCH", "/api/contacts", API.patch_contact),
    ("POST", "/api/contacts/tags", change_tags),
    ("DELETE", "/api/contacts/tags", change_tags),
    ("GET", "/api/contacts/{id}", API.get_contact),
    ("PATCH", "/api/contacts/{id}", API.patch_contact),
    ("POST", "/api/batches", API.create_batch),
    ("GET", "/api/batches", list_batches),
    ("GET", "/api/batches/{id}", API.get_batch),
    ("GET", "/api/batches/{id}/items", API.get_batch_items),
    ("POST", "/api/segments", create_segment),
    ("GET", "/api/segments", list_segments),
    ("GET", "/api/segments/{id}", get_segment),
    ("GET", "/api/segments/{id}/statistics", segment_statistics),
    ("PUT", "/api/segments/{id}", update_segment),
    ("DELETE", "/api/segments/{id}", delete_segment),
]
