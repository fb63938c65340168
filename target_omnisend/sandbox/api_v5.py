"""Handlers of the v5 API under ``/v5``: contacts and batches (no tags, no segments)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from target_omnisend.sandbox.api_common import ContactsApi, matches_identity
from target_omnisend.sandbox.core import Reply, Request, v5_error
from target_omnisend.sandbox.index import both

if TYPE_CHECKING:
    from target_omnisend.sandbox.state import SandboxState

MAX_BATCH_ITEMS = 1000


def render_contact(contact: dict[str, Any]) -> dict[str, Any]:
    """A stored contact in v5's (v3's) shape: ``contactID`` and ``statusDate``."""
    out = dict(contact)
    del out["id"], out["identifiers"]  # both come last, in v5's shape
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


class V5Api(ContactsApi):
    """v5: ``{error, fields}`` errors, 200 on every write, batches of up to 1000 items."""

    generation = "v5"
    max_batch_items = MAX_BATCH_ITEMS
    batch_created_status = 200

    render_contact = staticmethod(render_contact)

    def invalid(self, errors: list[dict[str, str]]) -> Reply:
        """A 400 ``{error, fields}``."""
        return v5_error(400, "Request validation failed", errors)

    def not_found(self, kind: str) -> Reply:
        """v5 names no kind: ``Not found``."""
        return v5_error(404, "Not found")

    def conflict(self) -> Reply:
        """A 409 ``{error}``."""
        return v5_error(409, "An identifier belongs to another contact")

    def upsert_status(self, code: int) -> int:
        """v5 answers 200 whether the contact was created or updated."""
        return 200

    def list_contacts(self, state: SandboxState, req: Request) -> Reply:
        """GET /v5/contacts with ``email``, ``phone``, ``tag``, ``status`` and offset paging."""
        try:
            limit = int(req.query.get("limit", "100"))
            offset = int(req.query.get("offset", "0"))
        except ValueError:
            return v5_error(400, "limit and offset must be integers")
        if not 1 <= limit <= 250 or offset < 0:
            return v5_error(400, "limit must be 1-250")
        store, q = state.store, req.query
        with store.lock:
            where = store.everyone.window
            for kind in ("email", "phone"):
                if kind in q:
                    where = both(where, store.identifier_mask(kind, q[kind]))
            if "tag" in q:
                where = both(where, store.tag_mask(q["tag"]))
            page, _, _ = store.page(
                where, lambda c: matches_identity(c, q), limit=limit, offset=offset,
                descending=False,
            )  # fmt: skip
        return Reply(200, {"contacts": [render_contact(c) for c in page],
                           "paging": {"limit": limit, "offset": offset}})  # fmt: skip

    def list_batches(self, state: SandboxState, req: Request) -> Reply:
        """GET /v5/batches."""
        return Reply(200, {"batches": self.find_batches(state, req), "paging": {}})


API = V5Api()
invalid = API.invalid

ROUTES = [
    ("POST", "/v5/contacts", API.upsert_contact),
    ("GET", "/v5/contacts", API.list_contacts),
    ("GET", "/v5/contacts/{id}", API.get_contact),
    ("PATCH", "/v5/contacts/{id}", API.patch_contact),
    ("POST", "/v5/batches", API.create_batch),
    ("GET", "/v5/batches", API.list_batches),
    ("GET", "/v5/batches/{id}", API.get_batch),
    ("GET", "/v5/batches/{id}/items", API.get_batch_items),
]
