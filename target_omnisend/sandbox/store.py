"""The sandbox's contacts and what their upserts did (welcome messages, ignored identifiers).

Contacts are kept in the 2026 shape; ``api_v5`` renders them in v5's shape.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from target_omnisend.sandbox.settings import SandboxSettings
from target_omnisend.sandbox.validation import parse_datetime

PROFILE_FIELDS = (
    "firstName", "lastName", "country", "countryCode", "state", "city", "address",
    "postalCode", "gender", "birthdate",
)  # fmt: skip
CHANNEL_OF = {"email": "email", "phone": "sms"}


_last_stamp: tuple[int, str] = (-1, "")  # (millisecond, its text): the one now_iso made last


def now_iso() -> str:
    """The current UTC time as RFC 3339 with milliseconds (``2026-03-15T10:11:12.345Z``).

    Every upsert takes a stamp, so the text is made once per millisecond and reused.
    """
    global _last_stamp
    millis = time.time_ns() // 1_000_000
    last = _last_stamp
    if last[0] == millis:
        return last[1]
    seconds, fraction = divmod(millis, 1000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:03d}Z"
    _last_stamp = (millis, text)
    return text


class NotFoundError(Exception):
    """No contact matches."""


class ConflictError(Exception):
    """An identifier belongs to another contact (PATCH)."""


class ContactStore:
    """Thread-safe contact storage with Omnisend's upsert rules."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.contacts: dict[str, dict[str, Any]] = {}
        self.owner: dict[tuple[str, str], str] = {}  # (type, id) -> contact id
        self.welcome_messages: list[dict[str, Any]] = []
        self.ignored_identifiers: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    def _new_id(self) -> str:
        return f"{next(self._ids):024x}"

    def upsert(
        self, body: dict[str, Any], generation: str, settings: SandboxSettings
    ) -> tuple[int, dict[str, Any] | None]:
        """Create or update the contact owning the body's email; (201|200, contact or None)."""
        stamp = now_iso()
        with self.lock:
            identifiers = body.get("identifiers") or []
            target_id = self._email_owner(identifiers)
            accepted = []
            for identifier in identifiers:
                key = (identifier["type"], identifier["id"])
                holder = self.owner.get(key)
                if holder is not None and holder != target_id:
                    self.ignored_identifiers.append(
                        {"type": key[0], "id": key[1], "ownerID": holder, "at": stamp}
                    )
                    continue
                accepted.append(identifier)
            if target_id is None and not accepted:
                return 200, None
            created = target_id is None
            if created:
                target_id = self._new_id()
                self.contacts[target_id] = {
                    "id": target_id, "identifiers": [], "tags": [], "customProperties": {},
                    "createdAt": stamp, "updatedAt": stamp,
                }  # fmt: skip
            contact = self.contacts[target_id]
            for identifier in accepted:
                self._apply_identifier(contact, identifier, generation, settings, stamp)
            self._apply_fields(contact, body, settings.tags_on_upsert)
            contact["updatedAt"] = stamp
            return (201 if created else 200), contact

    def _email_owner(self, identifiers: list[dict[str, Any]]) -> str | None:
        """The id of the contact owning the first known email among ``identifiers``."""
        for identifier in identifiers:
            if identifier.get("type") == "email":
                holder = self.owner.get(("email", identifier["id"]))
                if holder is not None:
                    return holder
        return None

    def patch(self, contact_id: str, body: dict[str, Any], generation: str) -> dict[str, Any]:
        """Change only the fields sent; identifiers owned by others raise ConflictError."""
        stamp = now_iso()
        with self.lock:
            contact = self.contacts.get(contact_id)
            if contact is None:
                raise NotFoundError(contact_id)
            for identifier in body.get("identifiers") or []:
                holder = self.owner.get((identifier["type"], identifier["id"]))
                if holder is not None and holder != contact_id:
                    raise ConflictError(identifier["id"])
            settings = SandboxSettings(older_status_date="override")
            for identifier in body.get("identifiers") or []:
                self._apply_identifier(contact, identifier, generation, settings, stamp)
            self._apply_fields(contact, body, "replace")
            contact["updatedAt"] = stamp
            return contact

    def _apply_identifier(
        self,
        contact: dict[str, Any],
        identifier: dict[str, Any],
        generation: str,
        settings: SandboxSettings,
        stamp: str,
    ) -> None:
        kind, value = identifier["type"], identifier["id"]
        stored = _find_identifier(contact, kind, value)
        is_new = stored is None
        if stored is None:
            stored = {"type": kind, "id": value, "channels": {}}
            contact["identifiers"].append(stored)
            self.owner[(kind, value)] = contact["id"]
        stored_channels = stored["channels"]
        date_field = "statusChangedAt" if generation == "2026" else "statusDate"
        channels = identifier.get("channels") or {}
        default_channel = CHANNEL_OF[kind]
        if default_channel not in channels and default_channel not in stored_channels:
            missing = "nonSubscribed" if generation == "2026" else settings.v5_missing_status
            channels = {**channels, default_channel: {"status": missing}}
        became_subscribed = False
        for name, channel in channels.items():
            status = channel.get("status")
            if status is None:
                if name in stored_channels:
                    continue
                status = "nonSubscribed" if generation == "2026" else settings.v5_missing_status
            when = channel.get(date_field) or stamp
            previous = stored_channels.get(name)
            if previous is not None and settings.older_status_date == "ignore":
                old, new = parse_datetime(previous["statusChangedAt"]), parse_datetime(when)
                if old and new and new < old:
                    continue
            if status == "subscribed" and (previous is None or previous["status"] != "subscribed"):
                became_subscribed = True
            stored_channels[name] = {"status": status, "statusChangedAt": when}
        welcome = identifier.get("sendWelcomeMessage", generation == "2026")
        if welcome and became_subscribed:
            self.welcome_messages.append(
                {"contactID": contact["id"], "type": kind, "id": value, "at": stamp,
                 "newIdentifier": is_new}
            )  # fmt: skip
        if identifier.get("consent"):
            stored["consent"] = identifier["consent"]

    @staticmethod
    def _apply_fields(contact: dict[str, Any], body: dict[str, Any], tags_mode: str) -> None:
        for name in PROFILE_FIELDS:
            if name in body:
                contact[name] = body[name]
        if "tags" in body:
            if tags_mode == "merge":
                contact["tags"] = list(dict.fromkeys([*contact["tags"], *body["tags"]]))
            else:
                contact["tags"] = list(dict.fromkeys(body["tags"]))
        if body.get("customProperties"):
            contact["customProperties"].update(body["customProperties"])
        if "createdAt" in body:
            contact["customProperties"]["externalCreated"] = body["createdAt"]

    def find(self, kind: str, value: str) -> dict[str, Any] | None:
        """The contact owning an identifier."""
        with self.lock:
            contact_id = self.owner.get((kind, value))
            return self.contacts.get(contact_id) if contact_id else None

    def change_tags(self, contact: dict[str, Any], tags: list[str], add: bool) -> None:
        """Add or remove tags on one contact."""
        with self.lock:
            if add:
                contact["tags"] = list(dict.fromkeys([*contact["tags"], *tags]))
            else:
                contact["tags"] = [tag for tag in contact["tags"] if tag not in tags]
            contact["updatedAt"] = now_iso()

    def snapshot(self) -> list[dict[str, Any]]:
        """A deep-enough copy of all contacts, oldest first."""
        import copy

        with self.lock:
            return copy.deepcopy(list(self.contacts.values()))


def _find_identifier(contact: dict[str, Any], kind: str, value: str) -> dict[str, Any] | None:
    """The contact's stored identifier of this type and id, or None."""
    for stored in contact["identifiers"]:
        if stored["type"] == kind and stored["id"] == value:
            return stored
    return None


def channel_status(contact: dict[str, Any]) -> str | None:
    """The contact's email channel status (or SMS when it has no email)."""
    for channel in ("email", "sms"):
        for identifier in contact["identifiers"]:
            if channel in identifier["channels"]:
                return identifier["channels"][channel]["status"]
    return None
