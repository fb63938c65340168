"""Validation of contact and tag bodies, as Omnisend's specs describe it.

Each check returns a list of field errors ``{"field", "code", "message"}``; an empty list
means the body is valid.
"""

from __future__ import annotations

import functools
import re
from datetime import date, datetime
from typing import Any

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
PHONE_RE = re.compile(r"^\+[1-9]\d{6,14}$")
PROPERTY_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,128}$")
COUNTRY_CODE_RE = re.compile(r"^[A-Za-z]{2}$")
DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
STATUSES = ("subscribed", "nonSubscribed", "unsubscribed")
STRING_FIELDS = (
    "firstName", "lastName", "country", "state", "city", "address", "postalCode",
)  # fmt: skip
MAX_TAGS = 100
MAX_PROPERTIES = 200
MAX_PROPERTY_VALUE = 2048

FieldErrors = list[dict[str, str]]


def error(field: str, code: str, message: str) -> dict[str, str]:
    """One field error."""
    return {"field": field, "code": code, "message": message}


def parse_datetime(value: Any) -> datetime | None:
    """An RFC 3339 timestamp as an aware datetime, or None when it does not parse."""
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def validate_contact(body: Any, generation: str, *, partial: bool = False) -> FieldErrors:
    """Errors of a contact body; ``partial`` for PATCH (identifiers optional)."""
    if not isinstance(body, dict):
        return [error("body", "invalid_type", "Body must be a JSON object")]
    errors: FieldErrors = []
    identifiers = body.get("identifiers")
    if identifiers is None:
        if not partial:
            errors.append(error("identifiers", "required", "At least one identifier is required"))
    elif not isinstance(identifiers, list) or (not identifiers and not partial):
        errors.append(error("identifiers", "invalid_value", "Must be a non-empty array"))
    else:
        for index, identifier in enumerate(identifiers):
            found = _identifier_errors(identifier, generation)
            if found:
                errors.extend(_under(f"identifiers[{index}]", found))
    for name in STRING_FIELDS:
        if name in body and not isinstance(body[name], str):
            errors.append(error(name, "invalid_type", "Must be a string"))
    errors.extend(_profile_errors(body))
    errors.extend(_tags_errors(body.get("tags")) if "tags" in body else [])
    if "customProperties" in body:
        errors.extend(_properties_errors(body["customProperties"]))
    if "createdAt" in body and parse_datetime(body["createdAt"]) is None:
        errors.append(error("createdAt", "invalid_format", "Must be an RFC 3339 timestamp"))
    return errors


def _under(path: str, errors: FieldErrors) -> FieldErrors:
    """``errors`` of a nested value placed at ``path``.

    Nested checks name a field by its suffix to the value's path ("" for the value itself,
    ".id" for a member), so that full paths are built only for values that have errors.
    """
    for item in errors:
        item["field"] = path + item["field"]
    return errors


def _identifier_errors(identifier: Any, generation: str) -> FieldErrors:
    if not isinstance(identifier, dict):
        return [error("", "invalid_type", "Must be an object")]
    errors: FieldErrors = []
    kind, value = identifier.get("type"), identifier.get("id")
    if kind is None:
        errors.append(error(".type", "required", "Identifier type is required"))
    elif kind not in ("email", "phone"):
        errors.append(error(".type", "invalid_value", "Must be email or phone"))
    if value is None or value == "":
        errors.append(error(".id", "required", "Identifier id is required"))
    elif not isinstance(value, str):
        errors.append(error(".id", "invalid_type", "Must be a string"))
    elif kind == "email" and not EMAIL_RE.match(value):
        errors.append(error(".id", "invalid_format", "Must be a valid email address"))
    elif kind == "phone" and not PHONE_RE.match(value):
        errors.append(error(".id", "invalid_format", "Must be an E.164 phone number"))
    if "sendWelcomeMessage" in identifier and not isinstance(
        identifier["sendWelcomeMessage"], bool
    ):
        errors.append(error(".sendWelcomeMessage", "invalid_type", "Must be a boolean"))
    channels = identifier.get("channels")
    if channels is not None:
        found = _channels_errors(channels, generation)
        if found:
            errors.extend(_under(".channels", found))
    return errors


def _channels_errors(channels: Any, generation: str) -> FieldErrors:
    if not isinstance(channels, dict):
        return [error("", "invalid_type", "Must be an object")]
    errors: FieldErrors = []
    date_field = "statusChangedAt" if generation == "2026" else "statusDate"
    for name, channel in channels.items():
        found = _channel_errors(name, channel, generation, date_field)
        if found is not None:
            errors.extend(_under(f".{name}", [found]))
    return errors


