"""Tag-based segment rules: validation, membership and rendering."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from target_omnisend.sandbox.index import Mask, both, either, empty, without
from target_omnisend.sandbox.store import channel_status
from target_omnisend.sandbox.validation import error

if TYPE_CHECKING:
    from target_omnisend.sandbox.store import ContactStore

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


def mask(segment: dict[str, Any], store: ContactStore) -> Mask:
    """The positions that may match the segment, from the store's indexes (a superset).

    Tag and status filters are exact; filters on other properties are left to ``matches``
    (they keep every position), so a segment built on tags or statuses lists its members
    without reading anybody else.
    """
    groups = segment.get("conditionGroups") or []
    return either([_group_mask(group, store) for group in groups]) if groups else empty


def indexed(segment: dict[str, Any]) -> bool:
    """Whether :func:`mask` is exact: every filter is on tags or the subscription status."""
    return all(
        condition.get("entity", "contact") == "contact"
        and all(
            isinstance(f, dict)
            and f.get("property") in ("tags", "subscriptionStatus")
            and all(
                isinstance(v, str)
                for v in (f.get("value") if isinstance(f.get("value"), list) else [f.get("value")])
            )
            for f in condition.get("filters", [])
        )
        for group in segment.get("conditionGroups") or []
        for condition in group.get("conditions", [])
    )


def members(segment: dict[str, Any], store: ContactStore) -> list[str]:
    """The ids of the contacts the segment holds now."""
    found: list[str] = []
    after: int | None = None
    while True:
        page, after, more = store.page(
            mask(segment, store), lambda c: matches(segment, c), limit=1000, after=after,
            descending=False,
        )  # fmt: skip
        found.extend(contact["id"] for contact in page)
        if not more:
            return found


def _group_mask(group: dict[str, Any], store: ContactStore) -> Mask:
    result: Mask = store.everyone.window
    for condition in group.get("conditions", []):
        if condition.get("entity", "contact") != "contact":
            return empty
        masks = [_filter_mask(f, store) for f in condition.get("filters", [])]
        if condition.get("junction") == "or":
            if any(m is None for m in masks):
                continue
            result = both(result, either([m for m in masks if m is not None] or [empty]))
        else:
            for found in masks:
                if found is not None:
                    result = both(result, found)
    return result


def _filter_mask(rule: Any, store: ContactStore) -> Mask | None:
    """The rule's exact positions, or None when no index answers it."""
    if not isinstance(rule, dict):
        return empty
    prop, operator, value = rule.get("property"), rule.get("operator"), rule.get("value")
    values = value if isinstance(value, list) else [value]
    if prop == "tags":
        masks = [store.tag_mask(v) for v in values if isinstance(v, str)]
        if operator == "allOf":
            result: Mask = store.everyone.window
            for found in masks:
                result = both(result, found)
            return result
        any_of = either(masks) if masks else empty
        return without(store.everyone.window, any_of) if operator == "noneOf" else any_of
    if prop == "subscriptionStatus":
        masks = [store.status_mask(v) for v in values if isinstance(v, str)]
        return either(masks) if masks else empty
    if prop in TEXT_PROPERTIES:
        return None
    return empty


def render(segment: dict[str, Any]) -> dict[str, Any]:
    """A segment in the ``GetSegmentResponse`` shape (nulls left out)."""
    return {k: v for k, v in segment.items() if v is not None}
