"""The sandbox's contacts and what their upserts did (welcome messages, ignored identifiers).

Contacts are kept in the 2026 shape; ``api_v5`` renders them in v5's shape.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from target_omnisend.sandbox.compact import decode as _decode
from target_omnisend.sandbox.compact import encode as _encode
from target_omnisend.sandbox.index import WINDOW_BITS, Bitmap, Mask, both, count, empty, positions
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
    """Thread-safe contact storage with Omnisend's upsert rules, indexed for listings.

    Each contact is kept as one MessagePack value (about a quarter of the memory of the dicts
    it decodes to) and decoded when read: callers get a private copy, and change a contact only
    through the store's methods. Bitmaps index every contact (``all``), its tags and its channel
    status by position (see ``sandbox.index``); email and phone owners are plain dicts.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._rows: dict[str, bytes] = {}  # contact id -> its MessagePack encoding
        self._owners: dict[str, dict[str, str]] = {"email": {}, "phone": {}}
        self.welcome_messages: list[dict[str, Any]] = []
        self.ignored_identifiers: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self.last_position = 0  # positions are creation numbers: 1 .. last_position
        self.everyone = Bitmap()
        self._tags: dict[str, Bitmap] = {}
        self._statuses: dict[str, Bitmap] = {}

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def contacts(self) -> ContactsView:
        """Every contact by id, decoded when read (a read-only view)."""
        return ContactsView(self)

    def _owner(self, kind: str, value: str) -> str | None:
        owners = self._owners.get(kind)
        return None if owners is None else owners.get(value)

    def _load(self, contact_id: str) -> dict[str, Any] | None:
        row = self._rows.get(contact_id)
        return None if row is None else _decode(row)

    def _save(self, contact: dict[str, Any], old_tags: list[str], old_status: str | None) -> None:
        """Store a changed contact and move its index bits."""
        contact_id = contact["id"]
        self._rows[contact_id] = _encode(contact)
        position = int(contact_id, 16)
        tags = contact["tags"]
        if tags != old_tags:
            for tag in old_tags:
                if tag not in tags:
                    self._tags[tag].discard(position)
            for tag in tags:
                if tag not in old_tags:
                    bitmap = self._tags.get(tag)
                    if bitmap is None:
                        bitmap = self._tags[tag] = Bitmap()
                    bitmap.add(position)
        status = channel_status(contact)
        if status != old_status:
            if old_status is not None:
                self._statuses[old_status].discard(position)
            if status is not None:
                bitmap = self._statuses.get(status)
                if bitmap is None:
                    bitmap = self._statuses[status] = Bitmap()
                bitmap.add(position)

    def _new_contact(self, stamp: str) -> dict[str, Any]:
        position = next(self._ids)
        self.last_position = position
        self.everyone.add(position)
        contact_id = f"{position:024x}"
        return {
            "id": contact_id, "identifiers": [], "tags": [], "customProperties": {},
            "createdAt": stamp, "updatedAt": stamp,
        }  # fmt: skip

    def upsert(
        self, body: dict[str, Any], generation: str, settings: SandboxSettings
    ) -> tuple[int, dict[str, Any] | None]:
        """Create or update the contact owning the body's email; (201|200, contact or None)."""
        with self.lock:
            stamp = now_iso()  # under the lock: creation order is createdAt order
            identifiers = body.get("identifiers") or []
            target_id = self._email_owner(identifiers)
            accepted = []
            for identifier in identifiers:
                kind, value = identifier["type"], identifier["id"]
                holder = self._owner(kind, value)
                if holder is not None and holder != target_id:
                    self.ignored_identifiers.append(
                        {"type": kind, "id": value, "ownerID": holder, "at": stamp}
                    )
                    continue
                accepted.append(identifier)
            if target_id is None and not accepted:
                return 200, None
            created = target_id is None
            if target_id is None:
                contact, old_tags, old_status = self._new_contact(stamp), [], None
            else:
                contact = _decode(self._rows[target_id])
                old_tags, old_status = list(contact["tags"]), channel_status(contact)
            for identifier in accepted:
                self._apply_identifier(contact, identifier, generation, settings, stamp)
            self._apply_fields(contact, body, settings.tags_on_upsert)
            contact["updatedAt"] = stamp
            self._save(contact, old_tags, old_status)
            return (201 if created else 200), contact

    def _email_owner(self, identifiers: list[dict[str, Any]]) -> str | None:
        """The id of the contact owning the first known email among ``identifiers``."""
        emails = self._owners["email"]
        for identifier in identifiers:
            if identifier.get("type") == "email":
                holder = emails.get(identifier["id"])
                if holder is not None:
                    return holder
        return None

    def patch(self, contact_id: str, body: dict[str, Any], generation: str) -> dict[str, Any]:
        """Change only the fields sent; identifiers owned by others raise ConflictError."""
        with self.lock:
            stamp = now_iso()
            contact = self._load(contact_id)
            if contact is None:
                raise NotFoundError(contact_id)
            for identifier in body.get("identifiers") or []:
                holder = self._owner(identifier["type"], identifier["id"])
                if holder is not None and holder != contact_id:
                    raise ConflictError(identifier["id"])
            old_tags, old_status = list(contact["tags"]), channel_status(contact)
            settings = SandboxSettings(older_status_date="override")
            for identifier in body.get("identifiers") or []:
                self._apply_identifier(contact, identifier, generation, settings, stamp)
            self._apply_fields(contact, body, "replace")
            contact["updatedAt"] = stamp
            self._save(contact, old_tags, old_status)
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
            self._owners.setdefault(kind, {})[value] = contact["id"]
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
        """The contact owning an identifier (a copy)."""
        with self.lock:
            contact_id = self._owner(kind, value)
            return None if contact_id is None else self._load(contact_id)

    def owner_id(self, kind: str, value: str) -> str | None:
        """The id of the contact owning an identifier."""
        with self.lock:
            return self._owner(kind, value)

    def get(self, contact_id: str) -> dict[str, Any] | None:
        """The contact with this id (a copy), or None."""
        with self.lock:
            return self._load(contact_id)

    def change_tags(self, contact_id: str, tags: list[str], add: bool) -> None:
        """Add or remove tags on one contact."""
        with self.lock:
            contact = self._load(contact_id)
            if contact is None:
                return
            old_tags, old_status = list(contact["tags"]), channel_status(contact)
            if add:
                contact["tags"] = list(dict.fromkeys([*contact["tags"], *tags]))
            else:
                contact["tags"] = [tag for tag in contact["tags"] if tag not in tags]
            contact["updatedAt"] = now_iso()
            self._save(contact, old_tags, old_status)

    def snapshot(self) -> list[dict[str, Any]]:
        """A copy of all contacts, oldest first."""
        with self.lock:
            return [_decode(row) for row in self._rows.values()]

    # -- listings ------------------------------------------------------------------------------

    def tag_mask(self, tag: str) -> Mask:
        """The positions of the contacts carrying ``tag``."""
        bitmap = self._tags.get(tag)
        return empty if bitmap is None else bitmap.window

    def status_mask(self, status: str) -> Mask:
        """The positions of the contacts whose channel status (``channel_status``) is ``status``."""
        bitmap = self._statuses.get(status)
        return empty if bitmap is None else bitmap.window

    def identifier_mask(self, kind: str, value: str) -> Mask:
        """The position of the contact owning an identifier (none when nobody does)."""
        contact_id = self._owner(kind, value)
        if contact_id is None:
            return empty
        position = int(contact_id, 16)
        number, bit = divmod(position, WINDOW_BITS)
        return lambda window: (1 << bit) if window == number else 0

    def page(
        self,
        mask: Mask,
        keep: Callable[[dict[str, Any]], bool] | None,
        *,
        limit: int,
        after: int | None = None,
        descending: bool = True,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int, bool]:
        """Up to ``limit`` contacts of ``mask`` that ``keep`` accepts, in creation order.

        Starts past position ``after`` (a cursor), skipping ``offset`` accepted contacts first
        (without decoding them when ``keep`` is None: every contact of the mask is accepted).
        Returns (contacts, the last one's position, whether more follow).
        """
        found: list[dict[str, Any]] = []
        last = after or 0
        with self.lock:
            for position in positions(mask, self.last_position, after=after, descending=descending):
                row = self._rows.get(f"{position:024x}")
                if row is None:
                    continue
                if keep is None and offset:
                    offset -= 1
                    continue
                contact = _decode(row)
                if keep is not None and not keep(contact):
                    continue
                if offset:
                    offset -= 1
                    continue
                if len(found) == limit:
                    return found, last, True
                found.append(contact)
                last = position
        return found, last, False

    def count(self, mask: Mask, keep: Callable[[dict[str, Any]], bool] | None = None) -> int:
        """How many contacts of ``mask`` ``keep`` accepts (all of them when ``keep`` is None)."""
        with self.lock:
            if keep is None:
                return count(both(mask, self.everyone.window), self.last_position)
            return sum(
                keep(_decode(self._rows[f"{position:024x}"]))
                for position in positions(mask, self.last_position, after=None, descending=False)
            )


class ContactsView(Mapping[str, dict[str, Any]]):
    """The store's contacts by id, each decoded when read (changing one changes nothing)."""

    def __init__(self, store: ContactStore) -> None:
        self._store = store

    def __getitem__(self, contact_id: str) -> dict[str, Any]:
        contact = self._store.get(contact_id)
        if contact is None:
            raise KeyError(contact_id)
        return contact

    def __iter__(self) -> Iterator[str]:
        with self._store.lock:
            return iter(list(self._store._rows))

    def __len__(self) -> int:
        return len(self._store)


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