def _channel_errors(
    name: str, channel: Any, generation: str, date_field: str
) -> dict[str, str] | None:
    """The first error of one channel (field: suffix to its path), or None."""
    if name not in ("email", "sms"):
        return error("", "invalid_value", "Channel must be email or sms")
    if not isinstance(channel, dict):
        return error("", "invalid_type", "Must be an object")
    status = channel.get("status")
    if status is None and generation == "2026":
        return error(".status", "required", "Status is required")
    if "status" in channel and status not in STATUSES:
        return error(".status", "invalid_value", "Unknown status")
    if date_field in channel and parse_datetime(channel[date_field]) is None:
        return error(f".{date_field}", "invalid_format", "Must be an RFC 3339 timestamp")
    return None


def _profile_errors(body: dict[str, Any]) -> FieldErrors:
    errors: FieldErrors = []
    if "gender" in body and body["gender"] not in ("m", "f"):
        errors.append(error("gender", "invalid_value", "Must be m or f"))
    if "birthdate" in body and not _is_date(body["birthdate"]):
        errors.append(error("birthdate", "invalid_format", "Must be YYYY-MM-DD"))
    code = body.get("countryCode")
    if "countryCode" in body and not (isinstance(code, str) and COUNTRY_CODE_RE.match(code)):
        errors.append(error("countryCode", "invalid_format", "Must be two letters (ISO 3166-1)"))
    return errors


def _is_date(value: Any) -> bool:
    if not isinstance(value, str) or not DATE_RE.fullmatch(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _tags_errors(tags: Any, field: str = "tags", minimum: int = 0) -> FieldErrors:
    if not isinstance(tags, list) or not all(isinstance(tag, str) and tag for tag in tags):
        return [error(field, "invalid_type", "Must be an array of non-empty strings")]
    if len(tags) > MAX_TAGS:
        return [error(field, "too_many", f"At most {MAX_TAGS} tags")]
    if len(tags) < minimum:
        return [error(field, "required", f"At least {minimum} tag")]
    return []


def _properties_errors(properties: Any) -> FieldErrors:
    if not isinstance(properties, dict):
        return [error("customProperties", "invalid_type", "Must be an object")]
    errors: FieldErrors = []
    if len(properties) > MAX_PROPERTIES:
        errors.append(error("customProperties", "too_many", f"At most {MAX_PROPERTIES}"))
    for name, value in properties.items():
        found = _property_problem(name, value)
        if found is not None:
            errors.append(error(f"customProperties.{name}", *found))
    return errors


@functools.lru_cache(maxsize=4096)
def _is_property_name(name: str) -> bool:
    """Whether ``name`` may name a custom property (cached: every contact repeats the names)."""
    return PROPERTY_NAME_RE.match(name) is not None


def _property_problem(name: str, value: Any) -> tuple[str, str] | None:
    """(code, message) of a custom property that is not valid, or None."""
    if not _is_property_name(name):
        return "invalid_format", "Name must match [A-Za-z0-9_]{1,128}"
    if isinstance(value, str):
        too_long = len(value) > MAX_PROPERTY_VALUE
        return ("too_long", f"At most {MAX_PROPERTY_VALUE} characters") if too_long else None
    if isinstance(value, list):
        if all(isinstance(item, str) for item in value):
            return None
        return "invalid_type", "Arrays must hold strings"
    if value is not None and not isinstance(value, (int, float, bool)):
        return "invalid_type", "Nested objects are not allowed"
    return None


def validate_tags_request(body: Any) -> FieldErrors:
    """Errors of a ``POST/DELETE /contacts/tags`` body."""
    if not isinstance(body, dict):
        return [error("body", "invalid_type", "Body must be a JSON object")]
    errors = _tags_errors(body.get("tags"), minimum=1)
    targets = 0
    for name in ("emails", "phones", "contactIDs"):
        if name not in body:
            continue
        values = body[name]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            errors.append(error(name, "invalid_type", "Must be an array of strings"))
        elif len(values) > 250:
            errors.append(error(name, "too_many", "At most 250 values"))
        else:
            targets += len(values)
    if "segmentID" in body:
        targets += 1
    if not targets:
        errors.append(error("emails", "required", "Give emails, phones, contactIDs or segmentID"))
    return errors
