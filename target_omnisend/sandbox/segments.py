"""Tag-based segment rules: validation, membership and rendering."""

from __future__ import annotations

from typing import Any

from target_omnisend.sandbox.store import channel_status
from target_omnisend.sandbox.validation import error

TEXT_PROPERTIES = ("firstName", "lastName", "gender", "country", "state", "city", "postalCode")


def validate(body: Any) -> list[dict[str, str]]:
    """Errors of a create/update segment body."""
    if not isinstance(body, dict):
        return [error("body", "invalid_type", "Body must be a JSON object")]
    errors = []
    name = body.get("name")
    if not isinstance(name, str) or not name or len(name) > 256:
        errors.append(error("name", "required", "A name of 1-256 characters is required"))
    groups = body.get("conditionGroups")
    if not isinstance(groups, list):
        errors.append(error("conditionGroups", "required", "Must be an array"))
        return errors
    for g, group in enumerate(groups):
        conditions = group.get("conditions") if isinstance(group, dict) else None
        if not isinstance(conditions, list):
            errors.append(error(f"conditionGroups[{g}].conditions", "required", "Array needed"))
            continue
        for c, condition in enumerate(conditions):
            filters = condition.get("filters") if isinstance(condition, dict) else None
            if not isinstance(filters, list) or not filters:
                where = f"conditionGroups[{g}].conditions[{c}].filters"
                errors.append(error(where, "required", "At least one filter"))
    return errors


def matches(segment: dict[str, Any], contact: dict[str, Any]) -> bool:
    """Whether a contact belongs: groups are OR-ed, conditions in a group AND-ed."""
    groups = segment.get("conditionGroups") or []
    return any(
        all(_condition(condition, contact) for condition in group.get("conditions", []))
        for group in groups
    )


def _condition(condition: dict[str, Any], contact: dict[str, Any]) -> bool:
    if condition.get("entity", "contact") != "contact":
        return False
    results = [_filter(f, contact) for f in condition.get("filters", [])]
    return any(results) if condition.get("junction") == "or" else all(results)


def _filter(rule: Any, contact: dict[str, Any]) -> bool:
    if not isinstance(rule, dict):
        return False
    prop, operator, value = rule.get("property"), rule.get("operator"), rule.get("value")
    values = value if isinstance(value, list) else [value]
    if prop == "tags":
        tags = set(contact.get("tags", []))
        if operator == "allOf":
            return set(values) <= tags
        if operator == "noneOf":
            return not tags & set(values)
        return bool(tags & set(values))
    if prop == "subscriptionStatus":
        return channel_status(contact) in values
    if prop in TEXT_PROPERTIES:
        return contact.get(prop) in values
    return False


def render(segment: dict[str, Any]) -> dict[str, Any]:
    """A segment in the ``GetSegmentResponse`` shape (nulls left out)."""
    return {k: v for k, v in segment.items() if v is not None}
