"""Request handling shared by both API generations: contacts and batches.

``ContactsApi`` holds the handlers whose logic is the same under ``/api`` (2026-03-15) and
``/v5``; a generation's subclass says only what differs: the contact's rendered shape, its error
bodies, its success codes and its batch size limit. ``api_2026`` and ``api_v5`` each make one
instance and route to its bound methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from target_omnisend.sandbox.core import Reply, Request
from target_omnisend.sandbox.store import ConflictError, NotFoundError
from target_omnisend.sandbox.validation import error, validate_contact

if TYPE_CHECKING:
    from target_omnisend.sandbox.state import SandboxState

BATCH_ENDPOINTS = ("products", "contacts", "events", "categories")


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


def matches_identity(contact: dict[str, Any], q: dict[str, str]) -> bool:
    """Whether a contact passes the ``email``, ``phone`` and ``tag`` filters of a query."""
    ids = {(i["type"], i["id"]) for i in contact["identifiers"]}
    if "email" in q and ("email", q["email"]) not in ids:
        return False
    if "phone" in q and ("phone", q["phone"]) not in ids:
        return False
    return not ("tag" in q and q["tag"] not in contact["tags"])


class ContactsApi:
    """Contact and batch handlers of one API generation (subclasses fill in the differences)."""

    generation: str  # "2026" or "v5", as validation and the store name it
    max_batch_items: int
    batch_created_status: int  # the code of POST .../batches

    # -- what a generation says differently ------------------------------------------------------

    def render_contact(self, contact: dict[str, Any]) -> dict[str, Any]:
        """A stored contact in this generation's shape."""
        raise NotImplementedError

    def invalid(self, errors: list[dict[str, str]]) -> Reply:
        """A 400 carrying field ``errors``."""
        raise NotImplementedError

    def not_found(self, kind: str) -> Reply:
        """A 404 for a missing ``kind`` ("Contact", "Batch")."""
        raise NotImplementedError

    def conflict(self) -> Reply:
        """A 409: an identifier of the body belongs to another contact."""
        raise NotImplementedError

    def upsert_status(self, code: int) -> int:
        """The status of an upsert the store answered with ``code`` (201 created, 200 updated)."""
        return code

    def patch_target(self, state: SandboxState, req: Request) -> str | Reply:
        """The id of the contact a PATCH names, or the error reply."""
        return req.params["id"]

    # -- shared logic ----------------------------------------------------------------------------

    def store_contact(self, state: SandboxState, body: dict[str, Any]) -> Reply:
        """Create or update a contact from a valid body, as POST .../contacts answers."""
        code, contact = state.store.upsert(body, self.generation, state.settings)
        return Reply(self.upsert_status(code), self.render_contact(contact) if contact else {})

    def upsert_contact(self, state: SandboxState, req: Request) -> Reply:
        """POST .../contacts: the contact, created or updated."""
        errors = validate_contact(req.body, self.generation)
        if errors:
            return self.invalid(errors)
        return self.store_contact(state, req.body)

    def get_contact(self, state: SandboxState, req: Request) -> Reply:
        """GET .../contacts/{id}."""
        contact = state.store.get(req.params["id"])
        return Reply(200, self.render_contact(contact)) if contact else self.not_found("Contact")

    def patch_contact(self, state: SandboxState, req: Request) -> Reply:
        """PATCH .../contacts/{id}."""
        errors = validate_contact(req.body, self.generation, partial=True)
        if errors:
            return self.invalid(errors)
        contact_id = self.patch_target(state, req)
        if isinstance(contact_id, Reply):
            return contact_id
        try:
            contact = state.store.patch(contact_id, req.body, self.generation)
        except NotFoundError:
            return self.not_found("Contact")
        except ConflictError:
            return self.conflict()
        return Reply(200, self.render_contact(contact))

    def create_batch(self, state: SandboxState, req: Request) -> Reply:
        """POST .../batches: ``{batchID, totalCount}``."""
        errors = validate_batch(req.body, self.max_batch_items)
        if errors:
            return self.invalid(errors)
        batch = state.batches.create(req.body, self.generation, req.brand)
        body = {"batchID": batch["batchID"], "totalCount": batch["totalCount"]}
        return Reply(self.batch_created_status, body)

    def find_batches(self, state: SandboxState, req: Request) -> list[dict[str, Any]]:
        """This generation's batches, filtered by the ``endpoint`` and ``status`` query."""
        return state.batches.list(
            self.generation, req.query.get("endpoint"), req.query.get("status")
        )

    def get_batch(self, state: SandboxState, req: Request) -> Reply:
        """GET .../batches/{id}."""
        batch = state.batches.get(req.params["id"])
        return Reply(200, batch) if batch else self.not_found("Batch")

    def get_batch_items(self, state: SandboxState, req: Request) -> Reply:
        """GET .../batches/{id}/items."""
        batch = state.batches.items(req.params["id"])
        return Reply(200, batch) if batch else self.not_found("Batch")
